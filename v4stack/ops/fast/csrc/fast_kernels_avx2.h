/* The AVX2 + FMA blocks of csrc/fast_kernels.c (included there after its scalar conversions; KERNELS_AVX2 is set
 * there for CPUs with AVX2 and FMA but no AVX-512: AMD Zen, x86-64-v3). Each gives the values of the plain C loop it
 * stands for, bit for bit: the same IEEE operations on the same operands in the same order per output, only
 * several outputs (lanes) at once; where a fused multiply-add appears, its product is exact, so it rounds like the
 * scalar multiply then add. tests/test_kernel_builds.py compares the builds. */
#ifndef FAST_KERNELS_AVX2_H
#define FAST_KERNELS_AVX2_H
#if defined(KERNELS_AVX2)

#define F32_LANES 8  /* fp32 values per AVX2 register */
#define F64_LANES 4  /* doubles per AVX2 register */
#define DOT_HEADS 4  /* heads scored per read of a key row: 2 vectors of 4 doubles each, 8 of the 16 registers */

static inline __m256 bf16x8_to_f32(const uint16_t *p) { /* 8 bf16 -> 8 fp32 (exact: the bits move up 16) */
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

/* round_bf16_f32 (fast_kernels.c) lane by lane: f32_to_bf16's integer rounding, the bits back in place */
static inline __m256 round_bf16x8(__m256 f) {
    const __m256i u = _mm256_castps_si256(f);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), odd);
    return _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32((int)0xFFFF0000u)));
}

/* f32_to_bf16's integer rounding (nearest even) of 8 fp32, the bf16 bits in the low half of each 32-bit lane */
static inline __m256i bf16x8_bits(__m256 f) {
    const __m256i u = _mm256_castps_si256(f);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    return _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), odd), 16);
}

static inline void store_bf16_bits(uint16_t *p, __m256i r) { /* the 8 low halves to p */
    _mm_storeu_si128((__m128i *)p, _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
}

static inline void store_bf16x8(uint16_t *p, __m256 f) { store_bf16_bits(p, bf16x8_bits(f)); } /* f32_to_bf16 x 8 */

/* 8 fp32 -> 8 bf16 at p: f32_to_bf16 lane by lane, a NaN as the quiet 0x7FC0 (torch's rule, as the scalar callers
 * write it) */
static inline void store_bf16x8_nan(uint16_t *p, __m256 f) {
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
    store_bf16_bits(p, _mm256_blendv_epi8(bf16x8_bits(f), _mm256_set1_epi32(0x7FC0), nan));
}

/* load_any (fast_kernels.c) of elements i .. i + 7 */
static inline __m256 load_any8(const void *p, int64_t i, int is_bf16) {
    return is_bf16 ? bf16x8_to_f32((const uint16_t *)p + i) : _mm256_loadu_ps((const float *)p + i);
}

/* act_quant's per-value step on 8 lanes: round_e4m3(clamp(x / s, +-448)) * s with the scalar operations lane by
 * lane: the division, the clamp's ordered compares, both of round_e4m3's branches (the subnormal one's two rounding
 * adds, the normal one's integer rounding of the bits) picked by its own test (false for NaN, as there), copysign
 * as bit selection. */
static inline __m256 fp8_lanes(__m256 x, __m256 s) {
    const __m256 top = _mm256_set1_ps(E4M3_MAX), bottom = _mm256_set1_ps(-E4M3_MAX);
    const __m256 sign = _mm256_set1_ps(-0.0f), shift = _mm256_set1_ps(E4M3_SUBNORMAL_SHIFT);
    __m256 v = _mm256_div_ps(x, s);
    v = _mm256_blendv_ps(v, top, _mm256_cmp_ps(v, top, _CMP_GT_OQ));
    v = _mm256_blendv_ps(v, bottom, _mm256_cmp_ps(v, bottom, _CMP_LT_OQ));
    const __m256 a = _mm256_andnot_ps(sign, v);
    const __m256 sub = _mm256_sub_ps(_mm256_add_ps(a, shift), shift);
    __m256i u = _mm256_castps_si256(a);
    u = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32((1 << (E4M3_DROP_BITS - 1)) - 1),
                                             _mm256_and_si256(_mm256_srli_epi32(u, E4M3_DROP_BITS),
                                                              _mm256_set1_epi32(1))));
    const __m256 normal = _mm256_castsi256_ps(_mm256_and_si256(u, _mm256_set1_epi32(~((1 << E4M3_DROP_BITS) - 1))));
    __m256 r = _mm256_blendv_ps(normal, sub, _mm256_cmp_ps(a, _mm256_set1_ps(E4M3_MIN_NORMAL), _CMP_LT_OQ));
    r = _mm256_or_ps(_mm256_andnot_ps(sign, r), _mm256_and_ps(sign, v));
    return _mm256_mul_ps(r, s);
}

/* fp4_quant's per-value step on 8 lanes: out = round_e2m1(clamp(x / s, +-6)) * s with the scalar code's operations
 * lane by lane (an IEEE division, compares that are false for NaN as its ternaries are, nearbyint in the current
 * rounding mode, copysign as bit selection): the same fp32 values, NaN included. */
static inline __m256 fp4_lanes(__m256 x, __m256 s) {
    const __m256 top = _mm256_set1_ps(E2M1_MAX), bottom = _mm256_set1_ps(-E2M1_MAX);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v = _mm256_div_ps(x, s);
    v = _mm256_blendv_ps(v, top, _mm256_cmp_ps(v, top, _CMP_GT_OQ));
    v = _mm256_blendv_ps(v, bottom, _mm256_cmp_ps(v, bottom, _CMP_LT_OQ));
    __m256 mag = _mm256_andnot_ps(sign, v);
    mag = _mm256_blendv_ps(mag, top, _mm256_cmp_ps(mag, top, _CMP_GT_OQ));
    __m256 step = _mm256_blendv_ps(_mm256_set1_ps(2.0f), _mm256_set1_ps(1.0f),
                                   _mm256_cmp_ps(mag, _mm256_set1_ps(4.0f), _CMP_LT_OQ));
    step = _mm256_blendv_ps(step, _mm256_set1_ps(0.5f), _mm256_cmp_ps(mag, _mm256_set1_ps(2.0f), _CMP_LT_OQ));
    __m256 r = _mm256_mul_ps(_mm256_round_ps(_mm256_div_ps(mag, step), _MM_FROUND_CUR_DIRECTION | _MM_FROUND_NO_EXC),
                             step);
    r = _mm256_blendv_ps(r, top, _mm256_cmp_ps(r, top, _CMP_GT_OQ));
    r = _mm256_or_ps(_mm256_andnot_ps(sign, r), _mm256_and_ps(sign, v));
    return _mm256_mul_ps(r, s);
}

/* The butterflies of one row v [n] (n >= 4, a power of two) with the scalar loop's operations: stages 1 and 2
 * inside each 4-double vector (the pairs they combine lie in it; a + b and a - b of the same operands, in the same
 * operand order, picked per lane), the later stages vector against vector. */
static inline void hadamard_avx2(double *v, int64_t n) {
    for (int64_t i = 0; i < n; i += F64_LANES) {
        __m256d x = _mm256_loadu_pd(v + i);
        __m256d a = _mm256_movedup_pd(x), b = _mm256_permute_pd(x, 0xF); /* (x0 x0 x2 x2), (x1 x1 x3 x3) */
        x = _mm256_blend_pd(_mm256_add_pd(a, b), _mm256_sub_pd(a, b), 0xA); /* h = 1: differences in lanes 1, 3 */
        a = _mm256_permute4x64_pd(x, 0x44);                                  /* (x0 x1 x0 x1) */
        b = _mm256_permute4x64_pd(x, 0xEE);                                  /* (x2 x3 x2 x3) */
        _mm256_storeu_pd(v + i, _mm256_blend_pd(_mm256_add_pd(a, b), _mm256_sub_pd(a, b), 0xC)); /* h = 2 */
    }
    for (int64_t h = F64_LANES; h < n; h <<= 1)
        for (int64_t i = 0; i < n; i += 2 * h)
            for (int64_t j = i; j < i + h; j += F64_LANES) {
                const __m256d a = _mm256_loadu_pd(v + j), b = _mm256_loadu_pd(v + j + h);
                _mm256_storeu_pd(v + j, _mm256_add_pd(a, b));
                _mm256_storeu_pd(v + j + h, _mm256_sub_pd(a, b));
            }
}

#define CACHE_LINE 64 /* bytes */

/* The lines of a bf16 row [d] into L1 ahead of its use: key rows sit at slots of a pool, an order the hardware
 * prefetcher cannot guess. */
static inline void prefetch_row(const uint16_t *row, int64_t d) {
    for (int64_t o = 0; o < d * (int64_t)sizeof(uint16_t); o += CACHE_LINE) _mm_prefetch((const char *)row + o, _MM_HINT_T0);
}

/* r[l] <- (r[0][l], r[1][l], r[2][l], r[3][l]): the 4 x 4 transpose of 4 vectors of doubles (moves only) */
static inline void transpose4d(__m256d r[F64_LANES]) {
    const __m256d a = _mm256_unpacklo_pd(r[0], r[1]), b = _mm256_unpackhi_pd(r[0], r[1]);
    const __m256d c = _mm256_unpacklo_pd(r[2], r[3]), e = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(a, c, 0x20);
    r[1] = _mm256_permute2f128_pd(b, e, 0x20);
    r[2] = _mm256_permute2f128_pd(a, c, 0x31);
    r[3] = _mm256_permute2f128_pd(b, e, 0x31);
}

/* lane h = exact_dot's final sum (0.0 + part[0] + ... + part[7], in that order) of head h, for F64_LANES heads
 * whose parts are acc[h][0] = part[0..3], acc[h][1] = part[4..7]: the same adds, four heads per vector add */
static inline __m256d lane_sums_heads(__m256d acc[][2]) {
    __m256d lo[F64_LANES], hi[F64_LANES];
    for (int h = 0; h < F64_LANES; h++) {
        lo[h] = acc[h][0];
        hi[h] = acc[h][1];
    }
    transpose4d(lo); /* lo[l]: part[l] of every head */
    transpose4d(hi); /* hi[l]: part[4 + l] */
    __m256d dot = _mm256_setzero_pd();
    for (int l = 0; l < F64_LANES; l++) dot = _mm256_add_pd(dot, lo[l]);
    for (int l = 0; l < F64_LANES; l++) dot = _mm256_add_pd(dot, hi[l]);
    return dot;
}

/* dots[h] = exact_dot(qd + h * d, k) for DOT_HEADS heads (qd [DOT_HEADS, d]) and one bf16 key row k [d], any d,
 * each exactly exact_dot's double: the vectors hold its lanes part[0..3], part[4..7] (exact products, so a fused
 * multiply-add rounds like its multiply then add), the tail goes to part[0] and the lanes add in order, as there. */
static inline void exact_dot_heads(const double *qd, const uint16_t *kr, int64_t d, double *dots) {
    __m256d acc[DOT_HEADS][2];
    for (int h = 0; h < DOT_HEADS; h++) acc[h][0] = acc[h][1] = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + DOT_LANES <= d; i += DOT_LANES) {
        __m256 k = bf16x8_to_f32(kr + i);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(k)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(k, 1));
        for (int h = 0; h < DOT_HEADS; h++) {
            acc[h][0] = _mm256_fmadd_pd(_mm256_loadu_pd(qd + h * d + i), lo, acc[h][0]);
            acc[h][1] = _mm256_fmadd_pd(_mm256_loadu_pd(qd + h * d + i + 4), hi, acc[h][1]);
        }
    }
    if (i == d && DOT_HEADS == F64_LANES) { /* no tail: the in-order lane sums of the heads side by side */
        _mm256_storeu_pd(dots, lane_sums_heads(acc));
        return;
    }
    for (int h = 0; h < DOT_HEADS; h++) {
        double part[DOT_LANES];
        _mm256_storeu_pd(part, acc[h][0]);
        _mm256_storeu_pd(part + 4, acc[h][1]);
        for (int64_t t = i; t < d; t++) part[0] += qd[h * d + t] * (double)bf16_to_f32(kr[t]);
        double dot = 0.0;
        for (int l = 0; l < DOT_LANES; l++) dot += part[l];
        dots[h] = dot;
    }
}

#endif
#endif
