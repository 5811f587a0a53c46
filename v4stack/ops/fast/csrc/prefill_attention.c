/* Prefill sparse attention over listed key rows only (loaded by v4stack/ops/fast/prefill_attention.py).
 *
 * The dense torch form (ops.fast.attention.sliced_attention) scores every query against every key row of its
 * context slice and then gathers the listed slots: ~4x the scores a CSA layer's 2K prompt needs (each query lists
 * its 128 window rows and its top-k entries out of ~2,600 rows). Here each query reads the rows its index list
 * names, in place from the key segments (dense rows or cache-pool slots, ops.key_rows.KeyRows), scores them for
 * every head from one read of the row, and accumulates P.V in list order. Scores and weights are the decode
 * kernel's (fast_kernels.c decode_attention_parts: exact q.k, blocked_weights); P.V sums in double instead of
 * fp32 (each product w_j k_j is exact in double, the sum over K slots rounds far below fp32), one rounding to
 * fp32 before the division: closer to the reference's exact per-block sums than an fp32 chain over ~640 slots.
 * Memory: H * K + d floats, 2 H d + 4 K doubles and K row pointers of scratch. AVX-512 blocks, AVX2 + FMA blocks
 * (KERNELS_AVX2: 4 doubles a vector, so 8-dim P.V blocks and exact_dot's own lane order for q.k) and plain C
 * elsewhere, all giving the same bits; no fast-math, no contraction (-std=c11). */
#include "fast_kernels.c" /* bf16_to_f32, f32_to_bf16, exact_dot, blocked_weights; AVX2: exact_dot_heads */

#define HEAD_BLOCK 4     /* heads scored / accumulated per read of a key row (V4: 64 or 128 heads, tests: 2) */
#define DIM_BLOCK 32     /* P.V output dims per register block: HEAD_BLOCK x 4 vectors of 8 doubles */
#define DOT_STEP 16      /* key dims per step of the AVX-512 exact dot: one 16-float load, two 8-double halves */
#define AVX2_DIM_BLOCK 8 /* P.V output dims per AVX2 register block: HEAD_BLOCK x 2 vectors of 4 doubles (8 of the
                          * 16 ymm registers; a 16-dim block would need all 16 for the sums alone) */
#define PV_ROW_CHUNK 64  /* key rows per pass of the AVX2 P.V over every dim block (see weighted_rows) */

/* Key segment p of the logical matrix: sizes[p] rows, row r at bases[p] + (slots[p] ? slots[p][r] : r) *
 * strides[p] elements (bf16). Logical row ids run through the segments in order. */
typedef struct {
    const int64_t *bases, *slots, *sizes, *strides;
    int64_t parts;
} Segments;

static inline const uint16_t *segment_row(const Segments *seg, int64_t id) {
    for (int64_t p = 0; p < seg->parts; p++) {
        if (id < seg->sizes[p]) {
            const int64_t *slots = (const int64_t *)seg->slots[p];
            int64_t row = slots ? slots[id] : id;
            return (const uint16_t *)seg->bases[p] + row * seg->strides[p];
        }
        id -= seg->sizes[p];
    }
    return 0; /* the caller checked every id < total rows */
}

#if defined(__AVX512F__)
static inline __m512 load_bf16x16(const uint16_t *p) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

/* scores of HEAD_BLOCK heads (qd [HEAD_BLOCK, d] doubles) against one bf16 key row: exact q.k in double (every
 * product exact, so the 2 x HEAD_BLOCK partial sums give the same double as exact_dot), d % DOT_STEP == 0. */
static inline void dot_heads(const double *qd, const uint16_t *kr, int64_t d, double *dots) {
    __m512d acc[HEAD_BLOCK][2];
    for (int h = 0; h < HEAD_BLOCK; h++) acc[h][0] = acc[h][1] = _mm512_setzero_pd();
    for (int64_t i = 0; i < d; i += DOT_STEP) {
        __m512 k = load_bf16x16(kr + i);
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(k));
        __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(k), 1)));
        for (int h = 0; h < HEAD_BLOCK; h++) {
            acc[h][0] = _mm512_fmadd_pd(_mm512_loadu_pd(qd + h * d + i), lo, acc[h][0]);
            acc[h][1] = _mm512_fmadd_pd(_mm512_loadu_pd(qd + h * d + i + 8), hi, acc[h][1]);
        }
    }
    for (int h = 0; h < HEAD_BLOCK; h++) dots[h] = _mm512_reduce_add_pd(_mm512_add_pd(acc[h][0], acc[h][1]));
}

/* out[h, i0 .. i0 + DIM_BLOCK) for HEAD_BLOCK heads = fp32(sum_j w[h, j] k_j) / denom[h], the sum in double in
 * list order (exact products: a fused multiply-add rounds like the scalar path's add). w [HEAD_BLOCK rows of
 * stride K]. */
static inline void pv_block(const uint16_t *const *rowp, const float *w, int64_t K, int64_t i0, const float *denom,
                            uint16_t *out, int64_t d) {
    __m512d acc[HEAD_BLOCK][4];
    for (int h = 0; h < HEAD_BLOCK; h++) acc[h][0] = acc[h][1] = acc[h][2] = acc[h][3] = _mm512_setzero_pd();
    for (int64_t j = 0; j < K; j++) {
        if (!rowp[j]) continue;
        __m512 k0 = load_bf16x16(rowp[j] + i0), k1 = load_bf16x16(rowp[j] + i0 + 16);
        __m512d kd[4] = {_mm512_cvtps_pd(_mm512_castps512_ps256(k0)),
                         _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(k0), 1))),
                         _mm512_cvtps_pd(_mm512_castps512_ps256(k1)),
                         _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(k1), 1)))};
        for (int h = 0; h < HEAD_BLOCK; h++) {
            __m512d wj = _mm512_set1_pd((double)w[h * K + j]);
            for (int v = 0; v < 4; v++) acc[h][v] = _mm512_fmadd_pd(wj, kd[v], acc[h][v]);
        }
    }
    double lanes[DIM_BLOCK];
    for (int h = 0; h < HEAD_BLOCK; h++) {
        for (int v = 0; v < 4; v++) _mm512_storeu_pd(lanes + 8 * v, acc[h][v]);
        for (int l = 0; l < DIM_BLOCK; l++) out[h * d + i0 + l] = f32_to_bf16((float)lanes[l] / denom[h]);
    }
}
#elif defined(KERNELS_AVX2)
/* acc[h * d + i0 .. + AVX2_DIM_BLOCK) += w[j, h] k_j for HEAD_BLOCK heads and the rows j0 <= j < j1, in list
 * order; w [K, HEAD_BLOCK] doubles (the fp32 weights, exactly). Per output dim this is the scalar loop's double
 * chain (exact products w_j k_j, so each fused multiply-add rounds like its add), split into row chunks whose sums
 * wait in acc (a plain load and store: the same doubles). */
static inline void pv_rows(const uint16_t *const *rowp, const double *w, int64_t j0, int64_t j1,
                           int64_t i0, double *acc, int64_t d) {
    __m256d a[HEAD_BLOCK][2];
    for (int h = 0; h < HEAD_BLOCK; h++) {
        a[h][0] = _mm256_loadu_pd(acc + h * d + i0);
        a[h][1] = _mm256_loadu_pd(acc + h * d + i0 + 4);
    }
    for (int64_t j = j0; j < j1; j++) {
        if (!rowp[j]) continue;
        __m256 k = bf16x8_to_f32(rowp[j] + i0);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(k)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(k, 1));
        for (int h = 0; h < HEAD_BLOCK; h++) {
            __m256d wj = _mm256_broadcast_sd(w + j * HEAD_BLOCK + h);
            a[h][0] = _mm256_fmadd_pd(wj, lo, a[h][0]);
            a[h][1] = _mm256_fmadd_pd(wj, hi, a[h][1]);
        }
    }
    for (int h = 0; h < HEAD_BLOCK; h++) {
        _mm256_storeu_pd(acc + h * d + i0, a[h][0]);
        _mm256_storeu_pd(acc + h * d + i0 + 4, a[h][1]);
    }
}
#endif

/* One query's scores s [H, K] (-inf at empty slots) from qd [H, d] and its rows; kf [d] floats of scratch. */
static void score_rows(const double *qd, const uint16_t *const *rowp, int64_t H, int64_t K, int64_t d, float scale,
                       float *s, float *kf) {
    for (int64_t j = 0; j < K; j++) {
        if (!rowp[j]) {
            for (int64_t h = 0; h < H; h++) s[h * K + j] = -INFINITY;
            continue;
        }
        int64_t h = 0;
#if defined(__AVX512F__)
        if (d % DOT_STEP == 0) {
            double dots[HEAD_BLOCK];
            for (; h + HEAD_BLOCK <= H; h += HEAD_BLOCK) {
                dot_heads(qd + h * d, rowp[j], d, dots);
                for (int l = 0; l < HEAD_BLOCK; l++) s[(h + l) * K + j] = (float)dots[l] * scale;
            }
        }
#elif defined(KERNELS_AVX2)
        double dots[DOT_HEADS]; /* fast_kernels.c's AVX2 q.k of DOT_HEADS heads, each exact_dot's double */
        if (j + 1 < K && rowp[j + 1]) prefetch_row(rowp[j + 1], d); /* a random row: no stream for the hardware */
        for (; h + DOT_HEADS <= H; h += DOT_HEADS) {
            exact_dot_heads(qd + h * d, rowp[j], d, dots);
            for (int l = 0; l < DOT_HEADS; l++) s[(h + l) * K + j] = (float)dots[l] * scale;
        }
#endif
        if (h < H) {
            for (int64_t i = 0; i < d; i++) kf[i] = bf16_to_f32(rowp[j][i]);
            for (; h < H; h++) s[h * K + j] = (float)exact_dot(qd + h * d, kf, d) * scale;
        }
    }
}

/* out [H, d] bf16 = fp32(sum_j w[h, j] k_j) / denom[h] over the listed rows in list order, summed in double;
 * scratch: acc [H * d] doubles (the sums of the heads the AVX-512 blocks do not take), wd [HEAD_BLOCK * K]
 * doubles (the AVX2 blocks' weights, slot-major: one broadcast load each). */
static void weighted_rows(const uint16_t *const *rowp, const float *w, const float *denom, int64_t H, int64_t K,
                          int64_t d, uint16_t *out, double *acc, double *wd) {
    (void)wd; /* used by the AVX2 blocks only */
    int64_t h0 = 0;
#if defined(__AVX512F__)
    if (d % DIM_BLOCK == 0)
        for (; h0 + HEAD_BLOCK <= H; h0 += HEAD_BLOCK)
            for (int64_t i0 = 0; i0 < d; i0 += DIM_BLOCK)
                pv_block(rowp, w + h0 * K, K, i0, denom + h0, out + h0 * d, d);
#endif
    for (int64_t i = h0 * d; i < H * d; i++) acc[i] = 0.0;
    int64_t h = h0;
#if defined(KERNELS_AVX2)
    /* chunks of PV_ROW_CHUNK rows (~64 KiB of keys at d = 512: they stay in L2 while every 8-dim block of them is
     * summed; a whole list, ~640 KiB, would come from L3 once per block) */
    if (d % AVX2_DIM_BLOCK == 0)
        for (; h + HEAD_BLOCK <= H; h += HEAD_BLOCK) {
            for (int64_t j = 0; j < K; j++)
                for (int l = 0; l < HEAD_BLOCK; l++) wd[j * HEAD_BLOCK + l] = w[(h + l) * K + j];
            for (int64_t j0 = 0; j0 < K; j0 += PV_ROW_CHUNK) {
                int64_t j1 = j0 + PV_ROW_CHUNK < K ? j0 + PV_ROW_CHUNK : K;
                for (int64_t i0 = 0; i0 < d; i0 += AVX2_DIM_BLOCK)
                    pv_rows(rowp, wd, j0, j1, i0, acc + h * d, d);
            }
        }
#endif
    for (; h < H; h++) {
        double *ah = acc + h * d;
        for (int64_t j = 0; j < K; j++) {
            if (!rowp[j]) continue;
            double wj = w[h * K + j];
            for (int64_t i = 0; i < d; i++) ah[i] += wj * (double)bf16_to_f32(rowp[j][i]);
        }
    }
    for (int64_t i = h0 * d; i < H * d; i++) out[i] = f32_to_bf16((float)acc[i] / denom[i / d]);
}

/* q [S, H, d] bf16, idx [S, K] int64 (-1 empty; else < the segments' total rows), sink [H] fp32 -> out [S, H, d]
 * bf16 (ops.reference.attention.sparse_attention with round_probs). Key segments as in Segments (bf16, rows of d
 * contiguous elements). scratch: H * K + d floats; qd: 2 H d + HEAD_BLOCK K doubles (the query, P.V's sums, the
 * AVX2 blocks' weights); rowp: K pointers. */
void prefill_sparse_attention(const uint16_t *q, int64_t S, int64_t H, int64_t d, const int64_t *bases,
                              const int64_t *slots, const int64_t *sizes, const int64_t *strides, int64_t parts,
                              const int64_t *idx, int64_t K, const float *sink, float scale, uint16_t *out,
                              float *scratch, double *qd, const uint16_t **rowp) {
    Segments seg = {bases, slots, sizes, strides, parts};
    float *s = scratch, *kf = scratch + H * K;
    double *acc = qd + H * d, *wd = qd + 2 * H * d;
    float denom[H];
    for (int64_t t = 0; t < S; t++) {
        const uint16_t *qt = q + t * H * d;
        for (int64_t i = 0; i < H * d; i++) qd[i] = (double)bf16_to_f32(qt[i]);
        for (int64_t j = 0; j < K; j++) {
            int64_t id = idx[t * K + j];
            rowp[j] = id >= 0 ? segment_row(&seg, id) : 0;
        }
        score_rows(qd, rowp, H, K, d, scale, s, kf);
        for (int64_t h = 0; h < H; h++) denom[h] = blocked_weights(s + h * K, K, sink[h]);
        weighted_rows(rowp, s, denom, H, K, d, out + t * H * d, acc, wd);
    }
}
