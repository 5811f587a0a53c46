/* RMSNorm of a few rows in one C pass (loaded by v4stack/ops/fast/norm.py): y = (x * rsqrt(mean(x^2) + eps)) * w
 * in fp32, rounded once to x's dtype, as torch's fp32 rms_norm computes it (the sum of squares in another fixed
 * order: an fp32 ulp of the statistic at most, under the bf16 output's rounding). Plain C, no fast-math.
 * Helper names are prefixed: csrc/attention_qkv.c includes this file beside fast_kernels.c. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define NORM_LANES 16 /* independent partial sums of the squares (one AVX-512 register) */

static inline float norm_bf16_to_f32(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t norm_to_bf16(float f) { /* nearest even; NaN stays a quiet NaN */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)0x7FC0;
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float norm_load(const void *p, int64_t i, int bf16) {
    return bf16 ? norm_bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* x [T, D] (bf16 when x_bf16, else fp32), w [D] (bf16 when w_bf16) -> out [T, D] in x's dtype. */
void rms_norm_rows(const void *x, const void *w, void *out, int64_t T, int64_t D, float eps, int x_bf16,
                   int w_bf16) {
    for (int64_t t = 0; t < T; t++) {
        float acc[NORM_LANES] = {0};
        int64_t i = 0;
        for (; i + NORM_LANES <= D; i += NORM_LANES)
            for (int l = 0; l < NORM_LANES; l++) {
                float v = norm_load(x, t * D + i + l, x_bf16);
                acc[l] += v * v;
            }
        for (; i < D; i++) {
            float v = norm_load(x, t * D + i, x_bf16);
            acc[i % NORM_LANES] += v * v;
        }
        float ss = 0.0f;
        for (int l = 0; l < NORM_LANES; l++) ss += acc[l];
        float r = 1.0f / sqrtf(ss / (float)D + eps);
        for (int64_t j = 0; j < D; j++) {
            float y = (norm_load(x, t * D + j, x_bf16) * r) * norm_load(w, j, w_bf16);
            if (x_bf16) ((uint16_t *)out)[t * D + j] = norm_to_bf16(y);
            else ((float *)out)[t * D + j] = y;
        }
    }
}
