/* One MoE layer of a decode step (routed + shared SwiGLU experts) in one call (loaded with ctypes by
 * v4stack/ops/fast/moe_decode.py): replaces ~25 torch ops and 9 GEMM calls per expert group with C loops, with the
 * rounding points of ops.fast.moe._expert_rows and the fp32 summation order of ops.fast.moe.moe_experts:
 *   gate, up = bf16(x W1^T), bf16(x W3^T)                       fp32 accumulation
 *   h = bf16(w * silu(min(gate, L)) * clamp(up, -L, L))          w = routing weight (1 for the shared expert)
 *   out = bf16(FP8qd(h) W2^T)
 *   y[t] = bf16(((0 + out[t, e_a]) + out[t, e_b] ...) + shared[t])   routed in ascending expert id
 * Weights are read in their checkpoint format by lowbit_gemm (this file includes the two kernel sources, so the
 * library carries its own copy of each; v4stack/ops/fast/kernels.py keys the cache on every csrc file). */
#include "lowbit_gemm.c"
#include "fast_kernels.c"

#include <stdlib.h>

#define WEIGHT_PTRS 6 /* per expert: w1, s1, w3, s3, w2, s2 (scale pointers 0 for bf16) */

/* Rows x [n, D] fp32 (already FP8 quant-dequantised) through one expert -> out [n, D] fp32 (bf16 values).
 * w: the expert's WEIGHT_PTRS pointers; rw: routing weights [n] or NULL; scratch: 4 * n * I + n * D floats and
 * 2 * n * I uint16. Returns 0, or -1 when lowbit_gemm cannot allocate its panel. */
static int expert_rows(const float *x, int64_t n, int64_t D, int64_t I, const int64_t *w, int fmt, int64_t block,
                       float limit, int64_t act_block, const float *rw, float *out, float *gate, float *up,
                       uint16_t *h16, uint16_t *hq16, float *hq, int nthreads) {
    if (lowbit_gemm(x, n, D, (const void *)w[0], (const uint8_t *)w[1], fmt, I, block, 0, gate, nthreads) ||
        lowbit_gemm(x, n, D, (const void *)w[2], (const uint8_t *)w[3], fmt, I, block, 0, up, nthreads))
        return -1;
    /* h in two passes: the scalar expf (libm's, one call per element) of the clamped gate into hq (free until the
     * act-quant), then the rest without calls, which the compiler vectorises (the same operations per element) */
    float *e = hq;
    for (int64_t j = 0; j < n * I; j++) {
        float g = round_bf16_f32(gate[j]);
        if (limit > 0.0f) g = g > limit ? limit : g;
        gate[j] = g;
        e[j] = expf(-g);
    }
    for (int64_t r = 0; r < n; r++) {
        const float w = rw ? rw[r] : 1.0f;
        for (int64_t i = 0; i < I; i++) {
            float g = gate[r * I + i], u = round_bf16_f32(up[r * I + i]);
            if (limit > 0.0f) u = u < -limit ? -limit : (u > limit ? limit : u);
            float h = g / (1.0f + e[r * I + i]) * u; /* torch's silu: x / (1 + e^-x) */
            if (rw) h = w * h;
            h16[r * I + i] = f32_to_bf16(h);
        }
    }
    act_quant(h16, hq16, n, I, act_block, 1);
    for (int64_t j = 0; j < n * I; j++) hq[j] = bf16_to_f32(hq16[j]);
    if (lowbit_gemm(hq, n, I, (const void *)w[4], (const uint8_t *)w[5], fmt, D, block, 0, out, nthreads)) return -1;
    for (int64_t j = 0; j < n * D; j++) out[j] = round_bf16_f32(out[j]);
    return 0;
}

/* x [T, D] fp32, experts [T, k] int64 in [0, E), rw [T, k] fp32; ptrs [(E + 1), WEIGHT_PTRS] int64 (row E: the
 * shared expert), fmts [E + 1]; y [T, D] bf16. Returns 0, -1 on allocation failure (y untouched then). */
int moe_decode(const float *x, int64_t T, int64_t D, int64_t I, const int64_t *experts, const float *rw, int64_t k,
               int64_t E, const int64_t *ptrs, const int *fmts, int64_t block, float limit, int64_t act_block,
               uint16_t *y, int nthreads) {
    int64_t pairs = T * k, rows_max = pairs > T ? pairs : T;
    float *xs = malloc(sizeof(float) * (size_t)(rows_max * D)), *ws = malloc(sizeof(float) * (size_t)pairs);
    float *outs = malloc(sizeof(float) * (size_t)(pairs * D)), *shared = malloc(sizeof(float) * (size_t)(T * D));
    float *scratch = malloc(sizeof(float) * (size_t)(3 * rows_max * I));
    uint16_t *s16 = malloc(sizeof(uint16_t) * (size_t)(2 * rows_max * I));
    int failed = !(xs && ws && outs && shared && scratch && s16);
    float *gate = scratch, *up = scratch + rows_max * I, *hq = scratch + 2 * rows_max * I;
    int64_t *slot_of = NULL;
    if (!failed) slot_of = malloc(sizeof(int64_t) * (size_t)pairs); /* pair p's row in outs */
    failed |= !slot_of;
    for (int64_t e = 0, start = 0; !failed && e < E; e++) { /* pairs grouped by expert, in pair order */
        int64_t n = 0;
        for (int64_t p = 0; p < pairs; p++) {
            if (experts[p] != e) continue;
            memcpy(xs + n * D, x + (p / k) * D, sizeof(float) * (size_t)D);
            ws[n] = rw[p];
            slot_of[p] = start + n;
            n++;
        }
        if (n && expert_rows(xs, n, D, I, ptrs + e * WEIGHT_PTRS, fmts[e], block, limit, act_block, ws,
                             outs + start * D, gate, up, s16, s16 + rows_max * I, hq, nthreads))
            failed = 1;
        start += n;
    }
    if (!failed && expert_rows(x, T, D, I, ptrs + E * WEIGHT_PTRS, fmts[E], block, limit, act_block, NULL, shared,
                               gate, up, s16, s16 + rows_max * I, hq, nthreads))
        failed = 1;
    if (!failed) {
        for (int64_t t = 0; t < T; t++) {
            const int64_t *et = experts + t * k;
            for (int64_t d = 0; d < D; d++) xs[d] = 0.0f;
            /* this token's slots in ascending (expert, slot) order: k is small (a selection sort) */
            for (int64_t done = 0, last_e = -1, last_j = -1; done < k; done++) {
                int64_t best = -1;
                for (int64_t j = 0; j < k; j++) {
                    int after = et[j] > last_e || (et[j] == last_e && j > last_j);
                    if (after && (best < 0 || et[j] < et[best])) best = j;
                }
                const float *o = outs + slot_of[t * k + best] * D;
                for (int64_t d = 0; d < D; d++) xs[d] += o[d];
                last_e = et[best];
                last_j = best;
            }
            for (int64_t d = 0; d < D; d++) y[t * D + d] = f32_to_bf16(xs[d] + shared[t * D + d]);
        }
    }
    free(xs); free(ws); free(outs); free(shared); free(scratch); free(s16); free(slot_of);
    return failed ? -1 : 0;
}

enum { LAYER_D, LAYER_I, LAYER_E, LAYER_PTRS, LAYER_FMTS, LAYER_BLOCK, LAYER_ACT_BLOCK, LAYER_PARAMS };

/* moe_decode from the layer's input before its FP8 quant-dequant: x [T, D] bf16 (x_bf16) or fp32, quantised here by
 * fast_kernels.c's act_quant (ops.fast.kernels.act_quant's C pass: the same values), then moe_decode. params
 * [LAYER_PARAMS] int64: D, I, E, the pointer table's and the format table's addresses, the weight block and the act
 * block (D % act_block == 0, act_block <= 1024: act_quant's buffer), fixed per layer (made once by
 * ops.fast.moe_kernel.prepare), so a call converts 8 arguments, not 15. Returns 0, -1 on allocation failure. */
int moe_decode_layer(const void *x, int x_bf16, int64_t T, const int64_t *experts, const float *rw, int64_t k,
                     const int64_t *params, float limit, uint16_t *y, int nthreads) {
    const int64_t D = params[LAYER_D];
    float *xf = malloc(sizeof(float) * (size_t)(T * D) + sizeof(uint16_t) * (size_t)(T * D));
    if (!xf) return -1;
    uint16_t *xq = (uint16_t *)(xf + T * D);
    act_quant(x, xq, T, D, params[LAYER_ACT_BLOCK], x_bf16);
    for (int64_t i = 0; i < T * D; i++) xf[i] = bf16_to_f32(xq[i]);
    int status = moe_decode(xf, T, D, params[LAYER_I], experts, rw, k, params[LAYER_E],
                            (const int64_t *)(intptr_t)params[LAYER_PTRS], (const int *)(intptr_t)params[LAYER_FMTS],
                            params[LAYER_BLOCK], limit, params[LAYER_ACT_BLOCK], y, nthreads);
    free(xf);
    return status;
}
