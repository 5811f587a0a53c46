/* The AVX2 (+FMA +F16C) kernels of lowbit_gemm.c, for CPUs without AVX-512 (AMD Zen 2/3, older Intel); included
 * by lowbit_gemm.c (after its constants and scalar helpers) when the build targets AVX2, and by AVX-512 builds for
 * the one-row FP8 / FP4 direct kernels, which are faster than theirs (lowbit_gemm).
 *
 * Bit-identical to the AVX-512 build: every output is the same 16-lane fp32 FMA chain (lane l accumulates
 * fmaf(x[k], w[k], acc) over the columns k = k0 + l in increasing k, a K tail's missing lanes taking x = w = +0
 * and still doing the FMA), held here as two 8-lane halves (lane16: lanes 0-7 in lo, 8-15 in hi), then reduced in
 * the tree of GCC's _mm512_reduce_add_ps (lane16_sum). The dequantised weights are the same exact values, made by
 * the same bit placements and products. Only the schedule differs: AVX2 has 16 ymm registers (AVX-512: 32 zmm of
 * twice the width), so a tile holds at most AVX2_ACCUMULATORS lane16 accumulators (2 ymm each), and the callers'
 * tiles are split into such blocks (an output's chain does not depend on the tiling). */

/* lane16 accumulators per block: 4 x 2 ymm = 8 of the 16 registers, leaving the x halves, the weight being
 * converted and its constants unspilled. 1 x row: 4 weight rows (decode's single row: 4 independent weight
 * streams, 8 FMA chains); more rows: fewer weight rows per block (AVX2_SPLIT). */
#define AVX2_ACCUMULATORS 4
#define AVX2_XCHUNK 4 /* x rows per pass over a weight group (their block takes AVX2_ACCUMULATORS / rows weight rows) */

typedef struct { __m256 lo, hi; } lane16; /* one 16-lane vector: lanes 0-7, 8-15 */

/* -1 then 0: 16 - n and 24 - n index the masks of a tail's first n lanes (lo, hi) */
static const int32_t TAIL_LANES[32] = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                       0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0};

typedef struct { __m256i lo, hi; } mask16;

static inline mask16 tail_mask(int64_t n) { /* lanes [0, n) set, 1 <= n <= 16 */
    mask16 m = {_mm256_loadu_si256((const __m256i *)(TAIL_LANES + 16 - n)),
                _mm256_loadu_si256((const __m256i *)(TAIL_LANES + 24 - n))};
    return m;
}

static inline lane16 lane16_zero(void) {
    lane16 a = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    return a;
}

static inline lane16 lane16_load(const float *p) {
    lane16 a = {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)};
    return a;
}

static inline lane16 lane16_load_tail(const float *p, mask16 m) { /* masked lanes +0, never read */
    lane16 a = {_mm256_maskload_ps(p, m.lo), _mm256_maskload_ps(p + 8, m.hi)};
    return a;
}

static inline lane16 lane16_fma(lane16 x, lane16 w, lane16 acc) {
    acc.lo = _mm256_fmadd_ps(x.lo, w.lo, acc.lo);
    acc.hi = _mm256_fmadd_ps(x.hi, w.hi, acc.hi);
    return acc;
}

static inline lane16 lane16_mul(lane16 a, __m256 s) {
    a.lo = _mm256_mul_ps(a.lo, s);
    a.hi = _mm256_mul_ps(a.hi, s);
    return a;
}

static inline void lane16_store(float *p, lane16 a) {
    _mm256_storeu_ps(p, a.lo);
    _mm256_storeu_ps(p + 8, a.hi);
}

/* GCC 12's _mm512_reduce_add_ps on the 16 lanes a[0..15]: t[i] = a[i + 8] + a[i], u[j] = t[j + 4] + t[j],
 * (u[0] + u[2]) + (u[1] + u[3]). */
static inline float lane16_sum(lane16 a) {
    __m256 t = _mm256_add_ps(a.hi, a.lo);
    __m128 u = _mm_add_ps(_mm256_extractf128_ps(t, 1), _mm256_castps256_ps128(t));
    __m128 v = _mm_add_ps(u, _mm_shuffle_ps(u, u, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(v) + _mm_cvtss_f32(_mm_shuffle_ps(v, v, _MM_SHUFFLE(1, 1, 1, 1)));
}

/* 16 bf16 bits -> fp32 (exact) */
static inline lane16 bf16x16_avx2(const uint16_t *p) {
    __m256i v = _mm256_loadu_si256((const __m256i *)p);
    lane16 a = {_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(v)), 16)),
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1)), 16))};
    return a;
}

/* The direct kernels' cheaper conversions (the decode step is bound by them, not by memory, on AVX2):
 *
 * FP8, columns in order: the byte sign-extended to 32 bits, << 20, & 0x87F00000 puts the sign at bit 31 and
 * exponent|mantissa at bits 20..26: the fp32 whose value is the e4m3 value x 2^-120 (exact, e4m3 subnormals
 * included: fp32 subnormals m x 2^-129). x s120 = 2^120 x the block scale then rounds once to value x scale, as
 * the AVX-512 kernel's single product, whenever s120 is exact (e <= FP8_FOLD120_MAX_EXPONENT); else
 * (f x 2^120) x s, the first product exact. */
#define FP8_FOLD120_MAX_EXPONENT 134 /* 2^120 x 2^(e - 127) <= 2^127 */
#define FP8_UNSCALE 0x1p120f         /* 2^120: the placed byte's value back to the e4m3 value */

static inline __m256 fp8x8_direct(const uint8_t *p, __m256 s) {
    __m256i d = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p));
    __m256i f = _mm256_and_si256(_mm256_slli_epi32(d, 20), _mm256_set1_epi32((int)0x87F00000u));
    return _mm256_mul_ps(_mm256_castsi256_ps(f), s);
}

static inline lane16 fp8x16_direct(const uint8_t *p, __m256 s) {
    lane16 a = {fp8x8_direct(p, s), fp8x8_direct(p + 8, s)};
    return a;
}

/* FP4, the even/odd layout of the bf16 head (x permuted by x_evenodd): byte p of 8 -> dword p; its low nibble
 * (column 2p) in lo, its high nibble (2p + 1) in hi. The value comes from a permute of a scaled table (the index's
 * low 3 bits) and the sign (nibble bit 3) from nibble << 28 xor-ed in. fp4_scaled_lut(s), made once per scale
 * block and weight row, holds (E2M1[i] x s) ^ (i << 28), i < 8, so that xor also clears bits 28..30 again: the
 * lane is E2M1[i] x s, or for nibble i + 8 its negation, which is E2M1[i + 8] x s (a product's rounding is
 * symmetric in sign; -0 x s = -0). The same single product per weight as a per-lane multiply, 2 ops fewer per 16
 * weights. */
static inline __m256 fp4_lookup(__m256i nib, __m256 slut) { /* nib's low 4 bits: one e2m1 code */
    return _mm256_xor_ps(_mm256_permutevar8x32_ps(slut, nib), _mm256_castsi256_ps(_mm256_slli_epi32(nib, 28)));
}

static inline lane16 fp4x16_evenodd(const uint8_t *p, __m256 slut) {
    __m256i d = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    lane16 a = {fp4_lookup(d, slut), fp4_lookup(_mm256_srli_epi32(d, 4), slut)};
    return a;
}

/* (E2M1[i] x s) ^ (i << 28), i < 8, as fp32 bit patterns: the table fp4_lookup permutes, for the scale s */
static inline __m256 fp4_scaled_lut(__m256 s) {
    const __m256i tag = _mm256_setr_epi32(0, 1 << 28, 2 << 28, 3 << 28, 4 << 28, 5 << 28, 6 << 28, 7 << 28);
    return _mm256_xor_ps(_mm256_mul_ps(_mm256_loadu_ps(E2M1), s), _mm256_castsi256_ps(tag));
}

/* fp4_scaled_lut of every ue8m0 byte e (its scale ue8m0(e)), made once when the library loads: the direct kernel
 * reads a block's table (one load) instead of making it (scale bits, broadcast, multiply, xor per 32 weights and row),
 * the same multiply's bits (dequant_row reads it too). Measured (1 thread CPU, A/B alternating, no other change):
 * FP4 256 x 512 at 1 / 2 / 4 rows 15.1 / 19.7 / 28.1 -> 13.7 / 17.7 / 24.6 us, 512 x 256 at 1 row 15.7 -> 14.4. */
#define UE8M0_CODES 256
static float FP4_LUTS[UE8M0_CODES][8] __attribute__((aligned(32)));

static void __attribute__((constructor)) fp4_luts_init(void) {
    for (int e = 0; e < UE8M0_CODES; e++) _mm256_store_ps(FP4_LUTS[e], fp4_scaled_lut(_mm256_set1_ps(ue8m0((uint8_t)e))));
}

/* dequant_row's 8 bytes = 16 e2m1 values in column order (low nibble = even column) x s (slut: its
 * fp4_scaled_lut): each byte duplicated and shifted by 0 / 4 per column, then fp4_lookup (it reads the index's
 * low 4 bits). */
static inline lane16 fp4x16_avx2(const uint8_t *p, __m256 slut) {
    const __m256i shift = _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4);
    __m128i d = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)p), _mm_loadl_epi64((const __m128i *)p));
    lane16 a = {fp4_lookup(_mm256_srlv_epi32(_mm256_cvtepu8_epi32(d), shift), slut),                   /* 0..7 */
                fp4_lookup(_mm256_srlv_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(d, 8)), shift), slut)}; /* 8.. */
    return a;
}

/* The direct kernels' prefetch period as a mask: a 64-byte line holds 4 / nr steps of nr weight rows x 16 bytes,
 * and 4 / nr is 4, 2 or 1 (nr = 1, 2, 3-4: a power of two), so a step's test is an AND. As `step % (4 / nr)` the
 * loop ran a 64-bit idiv per step where nr is no constant (seen in the 4-row FP4 group's code). Measured (1 thread,
 * A/B in one process, min of 9 rounds, noisy host): 4 rows FP4 256 x 256 19.1 -> 17.3 us, 512 x 512 94.2 -> 85.3,
 * FP8 512 x 512 42.7 -> 38.6; 1, 2, 8 and 16 rows unchanged. */
static inline int64_t prefetch_step_mask(int nr) { return 4 / nr - 1; }

/* y[m0 .. m0+mr, n0 .. n0+nr] = x rows . panel rows, mr * nr <= AVX2_ACCUMULATORS (lowbit_gemm.c's tile). */
static inline __attribute__((always_inline)) void tile_block_avx2(const float *x, int64_t K, const float *panel,
                                                                  float *y, int64_t N, int64_t m0, int mr,
                                                                  int64_t n0, int nr) {
    lane16 acc[AVX2_ACCUMULATORS];
    for (int a = 0; a < mr * nr; a++) acc[a] = lane16_zero();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        lane16 xv[AVX2_ACCUMULATORS];
        for (int i = 0; i < mr; i++) xv[i] = lane16_load(x + (m0 + i) * K + k);
        for (int j = 0; j < nr; j++) {
            lane16 wv = lane16_load(panel + j * K + k);
            for (int i = 0; i < mr; i++) acc[i * nr + j] = lane16_fma(xv[i], wv, acc[i * nr + j]);
        }
    }
    if (k < K) {
        mask16 m = tail_mask(K - k);
        lane16 xv[AVX2_ACCUMULATORS];
        for (int i = 0; i < mr; i++) xv[i] = lane16_load_tail(x + (m0 + i) * K + k, m);
        for (int j = 0; j < nr; j++) {
            lane16 wv = lane16_load_tail(panel + j * K + k, m);
            for (int i = 0; i < mr; i++) acc[i * nr + j] = lane16_fma(xv[i], wv, acc[i * nr + j]);
        }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) y[(m0 + i) * N + n0 + j] = lane16_sum(acc[i * nr + j]);
}

/* The bf16 head's layout: 16 bf16 weights as 8 dwords hold columns 2p (low half) and 2p + 1 (high half), so
 * dword << 16 is the fp32 of the even columns and dword & 0xFFFF0000 that of the odd ones: 2 integer ops per 16
 * weights (the in-order conversion takes 5 shuffles and shifts, and the head is that bound on a core whose
 * sibling thread is busy). An accumulator then holds logical lanes 0, 2, .., 14 in lo and 1, 3, .., 15 in hi
 * (lane16 "even/odd"), x is read from a copy permuted the same way (x_evenodd), and the sum is the same tree
 * over the logical lanes (lane16_sum_evenodd). Measured: see docs/benchmarks.md, 2026-12-04. */
static inline lane16 bf16x16_evenodd(const uint16_t *p) {
    __m256i v = _mm256_loadu_si256((const __m256i *)p);
    lane16 a = {_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)),
                _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xFFFF0000u)))};
    return a;
}

/* lane16_sum of an even/odd accumulator: lo = logical lanes [0, 2, .., 14], hi = [1, 3, .., 15]. t[i] = a[i + 8] +
 * a[i] is te = [t0, t2, t4, t6] (lo's halves), to = [t1, t3, t5, t7] (hi's); u[j] = t[j + 4] + t[j] gives
 * u0 = t4 + t0, u2 = t6 + t2 from te and u1, u3 from to; then (u0 + u2) + (u1 + u3). */
static inline float lane16_sum_evenodd(lane16 a) {
    __m128 te = _mm_add_ps(_mm256_extractf128_ps(a.lo, 1), _mm256_castps256_ps128(a.lo));
    __m128 to = _mm_add_ps(_mm256_extractf128_ps(a.hi, 1), _mm256_castps256_ps128(a.hi));
    __m128 ue = _mm_add_ps(_mm_shuffle_ps(te, te, _MM_SHUFFLE(1, 0, 3, 2)), te); /* [u0, u2, ..] */
    __m128 uo = _mm_add_ps(_mm_shuffle_ps(to, to, _MM_SHUFFLE(1, 0, 3, 2)), to); /* [u1, u3, ..] */
    float u0 = _mm_cvtss_f32(ue), u2 = _mm_cvtss_f32(_mm_shuffle_ps(ue, ue, _MM_SHUFFLE(1, 1, 1, 1)));
    float u1 = _mm_cvtss_f32(uo), u3 = _mm_cvtss_f32(_mm_shuffle_ps(uo, uo, _MM_SHUFFLE(1, 1, 1, 1)));
    return (u0 + u2) + (u1 + u3);
}

/* x [M, K] -> xp [M, Kp] (Kp = K rounded up to 16): in each 16 columns the even ones first, then the odd ones,
 * columns past K = +0 (the tail's missing lanes). */
static void x_evenodd(const float *x, int64_t M, int64_t K, int64_t Kp, float *xp) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t k0 = 0; k0 < Kp; k0 += LANES)
            for (int p = 0; p < LANES; p++) {
                int64_t k = k0 + (p < LANES / 2 ? 2 * p : 2 * (p - LANES / 2) + 1);
                xp[i * Kp + k0 + p] = k < K ? x[i * K + k] : 0.0f;
            }
}

/* bf16 weight rows [n0, n0 + nr) against mr rows of the even/odd xp [., Kp], mr * nr <= AVX2_ACCUMULATORS */
static inline __attribute__((always_inline)) void bf16_block_avx2(const float *xp, int mr, int64_t K, int64_t Kp,
                                                                  const uint16_t *w, int64_t row0, int64_t n0,
                                                                  int nr, float *y, int64_t N) {
    lane16 acc[AVX2_ACCUMULATORS];
    const uint16_t *b = w + (row0 + n0) * K;
    for (int a = 0; a < mr * nr; a++) acc[a] = lane16_zero();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        { /* the block's nr rows are contiguous (nr x K x 2 bytes): the lines PREFETCH_AHEAD elements past its
           * start, 2 x nr x 16 bytes a step, in address order. Measured (1 thread CPU, bf16 129,280 x 512, 1 row,
           * A/B in one process, load ~5): one line of each row every 2 steps 16.5 ms, these 11.0 */
            const char *p = (const char *)(b + PREFETCH_AHEAD) + (k / 16) * (int64_t)nr * 32;
            for (int j = 0; j < nr; j += 2) _mm_prefetch(p + j * 32, HEAD_HINT);
        }
        for (int j = 0; j < nr; j++) {
            lane16 wv = bf16x16_evenodd(b + j * K + k);
            for (int i = 0; i < mr; i++)
                acc[i * nr + j] = lane16_fma(lane16_load(xp + i * Kp + k), wv, acc[i * nr + j]);
        }
    }
    if (k < K) { /* the tail's weights from a zero-padded copy (+0 in the missing lanes, as xp) */
        for (int j = 0; j < nr; j++) {
            uint16_t buf[16] = {0};
            memcpy(buf, b + j * K + k, sizeof(uint16_t) * (size_t)(K - k));
            lane16 wv = bf16x16_evenodd(buf);
            for (int i = 0; i < mr; i++)
                acc[i * nr + j] = lane16_fma(lane16_load(xp + i * Kp + k), wv, acc[i * nr + j]);
        }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) y[i * N + n0 + j] = lane16_sum_evenodd(acc[i * nr + j]);
}

/* FP8 / FP4 weight rows [n0, n0 + nr) against mr x rows (FP8: x [., K] in order; FP4: the even/odd xp), mr * nr
 * <= AVX2_ACCUMULATORS: the AVX-512 lowbit_direct_group's values 16 columns at a time (its zero tail: the fold's
 * products of +0, the unfolded (0 x 2^8) x s, here (0 x 2^120) x s). */
static inline __attribute__((always_inline)) void lowbit_block_avx2(const float *x, int mr, int64_t K, int fmt,
                                                                    const uint8_t *w, const uint8_t *scale,
                                                                    int64_t block, int64_t row0, int64_t n0, int nr,
                                                                    float *y, int64_t N) {
    lane16 acc[AVX2_ACCUMULATORS];
    const int64_t rowbytes = fmt == FMT_FP8 ? K : K / 2;
    const uint8_t *b = w + (row0 + n0) * rowbytes;
    const int64_t pf_mask = prefetch_step_mask(nr);
    for (int a = 0; a < mr * nr; a++) acc[a] = lane16_zero();
    if (fmt == FMT_FP8) {
        const int64_t kblocks = (K + block - 1) / block;
        const __m256 unscale = _mm256_set1_ps(FP8_UNSCALE);
        for (int64_t b0 = 0; b0 < K; b0 += block) {
            __m256 s[AVX2_ACCUMULATORS], s120[AVX2_ACCUMULATORS];
            int fold = 1;
            for (int j = 0; j < nr; j++) {
                uint8_t e = scale[((row0 + n0 + j) / block) * kblocks + b0 / block];
                fold &= e <= FP8_FOLD120_MAX_EXPONENT;
                s[j] = _mm256_set1_ps(ue8m0(e));
                s120[j] = _mm256_mul_ps(s[j], unscale);
            }
            int64_t end = b0 + block < K ? b0 + block : K, k = b0;
            for (; k + 16 <= end; k += 16) {
                if (((k / 16) & pf_mask) == 0) /* the rows' nr x 16 bytes a step: a line per 4 / nr steps, in order */
                    _mm_prefetch((const char *)b + LOWBIT_PREFETCH_BYTES + (k / 16) * (int64_t)nr * 16, _MM_HINT_T0);
                for (int j = 0; j < nr; j++) { /* x as memory operands: 4 rows' halves would spill the scales */
                    lane16 wv = fold ? fp8x16_direct(b + j * K + k, s120[j])
                                     : lane16_mul(fp8x16_direct(b + j * K + k, unscale), s[j]);
                    for (int i = 0; i < mr; i++)
                        acc[i * nr + j] = lane16_fma(lane16_load(x + i * K + k), wv, acc[i * nr + j]);
                }
            }
            if (k < end) { /* K's tail (blocks are whole vectors): x masked, the bytes zero-padded */
                mask16 m = tail_mask(end - k);
                lane16 xv[AVX2_ACCUMULATORS];
                for (int i = 0; i < mr; i++) xv[i] = lane16_load_tail(x + i * K + k, m);
                for (int j = 0; j < nr; j++) {
                    uint8_t buf[16] = {0};
                    memcpy(buf, b + j * K + k, (size_t)(end - k));
                    lane16 wv = fold ? fp8x16_direct(buf, s120[j]) : lane16_mul(fp8x16_direct(buf, unscale), s[j]);
                    for (int i = 0; i < mr; i++) acc[i * nr + j] = lane16_fma(xv[i], wv, acc[i * nr + j]);
                }
            }
        }
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nr; j++) y[i * N + n0 + j] = lane16_sum(acc[i * nr + j]);
    } else { /* FMT_FP4, K a multiple of FP4_BLOCK: columns [k, k + 16) then [k + 16, k + 32) */
        for (int64_t k = 0; k < K; k += FP4_BLOCK) {
            if (((k / 32) & pf_mask) == 0) /* nr x 16 bytes a block: one line per 4 / nr blocks, in address order */
                _mm_prefetch((const char *)b + LOWBIT_PREFETCH_BYTES + (k / 32) * (int64_t)nr * 16, _MM_HINT_T0);
            __m256 s[AVX2_ACCUMULATORS]; /* each weight row's fp4_scaled_lut for this scale block */
            for (int j = 0; j < nr; j++) {
                s[j] = _mm256_load_ps(FP4_LUTS[scale[(row0 + n0 + j) * (K / FP4_BLOCK) + k / FP4_BLOCK]]);
            }
            for (int half = 0; half < FP4_BLOCK; half += 16)
                for (int j = 0; j < nr; j++) {
                    lane16 wv = fp4x16_evenodd(b + j * rowbytes + (k + half) / 2, s[j]);
                    for (int i = 0; i < mr; i++)
                        acc[i * nr + j] = lane16_fma(lane16_load(x + i * K + k + half), wv, acc[i * nr + j]);
                }
        }
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nr; j++) y[i * N + n0 + j] = lane16_sum_evenodd(acc[i * nr + j]);
    }
}

/* A tile of mr (<= AVX2_XCHUNK) x rows and nr weight rows as blocks of mr x AVX2_ACCUMULATORS / mr (1 x 4, 2 x 2,
 * 3 x 1, 4 x 1). Measured (1 thread CPU, FP8 16 x 4096 x 512 x 16 rows, A/B in one process): 2 x 2 blocks 43.8 ms,
 * 4 x 1 30.3 (x from memory operands, the weight converted once per 4 rows), 2 x 3 38.3, 3 x 2 45.7. */
#define AVX2_SPLIT(call_block)                                                                            \
    do {                                                                                                  \
        const int bw = AVX2_ACCUMULATORS / mr;                                                            \
        for (int j0 = 0; j0 < nr; j0 += bw) {                                                             \
            int bnr = nr - j0 < bw ? nr - j0 : bw;                                                        \
            call_block;                                                                                   \
        }                                                                                                 \
    } while (0)

/* mr in 1 .. AVX2_XCHUNK as a constant (the blocks' accumulators stay in registers) */
#define AVX2_CONST_ROWS(mr, CALL) \
    switch (mr) {                 \
    case 1: CALL(1); break;       \
    case 2: CALL(2); break;       \
    case 3: CALL(3); break;       \
    default: CALL(4);             \
    }

static inline __attribute__((always_inline)) void tile_avx2(const float *x, int64_t K, const float *panel, float *y,
                                                            int64_t N, int64_t m0, int mr, int64_t n0, int nr) {
    AVX2_SPLIT(tile_block_avx2(x, K, panel + j0 * K, y, N, m0, mr, n0 + j0, bnr));
}

#include "lowbit_halves_avx2.h" /* tile_halves_split_avx2: the panel path at 2 or more x rows */

/* lowbit_gemm.c's panel_gemm on AVX2: x rows AVX2_XCHUNK at a time against the panel's nr rows */
static void panel_gemm_avx2(const float *x, int64_t M, int64_t K, const float *panel, float *y, int64_t N,
                            int64_t n0, int nr) {
    for (int64_t m0 = 0; m0 < M; m0 += AVX2_XCHUNK) {
        int mr = M - m0 >= AVX2_XCHUNK ? AVX2_XCHUNK : (int)(M - m0);
#define PANEL_CALL(rows) tile_halves_split_avx2(x, K, panel, y, N, m0, rows, n0, PANEL)
        if (mr == 1) /* one x row: tile_block_avx2's 1 x 4 blocks (nothing to share across rows) */
            tile_avx2(x, K, panel, y, N, m0, 1, n0, nr);
        else if (nr == PANEL)
            AVX2_CONST_ROWS(mr, PANEL_CALL)
        else
            tile_halves_split_avx2(x, K, panel, y, N, m0, mr, n0, nr);
#undef PANEL_CALL
    }
}

/* bf16_direct on AVX2: x permuted once (x_evenodd), then weight-row groups of AVX2_ACCUMULATORS rows split over the
 * threads, each against x rows AVX2_XCHUNK at a time (the later chunks find the group's lines in L1). Returns -1
 * when the permuted copy cannot be allocated. */
static int bf16_direct_avx2(const float *x, int64_t M, int64_t K, const uint16_t *w, int64_t N, int64_t row0,
                            float *y, int nthreads) {
    const int64_t Kp = (K + LANES - 1) / LANES * LANES;
    float *xp = (float *)malloc(sizeof(float) * (size_t)(M * Kp + 1)); /* + 1: never malloc(0) (K = 0) */
    if (!xp) return -1;
    x_evenodd(x, M, K, Kp, xp);
    int64_t groups = (N + AVX2_ACCUMULATORS - 1) / AVX2_ACCUMULATORS;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        int64_t n0 = g * AVX2_ACCUMULATORS;
        int nr = N - n0 >= AVX2_ACCUMULATORS ? AVX2_ACCUMULATORS : (int)(N - n0);
        for (int64_t m0 = 0; m0 < M; m0 += AVX2_XCHUNK) {
            int mr = M - m0 >= AVX2_XCHUNK ? AVX2_XCHUNK : (int)(M - m0);
            const float *xc = xp + m0 * Kp;
            float *yc = y + m0 * N;
#define BF16_CALL(rows) AVX2_SPLIT(bf16_block_avx2(xc, rows, K, Kp, w, row0, n0 + j0, bnr, yc, N))
            if (nr == AVX2_ACCUMULATORS)
                AVX2_CONST_ROWS(mr, BF16_CALL)
            else
                BF16_CALL(mr);
#undef BF16_CALL
        }
    }
    free(xp);
    return 0;
}

#include "lowbit_fp8_avx2.h" /* x' f: fp8_prescale, fp8_group_prescaled_avx2 */

/* A weight-row group (nr <= AVX2_ACCUMULATORS rows) against mr <= AVX2_XCHUNK x rows through lowbit_block_avx2
 * (format fmt), not inlined for the same reason as fp8_group_prescaled_avx2. */
static __attribute__((noinline)) void lowbit_group_avx2(const float *xc, int mr, int64_t K, int fmt,
                                                        const uint8_t *w, const uint8_t *scale, int64_t block,
                                                        int64_t row0, int64_t n0, int nr, float *yc, int64_t N) {
    /* constant rows and format keep the accumulators in registers */
#define FP8_CALL(rows) AVX2_SPLIT(lowbit_block_avx2(xc, rows, K, FMT_FP8, w, scale, block, row0, n0 + j0, bnr, yc, N))
#define FP4_CALL(rows) AVX2_SPLIT(lowbit_block_avx2(xc, rows, K, FMT_FP4, w, scale, block, row0, n0 + j0, bnr, yc, N))
    if (nr == AVX2_ACCUMULATORS) {
        const int nr = AVX2_ACCUMULATORS; /* a constant for AVX2_SPLIT */
        if (fmt == FMT_FP8)
            AVX2_CONST_ROWS(mr, FP8_CALL)
        else
            AVX2_CONST_ROWS(mr, FP4_CALL)
    } else {
        AVX2_SPLIT(lowbit_block_avx2(xc, mr, K, fmt, w, scale, block, row0, n0 + j0, bnr, yc, N));
    }
#undef FP8_CALL
#undef FP4_CALL
}

/* lowbit_direct on AVX2 (FP8 / FP4, M <= LOWBIT_DIRECT_ROWS): FP4's x permuted once (x_evenodd), then weight-row
 * groups as bf16_direct_avx2's; FP8 groups read x' (fp8_prescale, made per thread when a group starts a new weight
 * row block) where their column block allows. The first LOWBIT_PREFETCH_BYTES of the rows are requested up front
 * (the loop's prefetches run that far ahead). Returns -1 when a scratch copy cannot be allocated. */
static int lowbit_direct_avx2(const float *x, int64_t M, int64_t K, int fmt, const uint8_t *w,
                              const uint8_t *scale, int64_t N, int64_t block, int64_t row0, float *y, int nthreads) {
    int64_t rowbytes = fmt == FMT_FP8 ? K : K / 2;
    int64_t head = N * rowbytes < LOWBIT_PREFETCH_BYTES ? N * rowbytes : LOWBIT_PREFETCH_BYTES;
    for (int64_t off = 0; off < head; off += 64) _mm_prefetch((const char *)(w + row0 * rowbytes + off), _MM_HINT_T0);
    float *xp = NULL;
    if (fmt == FMT_FP4) { /* K % FP4_BLOCK == 0: no padding */
        xp = (float *)malloc(sizeof(float) * (size_t)(M * K + 1));
        if (!xp) return -1;
        x_evenodd(x, M, K, K, xp);
    }
    const float *xs = xp ? xp : x;
    const int64_t groups = (N + AVX2_ACCUMULATORS - 1) / AVX2_ACCUMULATORS;
    const int64_t kblocks = fmt == FMT_FP8 ? (K + block - 1) / block : 0; /* FP4's block is unused (may be 0) */
#pragma omp parallel num_threads(nthreads)
    {
        /* FP8: this thread's x' of weight row block pre_rb (fp8_prescale), and which column blocks take it */
        float *xpre = fmt == FMT_FP8 ? (float *)malloc(sizeof(float) * (size_t)(M * K + 1)) : NULL;
        int64_t pre_rb = -1;
        int pre_ok = 0;
#pragma omp for schedule(static)
        for (int64_t g = 0; g < groups; g++) {
            int64_t n0 = g * AVX2_ACCUMULATORS;
            int nr = N - n0 >= AVX2_ACCUMULATORS ? AVX2_ACCUMULATORS : (int)(N - n0);
            const float *pre = NULL; /* this group's x', when all its rows are in one weight row block */
            if (xpre && (row0 + n0) / block == (row0 + n0 + nr - 1) / block) {
                int64_t rb = (row0 + n0) / block;
                if (rb != pre_rb) pre_ok = fp8_prescale(x, M, K, scale + rb * kblocks, block, xpre);
                pre_rb = rb;
                pre = pre_ok ? xpre : NULL;
            }
            for (int64_t m0 = 0; m0 < M; m0 += AVX2_XCHUNK) {
                int mr = M - m0 >= AVX2_XCHUNK ? AVX2_XCHUNK : (int)(M - m0);
                const float *xc = xs + m0 * K, *pc = pre ? pre + m0 * K : NULL;
                if (pc) { /* every column block prescaled */
                    fp8_group_prescaled_avx2(pc, mr, K, w, row0, n0, nr, y + m0 * N, N);
                    continue;
                }
                lowbit_group_avx2(xc, mr, K, fmt, w, scale, block, row0, n0, nr, y + m0 * N, N);
            }
        }
        free(xpre); /* (NULL when it could not be allocated: the groups then ran without x') */
    }
    free(xp);
    return 0;
}
#undef AVX2_SPLIT
#undef AVX2_CONST_ROWS
