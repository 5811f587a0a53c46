/* Small CPU kernels for the fast op table (loaded with ctypes by v4stack/ops/fast/kernels.py).
 * Each replaces a chain of tiny torch ops whose per-call overhead dominates decode on small models.
 * Mostly plain C (the compiler vectorises with -O3 -march=native); intrinsics where a loop needs an order or a
 * register blocking the compiler does not find, for AVX-512 and for AVX2 + FMA (KERNELS_AVX2: AMD Zen and Intel
 * CPUs without AVX-512). Every vector path computes the scalar path's values bit for bit (said at each one). No
 * fast-math (IEEE order kept). */
#include <math.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define KERNELS_AVX2 1
#endif
#include <stdint.h>
#include <string.h>

#define E4M3_MAX 448.0f
#define AMAX_FLOOR 1e-4f
#define E2M1_MAX 6.0f
#define DOT_LANES 8 /* independent partial sums of the exact q.k (a vector of doubles) */

static inline float bf16_to_f32(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) { /* round to nearest even; inputs here are finite */
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float round_bf16_f32(float f) { return bf16_to_f32(f32_to_bf16(f)); }


static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

#define E4M3_DROP_BITS 20           /* fp32 keeps 23 mantissa bits, e4m3 3 */
#define E4M3_MIN_NORMAL 0x1p-6f     /* below: subnormal e4m3, a fixed step of 2^-9 */
#define E4M3_SUBNORMAL_SHIFT 0x1p14f /* 2^14 + a rounds a to a multiple of ulp(2^14) = 2^-9 (ties to even) */

#include "fast_kernels_avx2.h" /* the AVX2 + FMA blocks (KERNELS_AVX2) of the kernels below */

/* e4m3fn value nearest to v (|v| <= 448), ties to even: 3 mantissa bits, subnormal step 2^-9. Bit arithmetic
 * instead of frexp/ldexp/nearbyint calls (the same values: the mantissa rounds to nearest even, a carry moves into
 * the exponent). */
static inline float round_e4m3(float v) {
    float a = fabsf(v);
    float r;
    if (a < E4M3_MIN_NORMAL) {
        float shifted = a + E4M3_SUBNORMAL_SHIFT; /* ISO C without fast-math: both operations round */
        r = shifted - E4M3_SUBNORMAL_SHIFT;
    } else {
        uint32_t u = f32_bits(a);
        u += ((1u << (E4M3_DROP_BITS - 1)) - 1) + ((u >> E4M3_DROP_BITS) & 1u);
        r = bits_f32(u & ~((1u << E4M3_DROP_BITS) - 1));
    }
    return copysignf(r, v);
}

/* 2^ceil(log2(y)) for a normal y > 0, exactly: y itself when its mantissa is zero, else the next power of two. */
static inline float pow2_ceil(float y) {
    uint32_t u = f32_bits(y), exponent = u & 0x7F800000u;
    return (u & 0x007FFFFFu) ? bits_f32(exponent + 0x00800000u) : y;
}

/* FP8 e4m3 quant-dequant of rows x k values in blocks of `block` along k (k % block == 0):
 * s = 2^ceil(log2(max(amax, 1e-4) / 448)); out = e4m3(clamp(x / s, +-448)) * s, written as bf16.
 * in_bf16: x is bf16 (uint16) when 1, fp32 when 0. */
/* Block [i0, i0 + n) of x (bf16 when in_bf16, else fp32) as fp32 into dst; returns its largest magnitude. */
static float load_block(const void *x, int64_t i0, int64_t n, int in_bf16, float *dst) {
    float amax = 0.0f;
    int64_t i = 0;
#if defined(KERNELS_AVX2)
    /* per lane the scalar rule (_mm256_max_ps(a, m) is a > m ? a : m: a NaN never enters); the lanes' maxima then
     * combine by the same rule, in any order the same value (magnitudes >= +0, no NaN) */
    __m256 m = _mm256_setzero_ps();
    for (; i + F32_LANES <= n; i += F32_LANES) {
        const __m256 v = load_any8(x, i0 + i, in_bf16);
        _mm256_storeu_ps(dst + i, v);
        m = _mm256_max_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), v), m);
    }
    float lanes[F32_LANES];
    _mm256_storeu_ps(lanes, m);
    for (int l = 0; l < F32_LANES; l++) amax = lanes[l] > amax ? lanes[l] : amax;
#endif
    for (; i < n; i++) {
        float v = in_bf16 ? bf16_to_f32(((const uint16_t *)x)[i0 + i]) : ((const float *)x)[i0 + i];
        dst[i] = v;
        float a = fabsf(v);
        amax = a > amax ? a : amax;
    }
    return amax;
}

void act_quant(const void *x, uint16_t *out, int64_t rows, int64_t k, int64_t block, int in_bf16) {
    float buf[1024];
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t b0 = 0; b0 < k; b0 += block) {
            float amax = load_block(x, r * k + b0, block, in_bf16, buf);
            if (amax < AMAX_FLOOR) amax = AMAX_FLOOR;
            float s = pow2_ceil(amax / E4M3_MAX);
            int64_t i = 0;
#if defined(KERNELS_AVX2)
            for (const __m256 sv = _mm256_set1_ps(s); i + F32_LANES <= block; i += F32_LANES)
                store_bf16x8(out + r * k + b0 + i, fp8_lanes(_mm256_loadu_ps(buf + i), sv));
#endif
            for (; i < block; i++) {
                float v = buf[i] / s;
                v = v > E4M3_MAX ? E4M3_MAX : (v < -E4M3_MAX ? -E4M3_MAX : v);
                out[r * k + b0 + i] = f32_to_bf16(round_e4m3(v) * s);
            }
        }
    }
}

#define FP4_AMAX_FLOOR (6.0f * 0x1p-126f) /* as weights/formats.py: the scale stays a normal fp32 */

/* e2m1 value nearest to v (|v| <= 6 after the clamp), ties to even: steps 0.5 on [0, 2), 1 on [2, 4), 2 on [4, 6]. */
static inline float round_e2m1(float v) {
    float mag = fabsf(v) > E2M1_MAX ? E2M1_MAX : fabsf(v);
    float step = mag < 2.0f ? 0.5f : (mag < 4.0f ? 1.0f : 2.0f);
    float r = nearbyintf(mag / step) * step;
    return copysignf(r > E2M1_MAX ? E2M1_MAX : r, v);
}


/* FP4 e2m1 quant-dequant of rows x k values in blocks of `block` (k % block == 0), one power-of-two scale per
 * block: s = exp2(ceil(log2(max(amax, 6 * 2^-126) / 6))) in libm (torch's scalar path);
 * out = e2m1(clamp(x / s, +-6)) * s as fp32 (ops.reference.quant.quant_dequant_fp4). in_bf16: x is bf16 (uint16) when 1, fp32 when 0. */
void fp4_quant(const void *x, float *out, int64_t rows, int64_t k, int64_t block, int in_bf16) {
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t b0 = 0; b0 < k; b0 += block) {
            float amax = load_block(x, r * k + b0, block, in_bf16, out + r * k + b0);
            if (amax < FP4_AMAX_FLOOR) amax = FP4_AMAX_FLOOR;
            /* the reference's exp2(ceil(log2(y))) as written, not the exact power of two: log2 rounds to the
             * integer k for y within a few ulps above 2^k, and the reference then keeps the scale 2^k */
            float s = exp2f(ceilf(log2f(amax / E2M1_MAX)));
            int64_t i = 0;
#if defined(KERNELS_AVX2)
            for (const __m256 sv = _mm256_set1_ps(s); i + F32_LANES <= block; i += F32_LANES) {
                float *o = out + r * k + b0 + i;
                _mm256_storeu_ps(o, fp4_lanes(_mm256_loadu_ps(o), sv));
            }
#endif
            for (; i < block; i++) {
                float v = out[r * k + b0 + i] / s;
                v = v > E2M1_MAX ? E2M1_MAX : (v < -E2M1_MAX ? -E2M1_MAX : v);
                out[r * k + b0 + i] = round_e2m1(v) * s;
            }
        }
    }
}

/* The affine parts of mHC split (ops.reference.mixing.hc_split_sinkhorn) around torch's sigmoid and exp (kept in
 * torch, on tensors of the reference's shapes, so they round exactly like the reference's):
 * hc_split_prepare: mixes [T, (2+hc)*hc], scale [3], base [(2+hc)*hc] -> zpre, zpost [T, hc] = m * scale_i + b,
 *   zcomb [T, hc, hc] = c - max_k c with c = m * scale_2 + b;
 * hc_split_finish (after sigmoid / exp): pre = s_pre + eps, post = 2 s_post (in place). */
void hc_split_prepare(const float *mixes, const float *scale, const float *base, int64_t T, int64_t hc, float *zpre,
                      float *zpost, float *zcomb) {
    int64_t width = (2 + hc) * hc;
    for (int64_t t = 0; t < T; t++) {
        const float *m = mixes + t * width;
        for (int64_t i = 0; i < hc; i++) {
            zpre[t * hc + i] = m[i] * scale[0] + base[i];
            zpost[t * hc + i] = m[hc + i] * scale[1] + base[hc + i];
        }
        for (int64_t j = 0; j < hc; j++) {
            float *c = zcomb + (t * hc + j) * hc;
            float peak = -INFINITY;
            for (int64_t k = 0; k < hc; k++) {
                int64_t i = 2 * hc + j * hc + k;
                c[k] = m[i] * scale[2] + base[i];
                peak = c[k] > peak ? c[k] : peak;
            }
            for (int64_t k = 0; k < hc; k++) c[k] = c[k] - peak;
        }
    }
}

void hc_split_finish(float *pre, float *post, int64_t n, float eps) {
    for (int64_t i = 0; i < n; i++) {
        pre[i] = pre[i] + eps;
        post[i] = 2.0f * post[i];
    }
}

/* The Sinkhorn normalisations of mHC (ops.reference.mixing.hc_split_sinkhorn after its softmax exponentials):
 * e [T, hc, hc] = exp(c - rowmax) from torch (so the exponentials round exactly like the reference's), in place:
 * rows / sum + eps, columns / (sum + eps), then (iters - 1) x (rows, columns) / (sum + eps). */
void hc_sinkhorn_normalise(float *comb, int64_t T, int64_t hc, int64_t iters, float eps) {
    for (int64_t t = 0; t < T; t++) {
        float *c = comb + t * hc * hc;
        for (int64_t it = 0; it < iters; it++) {
            for (int64_t j = 0; j < hc; j++) { /* rows (sum over k) */
                float sum = 0.0f;
                for (int64_t k = 0; k < hc; k++) sum += c[j * hc + k];
                if (it == 0) {
                    for (int64_t k = 0; k < hc; k++) c[j * hc + k] = c[j * hc + k] / sum + eps;
                } else {
                    for (int64_t k = 0; k < hc; k++) c[j * hc + k] = c[j * hc + k] / (sum + eps);
                }
            }
            for (int64_t k = 0; k < hc; k++) { /* columns (sum over j) */
                float sum = 0.0f;
                for (int64_t j = 0; j < hc; j++) sum += c[j * hc + k];
                for (int64_t j = 0; j < hc; j++) c[j * hc + k] = c[j * hc + k] / (sum + eps);
            }
        }
    }
}

#define KERNEL_BLOCK 64 /* index-list slots per step of the official kernel's online softmax */

/* sum_i q_i k_i in double for q (bf16 values as double) and k (bf16 values as fp32): every product is exact in
 * double, so a fused multiply-add rounds exactly like a multiply then an add, and the sum of such products does not
 * depend on the order (the partial sums hold them exactly while their magnitudes span < 53 - 16 bits). */
static inline double exact_dot(const double *q, const float *k, int64_t d) {
    double part[DOT_LANES] = {0};
    int64_t i = 0;
#if defined(__AVX512F__)
    __m512d acc = _mm512_setzero_pd();
    for (; i + DOT_LANES <= d; i += DOT_LANES)
        acc = _mm512_fmadd_pd(_mm512_loadu_pd(q + i), _mm512_cvtps_pd(_mm256_loadu_ps(k + i)), acc);
    _mm512_storeu_pd(part, acc);
#elif defined(KERNELS_AVX2)
    /* part[0..3] and part[4..7] as two vectors: the scalar loop's lanes, the same exact products in the same order
     * (a fused multiply-add of an exact product rounds like the scalar multiply then add) */
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    for (; i + DOT_LANES <= d; i += DOT_LANES) {
        lo = _mm256_fmadd_pd(_mm256_loadu_pd(q + i), _mm256_cvtps_pd(_mm_loadu_ps(k + i)), lo);
        hi = _mm256_fmadd_pd(_mm256_loadu_pd(q + i + 4), _mm256_cvtps_pd(_mm_loadu_ps(k + i + 4)), hi);
    }
    _mm256_storeu_pd(part, lo);
    _mm256_storeu_pd(part + 4, hi);
#else
    for (; i + DOT_LANES <= d; i += DOT_LANES)
        for (int l = 0; l < DOT_LANES; l++) part[l] += q[i + l] * (double)k[i + l];
#endif
    for (; i < d; i++) part[0] += q[i] * (double)k[i];
    double dot = 0.0;
    for (int l = 0; l < DOT_LANES; l++) dot += part[l];
    return dot;
}

/* The official kernel's weights for one head: s [K] scores (-inf where not listed) -> w [K] in place, returns the
 * denominator. m_b = max over list blocks 0..b of 64 slots, M = m_last;
 * w_j = bf16(e^(s_j - m_b(j))) e^(m_b(j) - M),  l = sum_j e^(s_j - m_b(j)) e^(m_b(j) - M) + e^(sink - M). */
static float blocked_weights(float *s, int64_t K, float sink) {
    float final_max = -INFINITY, block_max[(K + KERNEL_BLOCK - 1) / KERNEL_BLOCK];
    for (int64_t b0 = 0; b0 < K; b0 += KERNEL_BLOCK) {
        int64_t end = b0 + KERNEL_BLOCK < K ? b0 + KERNEL_BLOCK : K;
        for (int64_t j = b0; j < end; j++) final_max = s[j] > final_max ? s[j] : final_max;
        block_max[b0 / KERNEL_BLOCK] = final_max; /* the running max m_b */
    }
    float denom = 0.0f;
    for (int64_t b0 = 0; b0 < K; b0 += KERNEL_BLOCK) {
        int64_t end = b0 + KERNEL_BLOCK < K ? b0 + KERNEL_BLOCK : K;
        float m = block_max[b0 / KERNEL_BLOCK];
        float rescale = isinf(m) ? 1.0f : expf(m - final_max); /* -inf: no listed slot yet, every weight 0 */
        for (int64_t j = b0; j < end; j++) {
            if (isinf(s[j])) { s[j] = 0.0f; continue; }
            float p = expf(s[j] - m);
            s[j] = round_bf16_f32(p) * rescale;
            denom += p * rescale;
        }
    }
    return denom + expf(sink - final_max);
}

/* Key row j (0 <= j < W + E) of decode sequence b: rows j < W from part 0, the rest from part 1. A part is a pool
 * [*, d] read at slots [B, n] (slots NULL: row b's own n contiguous rows, pool + (b * n + j) * d). */
typedef struct {
    const uint16_t *pool;
    const int64_t *slots;
    int64_t n;
} KeyPart;

static inline const uint16_t *key_row(const KeyPart *parts, int64_t b, int64_t j, int64_t d) {
    const KeyPart *p = parts;
    if (j >= p->n) {
        j -= p->n;
        p = parts + 1;
    }
    int64_t row = p->slots ? p->slots[b * p->n + j] : b * p->n + j;
    return p->pool + row * d;
}

#define PREFETCH_ROWS 4 /* key rows read ahead while scoring: ~4 rows of q.k cover a last-level-cache miss */

/* Sequence b's valid slots in order: rows[n] its key row and cols[n] its slot j, n < the count returned. */
static int64_t valid_rows(const KeyPart *parts, int64_t b, const uint8_t *vb, int64_t K, int64_t d,
                          const uint16_t **rows, int64_t *cols) {
    int64_t nv = 0;
    for (int64_t j = 0; j < K; j++) {
        if (!vb[j]) continue;
        rows[nv] = key_row(parts, b, j, d);
        cols[nv++] = j;
    }
    return nv;
}

#if defined(KERNELS_AVX2)
#define PV_F32_DIMS 16  /* decode P.V dims per AVX2 register block: DOT_HEADS x 2 vectors of 8 floats */
#define PV_ROW_BYTES 16384 /* key rows per P.V chunk: half of a 32 KiB L1, so the chunk's 16-dim passes hit L1 */

/* acc[h * d + i0 .. + PV_F32_DIMS) += sum_n w[h * K + cols[n]] rows[n][i0 ..] over n in [n0, n1) in order, for
 * DOT_HEADS heads: per output the scalar loop's fp32 chain (acc starts at +0 and each chunk continues it; a
 * multiply, then an add: these products are not exact in fp32, so no fused multiply-add). */
static inline void pv_f32_heads(const uint16_t *const *rows, const int64_t *cols, int64_t n0, int64_t n1,
                                int64_t K, const float *w, int64_t i0, float *acc, int64_t d) {
    __m256 a[DOT_HEADS][2];
    for (int h = 0; h < DOT_HEADS; h++) {
        a[h][0] = _mm256_loadu_ps(acc + h * d + i0);
        a[h][1] = _mm256_loadu_ps(acc + h * d + i0 + 8);
    }
    for (int64_t n = n0; n < n1; n++) {
        const uint16_t *kr = rows[n] + i0;
        const float *wn = w + cols[n];
        const __m256 k0 = bf16x8_to_f32(kr), k1 = bf16x8_to_f32(kr + 8);
        for (int h = 0; h < DOT_HEADS; h++) {
            const __m256 wj = _mm256_broadcast_ss(wn + h * K);
            a[h][0] = _mm256_add_ps(a[h][0], _mm256_mul_ps(wj, k0));
            a[h][1] = _mm256_add_ps(a[h][1], _mm256_mul_ps(wj, k1));
        }
    }
    for (int h = 0; h < DOT_HEADS; h++) {
        _mm256_storeu_ps(acc + h * d + i0, a[h][0]);
        _mm256_storeu_ps(acc + h * d + i0 + 8, a[h][1]);
    }
}
#endif

/* One decode query per sequence over its keys, in the official kernel's rounding (the dense form of
 * ops.fast.attention._blocked_weights): q [B, H, d] bf16, keys from two parts (K = parts[0].n + parts[1].n slots;
 * K = V; slots where valid == 0 are never read), valid [B, K] uint8 (slot 0 valid), sink [H] fp32 -> out [B, H, d]
 * bf16: s_j = fp32(exact q.k_j) * scale (bf16 products are exact in double, so their sum does not depend on the
 * order), o = (sum_j w_j k_j) / l, the valid slots in order. scratch: H * K + H * d + d floats; qd: H * d + 2 K
 * doubles (the query as doubles, then the valid slots' row pointers and slot numbers, 8 bytes each). */
static void decode_attention_parts(const uint16_t *q, const KeyPart *parts, const uint8_t *valid, const float *sink,
                                   float scale, int64_t B, int64_t H, int64_t d, uint16_t *out, float *scratch,
                                   double *qd) {
    int64_t K = parts[0].n + parts[1].n;
    float *s = scratch, *acc = scratch + H * K, *kf = scratch + H * K + H * d;
    const uint16_t **rows = (const uint16_t **)(void *)(qd + H * d);
    int64_t *cols = (int64_t *)(void *)(qd + H * d + K);
    for (int64_t b = 0; b < B; b++) {
        const uint8_t *vb = valid + b * K;
        for (int64_t i = 0; i < H * d; i++) qd[i] = (double)bf16_to_f32(q[b * H * d + i]);
        for (int64_t j = 0; j < K; j++)
            if (!vb[j])
                for (int64_t h = 0; h < H; h++) s[h * K + j] = -INFINITY;
        const int64_t nv = valid_rows(parts, b, vb, K, d, rows, cols);
        for (int64_t n = 0; n < nv; n++) {
            const uint16_t *kr = rows[n];
            const int64_t j = cols[n];
            int64_t h = 0;
#if defined(KERNELS_AVX2)
            if (n + PREFETCH_ROWS < nv) prefetch_row(rows[n + PREFETCH_ROWS], d);
            for (double dots[DOT_HEADS]; h + DOT_HEADS <= H; h += DOT_HEADS) {
                exact_dot_heads(qd + h * d, kr, d, dots);
                for (int l = 0; l < DOT_HEADS; l++) s[(h + l) * K + j] = (float)dots[l] * scale;
            }
#endif
            if (h == H) continue;
            for (int64_t i = 0; i < d; i++) kf[i] = bf16_to_f32(kr[i]);
            for (; h < H; h++) s[h * K + j] = (float)exact_dot(qd + h * d, kf, d) * scale;
        }
        float denom[H];
        for (int64_t h = 0; h < H; h++) denom[h] = blocked_weights(s + h * K, K, sink[h]);
        for (int64_t i = 0; i < H * d; i++) acc[i] = 0.0f;
        int64_t h0 = 0; /* the heads before h0 are summed by the vector blocks */
#if defined(KERNELS_AVX2)
        if (d % PV_F32_DIMS == 0 && H >= DOT_HEADS) {
            const int64_t fit = PV_ROW_BYTES / (d * (int64_t)sizeof(uint16_t)), chunk = fit > 0 ? fit : 1;
            for (int64_t n0 = 0; n0 < nv; n0 += chunk) {
                const int64_t n1 = n0 + chunk < nv ? n0 + chunk : nv;
                for (h0 = 0; h0 + DOT_HEADS <= H; h0 += DOT_HEADS)
                    for (int64_t i0 = 0; i0 < d; i0 += PV_F32_DIMS)
                        pv_f32_heads(rows, cols, n0, n1, K, s + h0 * K, i0, acc + h0 * d, d);
            }
            h0 = H - H % DOT_HEADS;
        }
#endif
        for (int64_t n = 0; h0 < H && n < nv; n++) {
            const uint16_t *kr = rows[n];
            for (int64_t i = 0; i < d; i++) kf[i] = bf16_to_f32(kr[i]);
            for (int64_t h = h0; h < H; h++) {
                float wj = s[h * K + cols[n]];
                float *ah = acc + h * d;
                for (int64_t i = 0; i < d; i++) ah[i] += wj * kf[i];
            }
        }
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < d; i++) out[(b * H + h) * d + i] = f32_to_bf16(acc[h * d + i] / denom[h]);
    }
}

/* Keys gathered as keys [B, K, d] bf16 (ops.fast.attention.decode_attention). */
void decode_attention_blocked(const uint16_t *q, const uint16_t *keys, const uint8_t *valid, const float *sink,
                              float scale, int64_t B, int64_t H, int64_t K, int64_t d, uint16_t *out,
                              float *scratch, double *qd) {
    KeyPart parts[2] = {{keys, 0, K}, {keys, 0, 0}};
    decode_attention_parts(q, parts, valid, sink, scale, B, H, d, out, scratch, qd);
}

/* Keys read in place from the cache pools (ops.fast.decode_ops.decode_attention_pooled): part 0 pool0 [*, d] at
 * slots0 [B, n0] (the window rows), part 1 pool1 at slots1 [B, n1] (the compressed entries; n1 may be 0). */
void decode_attention_pooled(const uint16_t *q, const uint16_t *pool0, const int64_t *slots0, int64_t n0,
                             const uint16_t *pool1, const int64_t *slots1, int64_t n1, const uint8_t *valid,
                             const float *sink, float scale, int64_t B, int64_t H, int64_t d, uint16_t *out,
                             float *scratch, double *qd) {
    KeyPart parts[2] = {{pool0, slots0, n0}, {pool1, slots1, n1}};
    decode_attention_parts(q, parts, valid, sink, scale, B, H, d, out, scratch, qd);
}

/* Element i of a bf16 (is_bf16 = 1) or fp32 array as fp32, and the store back in the same dtype (bf16 rounded to
 * nearest even). */
static inline float load_any(const void *p, int64_t i, int is_bf16) {
    return is_bf16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static inline void store_any(void *p, int64_t i, float v, int is_bf16) {
    if (is_bf16) ((uint16_t *)p)[i] = f32_to_bf16(v);
    else ((float *)p)[i] = v;
}

/* RoPE on interleaved pairs of the last d of D dims (ops.reference.rope.rope): x [N, inner, D] -> out (same
 * dtype), phases [N, d/2] complex64 as (cos, sin) pairs; inverse uses the conjugate. The products are torch's
 * complex multiply (re = a c - b s, im = a s + b c, no fused multiply-add; -std=c11 keeps contraction off). */
void rope_apply(const void *x, void *out, const float *phases, int64_t N, int64_t inner, int64_t D, int64_t d,
                int inverse, int is_bf16) {
    for (int64_t n = 0; n < N; n++) {
        const float *ph = phases + n * d;
        for (int64_t r = 0; r < inner; r++) {
            int64_t base = (n * inner + r) * D;
            for (int64_t i = 0; i < D - d; i++) store_any(out, base + i, load_any(x, base + i, is_bf16), is_bf16);
            for (int64_t p = 0; p < d / 2; p++) {
                int64_t i = base + D - d + 2 * p;
                float a = load_any(x, i, is_bf16), b = load_any(x, i + 1, is_bf16);
                float c = ph[2 * p], s = inverse ? -ph[2 * p + 1] : ph[2 * p + 1];
                store_any(out, i, a * c - b * s, is_bf16);
                store_any(out, i + 1, a * s + b * c, is_bf16);
            }
        }
    }
}

/* mHC collapse (ops.reference.mixing.hc_collapse): x [T, hc, D] (bf16 or fp32), w [T, hc] fp32 -> out [T, D] fp32
 * = sum_i w_i X_i, summed in stream order like torch's reduction over the stream dim. */
void hc_collapse(const void *x, const float *w, float *out, int64_t T, int64_t hc, int64_t D, int is_bf16) {
    for (int64_t t = 0; t < T; t++) {
        float *o = out + t * D;
        for (int64_t d = 0; d < D; d++) o[d] = w[t * hc] * load_any(x, t * hc * D + d, is_bf16);
        for (int64_t i = 1; i < hc; i++) {
            float wi = w[t * hc + i];
            for (int64_t d = 0; d < D; d++) o[d] += wi * load_any(x, (t * hc + i) * D + d, is_bf16);
        }
    }
}

/* mHC post (ops.reference.mixing.hc_post): sublayer output f [T, D], streams x [T, hc, D] (both bf16 or both fp32),
 * post [T, hc], comb [T, hc(j), hc(k)] fp32 -> out [T, hc, D] in their dtype:
 * X'_k = post_k f + sum_j comb[j, k] X_j (the sum in stream order j, then added to the post term). */
void hc_post_apply(const void *f, const void *x, const float *post, const float *comb, void *out, int64_t T,
                   int64_t hc, int64_t D, int is_bf16, float *mixed) {
    for (int64_t t = 0; t < T; t++) {
        const float *ct = comb + t * hc * hc;
        for (int64_t k = 0; k < hc; k++) {
            for (int64_t d = 0; d < D; d++) mixed[d] = ct[k] * load_any(x, t * hc * D + d, is_bf16);
            for (int64_t j = 1; j < hc; j++) {
                float cjk = ct[j * hc + k];
                for (int64_t d = 0; d < D; d++) mixed[d] += cjk * load_any(x, (t * hc + j) * D + d, is_bf16);
            }
            float pk = post[t * hc + k];
            for (int64_t d = 0; d < D; d++)
                store_any(out, (t * hc + k) * D + d, pk * load_any(f, t * D + d, is_bf16) + mixed[d], is_bf16);
        }
    }
}

/* The indexer's Hadamard rotation (ops.reference.hadamard.hadamard_rotate): x [rows, n] (bf16 when is_bf16, else
 * fp32), n a power of two <= MAX_HADAMARD -> out [rows, n] in x's dtype = fp32(x @ H_n) * scale, rounded to x's
 * dtype (scale = fp32(n^-1/2)). The reference sums in an fp64 GEMM, exactly for these inputs (a +-1 sum of n bf16 or
 * fp32 values fits fp64's 53 bits unless their exponents spread over ~25+ binades); the fast Walsh-Hadamard
 * butterflies (log2 n stages of a + b, a - b in fp64, Sylvester order) sum the same terms, so they give the same
 * exact sums, in n log n adds instead of n^2 multiply-adds. */
#define MAX_HADAMARD 4096 /* a stack buffer of doubles per row */

void hadamard_rows(const void *x, void *out, int64_t rows, int64_t n, float scale, int is_bf16) {
    double v[MAX_HADAMARD];
    for (int64_t r = 0; r < rows; r++) {
        int64_t first = 1, j0 = 0; /* the first stage the scalar loop runs; the first value it loads / stores */
#if defined(KERNELS_AVX2)
        if (n >= F32_LANES) {
            for (; j0 < n; j0 += F32_LANES) { /* exact conversions to double */
                const __m256 f = is_bf16 ? bf16x8_to_f32((const uint16_t *)x + r * n + j0)
                                         : _mm256_loadu_ps((const float *)x + r * n + j0);
                _mm256_storeu_pd(v + j0, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
                _mm256_storeu_pd(v + j0 + F64_LANES, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
            }
            hadamard_avx2(v, n);
            first = n;
        }
#endif
        for (int64_t j = j0; j < n; j++) v[j] = (double)load_any(x, r * n + j, is_bf16);
        for (int64_t h = first; h < n; h <<= 1)
            for (int64_t i = 0; i < n; i += 2 * h)
                for (int64_t j = i; j < i + h; j++) {
                    const double a = v[j], b = v[j + h];
                    v[j] = a + b;
                    v[j + h] = a - b;
                }
#if defined(KERNELS_AVX2)
        for (j0 = 0; j0 + F32_LANES <= n; j0 += F32_LANES) { /* (float) rounds to nearest as _mm256_cvtpd_ps does */
            const __m256 f = _mm256_mul_ps(_mm256_set_m128(_mm256_cvtpd_ps(_mm256_loadu_pd(v + j0 + F64_LANES)),
                                                           _mm256_cvtpd_ps(_mm256_loadu_pd(v + j0))),
                                           _mm256_set1_ps(scale));
            if (is_bf16) store_bf16x8_nan((uint16_t *)out + r * n + j0, f);
            else _mm256_storeu_ps((float *)out + r * n + j0, f);
        }
#endif
        for (int64_t j = j0; j < n; j++) {
            const float f = (float)v[j] * scale;
            if (is_bf16) ((uint16_t *)out)[r * n + j] = isnan(f) ? (uint16_t)0x7FC0 : f32_to_bf16(f);
            else ((float *)out)[r * n + j] = f;
        }
    }
}
