/* The attention sublayer's input path of a decode step in one C call (loaded by v4stack/ops/fast/attention_qkv.py),
 * with the values of the fast table's chain of narrow entries (ops.reference.attention_qkv.attention_qkv):
 *   qr = q_norm(wq_a x)                                   [T, q_lora]   fused_linear + rms_norm_rows
 *   q  = RoPE(rms_h(wq_b qr))                             [T, H, d]     per-head unweighted RMS in bf16 steps
 *   kv = FP8(RoPE(kv_norm(wkv x)))                        [T, d]        FP8 blocks on the non-rope dims
 * Each linear is described by 7 int64: act code, act block, weight address, scale address (0: none), format code,
 * output rows N, weight block (ops/fast/fused_linear.py's FUSED_PLAN). Bit-identical to that chain, the per-head
 * mean of squares aside: summed in fp32 in another order than torch's bf16 mean (the same value unless the fp32
 * sums straddle a bf16 rounding boundary). Plain C, no fast-math. */
#include "fused_linear.c"
#include "rms_norm.c"

#define HEAD_LANES 16 /* partial sums of a head's squares (the order differs from torch's mean: see the header) */

enum { LIN_ACT, LIN_ACT_BLOCK, LIN_W, LIN_SCALE, LIN_FMT, LIN_N, LIN_WBLOCK };

static int run_linear(const int64_t *lin, const uint16_t *x, int64_t T, int64_t K, uint16_t *y, int nthreads) {
    return fused_linear(x, 1, T, K, (int)lin[LIN_ACT], lin[LIN_ACT_BLOCK], (const void *)(intptr_t)lin[LIN_W],
                        (const uint8_t *)(intptr_t)lin[LIN_SCALE], (int)lin[LIN_FMT], lin[LIN_N], lin[LIN_WBLOCK], y,
                        1, nthreads);
}

/* x [T, D] bf16 (the normed sublayer input); norm weights bf16; phases [T, rd/2, 2] fp32 (cos, sin);
 * outputs bf16: qr [T, q_lora], q [T, H * d], kv [T, d]; scratch bf16 [T, max(q_lora, d)].
 * rsqrt_chunk: elements per pass of torch's vectorised bf16 loop (32 with AVX-512).
 * kv_block > 0: FP8 quant-dequant of kv's first d - rd dims in blocks of kv_block (the reference's KV QAT).
 * Returns 0, or -1 when a linear could not allocate its scratch (outputs incomplete: the caller falls back). */
int attention_qkv(const uint16_t *x, int64_t T, int64_t D, const int64_t *lin_qa, const int64_t *lin_qb,
                  const int64_t *lin_kv, const uint16_t *q_norm_w, const uint16_t *kv_norm_w, float eps, int64_t H,
                  int64_t d, int64_t rd, const float *phases, int64_t kv_block, uint16_t *qr, uint16_t *q,
                  uint16_t *kv, uint16_t *scratch, int64_t rsqrt_chunk, int nthreads) {
    int64_t q_lora = lin_qa[LIN_N];
    if (run_linear(lin_qa, x, T, D, scratch, nthreads)) return -1;
    rms_norm_rows(scratch, q_norm_w, qr, T, q_lora, eps, 1, 1);
    if (run_linear(lin_qb, qr, T, q_lora, q, nthreads)) return -1;
    /* q * rsqrt(mean(q^2) + eps) per head, each torch step's bf16 rounding: square, mean (fp32 sum / d), + eps,
     * rsqrt, product */
    for (int64_t r = 0; r < T * H; r++) {
        uint16_t *qh = q + r * d;
        int64_t vec_rows = rsqrt_chunk > 0 ? (T * H) / rsqrt_chunk * rsqrt_chunk : 0;
        float acc[HEAD_LANES] = {0};
        for (int64_t i = 0; i < d; i++) {
            float v = bf16_to_f32(qh[i]);
            acc[i % HEAD_LANES] += round_bf16_f32(v * v);
        }
        float s = 0.0f;
        for (int l = 0; l < HEAD_LANES; l++) s += acc[l];
        float mean = round_bf16_f32(s / (float)d);
        float m = round_bf16_f32(mean + eps);
        /* torch's bf16 rsqrt rounds once in its vector loop and twice (sqrt to bf16, then 1 / that) in the scalar
         * loop it runs on the last (T * H) % vec_rows elements */
        float inv = r < vec_rows ? round_bf16_f32(1.0f / sqrtf(m))
                                 : round_bf16_f32(1.0f / round_bf16_f32(sqrtf(m)));
        for (int64_t i = 0; i < d; i++) qh[i] = to_bf16_any(bf16_to_f32(qh[i]) * inv);
    }
    rope_apply(q, q, phases, T, H, d, rd, 0, 1); /* in place: each pair is read before it is written */
    if (run_linear(lin_kv, x, T, D, scratch, nthreads)) return -1;
    rms_norm_rows(scratch, kv_norm_w, kv, T, d, eps, 1, 1);
    rope_apply(kv, kv, phases, T, 1, d, rd, 0, 1);
    if (kv_block > 0)
        for (int64_t t = 0; t < T; t++)
            for (int64_t b0 = 0; b0 < d - rd; b0 += kv_block)
                act_quant(kv + t * d + b0, kv + t * d + b0, 1, kv_block, kv_block, 1); /* reads a block, then writes */
    return 0;
}

/* attention_qkv's per-layer constants in one int64 table (made once per layer by ops.fast.attention_qkv): D, H, d,
 * rd, kv_block, rsqrt_chunk, the two norm weights' addresses, then the three linears' 7 int64 each (wq_a, wq_b,
 * wkv). */
enum { QKV_D, QKV_HEADS, QKV_HEAD_DIM, QKV_ROPE_DIM, QKV_KV_BLOCK, QKV_RSQRT_CHUNK, QKV_Q_NORM, QKV_KV_NORM,
       QKV_LINEARS, LIN_FIELDS = LIN_WBLOCK + 1, QKV_PARAMS = QKV_LINEARS + 3 * LIN_FIELDS };

/* attention_qkv with its constants from params [QKV_PARAMS] and its scratch allocated here: a call converts 9
 * arguments, not 20, and allocates one tensor fewer. Returns 0, or -1 (no scratch, or a linear's). */
int attention_qkv_layer(const uint16_t *x, int64_t T, const int64_t *params, float eps, const float *phases,
                        uint16_t *qr, uint16_t *q, uint16_t *kv, int nthreads) {
    const int64_t *qa = params + QKV_LINEARS, *qb = qa + LIN_FIELDS, *kvl = qb + LIN_FIELDS;
    const int64_t q_lora = qa[LIN_N], d = params[QKV_HEAD_DIM];
    uint16_t *scratch = malloc(sizeof(uint16_t) * (size_t)(T * (q_lora > d ? q_lora : d)));
    if (!scratch) return -1;
    int status = attention_qkv(x, T, params[QKV_D], qa, qb, kvl, (const uint16_t *)(intptr_t)params[QKV_Q_NORM],
                               (const uint16_t *)(intptr_t)params[QKV_KV_NORM], eps, params[QKV_HEADS], d,
                               params[QKV_ROPE_DIM], phases, params[QKV_KV_BLOCK], qr, q, kv, scratch,
                               params[QKV_RSQRT_CHUNK], nthreads);
    free(scratch);
    return status;
}
