/* One linear of a decode step in one C call (loaded by v4stack/ops/fast/fused_linear.py): the activation's FP8
 * quant-dequant (or rounding to the compute dtype), the GEMM on the checkpoint bytes and the rounding of the fp32
 * result, with the values of the torch-side chain act_quant -> lowbit.matmul -> .to(dtype) it replaces (the same
 * act_quant arithmetic, the same lowbit_gemm, the same round-to-nearest-even). Saves ~6 torch ops and three Python
 * layers per linear (40 linears per step of the demo model). */
#include "lowbit_gemm.c"
#include "fast_kernels.c"

enum { ACT_QUANT_FP8 = 0, ACT_ROUND_BF16 = 1, ACT_AS_IS = 2 }; /* what happens to x before the GEMM */

static inline uint16_t to_bf16_any(float f) { /* torch's float -> bf16: nearest even, NaN stays a quiet NaN */
    return isnan(f) ? (uint16_t)0x7FC0 : f32_to_bf16(f);
}

/* x [M, K] (bf16 when x_bf16, else fp32) -> y [M, N] (bf16 when y_bf16, else fp32) = act(x) @ W^T.
 * act: ACT_QUANT_FP8 (blocks of act_block along K; K % act_block == 0, act_block <= 1024),
 * ACT_ROUND_BF16 (x rounded to bf16) or ACT_AS_IS. Returns 0, or -1 (scratch not allocated: y not written). */
int fused_linear(const void *x, int x_bf16, int64_t M, int64_t K, int act, int64_t act_block, const void *w,
                 const uint8_t *scale, int fmt, int64_t N, int64_t wblock, void *y, int y_bf16, int nthreads) {
    float *xbuf = (float *)malloc(sizeof(float) * (size_t)(M * K + (y_bf16 ? M * N : 0))); /* x, then fp32 y */
    if (!xbuf) return -1;
    float *ybuf = xbuf + M * K;
    if (act == ACT_QUANT_FP8) {
        uint16_t q[1024]; /* one block, as in act_quant's buffer */
        for (int64_t r = 0; r < M; r++)
            for (int64_t b0 = 0; b0 < K; b0 += act_block) {
                act_quant((const char *)x + (r * K + b0) * (x_bf16 ? 2 : 4), q, 1, act_block, act_block, x_bf16);
                for (int64_t i = 0; i < act_block; i++) xbuf[r * K + b0 + i] = bf16_to_f32(q[i]);
            }
    } else {
        for (int64_t i = 0; i < M * K; i++) {
            float v = x_bf16 ? bf16_to_f32(((const uint16_t *)x)[i]) : ((const float *)x)[i];
            xbuf[i] = (act == ACT_ROUND_BF16 && !x_bf16) ? bf16_to_f32(to_bf16_any(v)) : v;
        }
    }
    float *out = y_bf16 ? ybuf : (float *)y;
    int status = lowbit_gemm(xbuf, M, K, w, scale, fmt, N, wblock, 0, out, nthreads);
    if (status == 0 && y_bf16)
        for (int64_t i = 0; i < M * N; i++) ((uint16_t *)y)[i] = to_bf16_any(ybuf[i]);
    free(xbuf);
    return status;
}
