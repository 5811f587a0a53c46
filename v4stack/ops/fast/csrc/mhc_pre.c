/* mHC pre and head of a few rows in one call (loaded by v4stack/ops/fast/mhc_fused.py): the whole of
 * ops.reference.mixing.hc_pre (or hc_head) for streams x [T, hc, D] (bf16 or fp32):
 *   xf = fp32(flatten(x))                                    [T, K = hc*D]
 *   m  = (fn xf) * rsqrt(mean(xf^2) + norm_eps)              [T, N]  the GEMM in the golden order (ordered_gemm.c)
 *   pre/post/comb from m (hc_pre: split + Sinkhorn; hc_head: pre = sigmoid(m scale + base) + hc_eps only)
 *   y  = sum_i pre_i X_i in stream order, rounded to x's dtype [T, D]
 * The GEMM runs ordered_gemm.c's kernels with the orders Python passes, so the raw mixes are bit-identical to the
 * fast table's fp32_linear. What is not bit-identical to the reference: the mean of squares (summed in double,
 * then rounded once: within half an fp32 ulp of the exact mean, where torch's vector reduction is within a few
 * ulps) and the sigmoid / exp (libm expf, within 1 ulp, where torch calls Sleef / MKL VML, which round otherwise on
 * some inputs). Built with ordered_gemm.c's flags (-ffp-contract=off); no fast-math. */
#include "ordered_gemm.c" /* ordered_gemm, ordered_small_gemm, bf16_bits_to_f32, ORDER_SLOTS */

#ifdef __AVX2__
#include <immintrin.h>
#define COLLAPSE_LANES 8 /* d of the collapse per AVX2 vector */
#endif

#define MAX_HC_FUSED 16 /* kernels.MAX_HC: the comb buffer's side */
#define SPLIT_PARTS 2  /* pre and post vectors before the hc x hc comb matrix (model.mhc.MIX_SPLITS) */

static inline uint16_t mhc_f32_to_bf16(float f) { /* round to nearest even; finite inputs */
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float mhc_sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

#define TOKEN_LANES 16 /* tokens normalised side by side: one AVX-512 register of fp32, one lane per token */
#define FEW_TOKEN_LANES 8 /* the lanes normalised when at most 8 tokens are there (decode): one AVX2 register */
#define SQUARE_LANES 16 /* independent double partial sums of a row's squares (exact products; the order of the
                           few roundings of a double sum cannot move the fp32 mean by more than half an ulp) */

/* softmax over k (exp(c - max) / sum, + eps), a column normalisation, then (iters - 1) x (rows, columns), each with
 * + eps in the denominator: ops.reference.mixing.hc_split_sinkhorn's comb. c [hc][hc][TOKEN_LANES] in place (token
 * innermost, so every step is one vector operation over the tokens; the per-token arithmetic and its order are the
 * reference's): on entry the affine mixes, on exit the doubly-normalised comb. Lanes past the real tokens hold
 * zeros and are never read back. */
static inline __attribute__((always_inline)) void sinkhorn_lanes(float *c, int64_t hc, int64_t iters, float eps,
                                                                 int lanes) {
#define AT(j, k) (c + ((j) * hc + (k)) * TOKEN_LANES)
    float sum[TOKEN_LANES], peak[TOKEN_LANES];
    for (int64_t j = 0; j < hc; j++) {
        for (int l = 0; l < lanes; l++) peak[l] = -INFINITY;
        for (int64_t k = 0; k < hc; k++)
            for (int l = 0; l < lanes; l++) peak[l] = AT(j, k)[l] > peak[l] ? AT(j, k)[l] : peak[l];
        for (int64_t k = 0; k < hc; k++)
            for (int l = 0; l < lanes; l++) AT(j, k)[l] = expf(AT(j, k)[l] - peak[l]);
        for (int l = 0; l < lanes; l++) sum[l] = AT(j, 0)[l];
        for (int64_t k = 1; k < hc; k++)
            for (int l = 0; l < lanes; l++) sum[l] += AT(j, k)[l];
        for (int64_t k = 0; k < hc; k++)
            for (int l = 0; l < lanes; l++) AT(j, k)[l] = AT(j, k)[l] / sum[l] + eps;
    }
    for (int64_t it = 0; it < iters; it++) {
        if (it > 0)
            for (int64_t j = 0; j < hc; j++) { /* rows: sum over k */
                for (int l = 0; l < lanes; l++) sum[l] = AT(j, 0)[l];
                for (int64_t k = 1; k < hc; k++)
                    for (int l = 0; l < lanes; l++) sum[l] += AT(j, k)[l];
                for (int64_t k = 0; k < hc; k++)
                    for (int l = 0; l < lanes; l++) AT(j, k)[l] = AT(j, k)[l] / (sum[l] + eps);
            }
        for (int64_t k = 0; k < hc; k++) { /* columns: sum over j */
            for (int l = 0; l < lanes; l++) sum[l] = AT(0, k)[l];
            for (int64_t j = 1; j < hc; j++)
                for (int l = 0; l < lanes; l++) sum[l] += AT(j, k)[l];
            for (int64_t j = 0; j < hc; j++)
                for (int l = 0; l < lanes; l++) AT(j, k)[l] = AT(j, k)[l] / (sum[l] + eps);
        }
    }
#undef AT
}

/* sinkhorn_lanes over every lane, or over the first FEW_TOKEN_LANES when only `tokens` <= that many are real (the
 * lanes are independent: the same values, half the work at decode) */
static void sinkhorn_tokens(float *c, int64_t hc, int64_t iters, float eps, int64_t tokens) {
    if (tokens <= FEW_TOKEN_LANES) sinkhorn_lanes(c, hc, iters, eps, FEW_TOKEN_LANES);
    else sinkhorn_lanes(c, hc, iters, eps, TOKEN_LANES);
}

/* mean of the squares of x [K] in double (products exact), rounded once to fp32 */
static float mean_square(const float *x, int64_t K) {
    double acc[SQUARE_LANES] = {0};
    int64_t k = 0;
    for (; k + SQUARE_LANES <= K; k += SQUARE_LANES)
        for (int l = 0; l < SQUARE_LANES; l++) acc[l] += (double)x[k + l] * x[k + l];
    for (; k < K; k++) acc[0] += (double)x[k] * x[k];
    double s = 0.0;
    for (int l = 0; l < SQUARE_LANES; l++) s += acc[l];
    return (float)(s / (double)K);
}

/* y[at .. at + D) = sum_i pre_i X_i[d] (products rounded, then added in stream order), rounded to bf16 (y_bf16)
 * or stored as fp32; AVX2 does 8 d at a time with the same mul and add per lane */
static void collapse_token(const float *xt, const float *pre, int64_t hc, int64_t D, int y_bf16, void *y,
                           int64_t at) {
    int64_t d = 0;
#ifdef __AVX2__
    const __m256i half = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
    for (; d + COLLAPSE_LANES <= D; d += COLLAPSE_LANES) {
        __m256 acc = _mm256_mul_ps(_mm256_set1_ps(pre[0]), _mm256_loadu_ps(xt + d));
        for (int64_t i = 1; i < hc; i++)
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(pre[i]), _mm256_loadu_ps(xt + i * D + d)));
        if (y_bf16) { /* mhc_f32_to_bf16 per lane: u + 0x7fff + bit 16, the high half */
            __m256i u = _mm256_castps_si256(acc);
            u = _mm256_add_epi32(u, _mm256_add_epi32(half, _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
            u = _mm256_srli_epi32(u, 16); /* <= 0xffff: packus keeps it */
            _mm_storeu_si128((__m128i *)((uint16_t *)y + at + d),
                             _mm_packus_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1)));
        } else {
            _mm256_storeu_ps((float *)y + at + d, acc);
        }
    }
#endif
    for (; d < D; d++) {
        float acc = pre[0] * xt[d];
        for (int64_t i = 1; i < hc; i++) acc += pre[i] * xt[i * D + d];
        if (y_bf16) ((uint16_t *)y)[at + d] = mhc_f32_to_bf16(acc);
        else ((float *)y)[at + d] = acc;
    }
}

/* x [T, hc, D] (bf16 when x_bf16), fn [N, hc*D] fp32 with N = (2+hc)*hc (hc_pre) or hc (head, `head` = 1); the
 * GEMM order: with `orders` the small-row orders (orders, first_left_over as ordered_small_gemm takes them; Python
 * passes them below blas_order.BLOCKED_MIN_ROWS rows), with orders NULL blocks of `block` (ordered_gemm).
 * scale [3] (head: [1]), base [N]. Writes y [T, D] in x's dtype, and for hc_pre post [T, hc] and comb [T, hc, hc]
 * fp32. Returns 0, or -1 (nothing usable written) when the GEMM kernel refuses the orders, hc is above
 * MAX_HC_FUSED or memory runs out. */
int hc_pre_fused(const void *x, int x_bf16, int64_t T, int64_t hc, int64_t D, const float *fn, int64_t N,
                 const int32_t *orders, int64_t first_left_over, int64_t block, const float *scale,
                 const float *base, int64_t iters, float norm_eps, float hc_eps, int head, void *y, float *post,
                 float *comb, int threads) {
    const int64_t K = hc * D;
    if (hc > MAX_HC_FUSED) return -1;
    float *xf = (float *)malloc((size_t)(T * K + T * N + hc) * sizeof(float));
    if (xf == NULL) return -1;
    float *mixes = xf + T * K, *pre = mixes + T * N;
    for (int64_t i = 0; i < T * K; i++)
        xf[i] = x_bf16 ? bf16_bits_to_f32(((const uint16_t *)x)[i]) : ((const float *)x)[i];
    int done = orders != NULL
                   ? ordered_small_gemm(xf, T, K, fn, 0, N, first_left_over, orders, mixes, threads)
                   : ordered_gemm(xf, T, K, fn, 0, N, block, mixes, threads);
    if (done != 0) {
        free(xf);
        return -1;
    }
    float cbuf[MAX_HC_FUSED * MAX_HC_FUSED * TOKEN_LANES];
    for (int64_t t0 = 0; t0 < T; t0 += TOKEN_LANES) {
        const int64_t tn = T - t0 < TOKEN_LANES ? T - t0 : TOKEN_LANES;
        if (!head) memset(cbuf, 0, sizeof(float) * (size_t)(hc * hc * TOKEN_LANES));
        for (int64_t l = 0; l < tn; l++) { /* the RMS scale, pre / post and the comb's affine mixes */
            const int64_t t = t0 + l;
            float *m = mixes + t * N;
            const float r = 1.0f / sqrtf(mean_square(xf + t * K, K) + norm_eps);
            for (int64_t i = 0; i < N; i++) m[i] = m[i] * r;
            if (head) continue;
            for (int64_t i = 0; i < hc; i++) post[t * hc + i] = 2.0f * mhc_sigmoid(m[hc + i] * scale[1] + base[hc + i]);
            for (int64_t i = 0; i < hc * hc; i++)
                cbuf[i * TOKEN_LANES + l] = m[SPLIT_PARTS * hc + i] * scale[2] + base[SPLIT_PARTS * hc + i];
        }
        if (!head) {
            sinkhorn_tokens(cbuf, hc, iters, hc_eps, tn);
            for (int64_t l = 0; l < tn; l++)
                for (int64_t i = 0; i < hc * hc; i++) comb[(t0 + l) * hc * hc + i] = cbuf[i * TOKEN_LANES + l];
        }
        for (int64_t l = 0; l < tn; l++) { /* collapse: stream order, like torch's sum over the stream dim */
            const int64_t t = t0 + l;
            const float *xt = xf + t * K, *m = mixes + t * N;
            for (int64_t i = 0; i < hc; i++) pre[i] = mhc_sigmoid(m[i] * scale[0] + base[i]) + hc_eps;
            collapse_token(xt, pre, hc, D, x_bf16, y, t * D);
        }
    }
    free(xf);
    return 0;
}
