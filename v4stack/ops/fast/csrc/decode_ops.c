/* Decode-sized kernels of the attention sublayer's bookkeeping (loaded by v4stack/ops/fast/decode_ops.py):
 * the lightning indexer's scores and top-k for one query per sequence, and the grouped wo_a projection of a few
 * rows. On these shapes torch's bf16 bmm costs ~25 us per call and ~350 us whenever the number of entries grows
 * (a fresh oneDNN primitive), and the top-k is a full stable sort; here each is one pass.
 * Plain C with AVX-512 and AVX2 blocks, no fast-math: every lane's fp32 sum runs in a fixed order (the vector
 * blocks hold the same lanes). */
#include "fast_kernels.c" /* bf16_to_f32, f32_to_bf16, round_bf16_f32 */

#define LANES 16 /* independent fp32 partial sums of a dot product (one AVX-512 register) */

/* sum_i a[i] b[i] of two bf16 vectors in fp32 (products exact in fp32): LANES partial sums, then added in order. */
static float dot_bf16(const uint16_t *a, const uint16_t *b, int64_t d) {
    float acc[LANES] = {0};
    int64_t i = 0;
#if defined(KERNELS_AVX2)
    /* acc[0..7] and acc[8..15] as two vectors: the same exact products added in the same order per lane */
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (; i + LANES <= d; i += LANES) {
        lo = _mm256_add_ps(lo, _mm256_mul_ps(bf16x8_to_f32(a + i), bf16x8_to_f32(b + i)));
        hi = _mm256_add_ps(hi, _mm256_mul_ps(bf16x8_to_f32(a + i + 8), bf16x8_to_f32(b + i + 8)));
    }
    _mm256_storeu_ps(acc, lo);
    _mm256_storeu_ps(acc + 8, hi);
#endif
    for (; i + LANES <= d; i += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += bf16_to_f32(a[i + l]) * bf16_to_f32(b[i + l]);
    for (; i < d; i++) acc[i % LANES] += bf16_to_f32(a[i]) * bf16_to_f32(b[i]);
    float s = 0.0f;
    for (int l = 0; l < LANES; l++) s += acc[l];
    return s;
}

#if defined(KERNELS_AVX2)
#define INDEX_KEYS 8      /* keys scored at once: one per lane of the head sum */
#define INDEX_MAX_DIM 512 /* the key block's fp32 copy lives on the stack (16 KiB; V4's index head dim is 128) */

/* v[l] <- (v[0][l], ..., v[7][l]): the 8 x 8 transpose of 8 vectors (moves only) */
static inline void transpose8(__m256 v[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        v[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        v[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/* decode_index_scores of INDEX_KEYS consecutive keys kb [INDEX_KEYS, d] (d % LANES == 0, d <= INDEX_MAX_DIM) for one
 * query qb [H, d] with head weights wb [H]: lane k of every vector below is key k's scalar computation. Per head,
 * dot_bf16's 16 lanes of the 8 keys (lanes 0-7 in one pass over d, 8-15 in a second), transposed so that its
 * in-order lane sum from +0 runs down the lanes; then the same bf16 roundings, the ReLU (max(v, 0) is
 * (v > 0 ? v : 0)) and the head sum in head order. */
static void index_scores_keys(const uint16_t *qb, const uint16_t *wb, const uint16_t *kb, int64_t H, int64_t d,
                              float *ob) {
    float kf[INDEX_KEYS * INDEX_MAX_DIM]; /* the keys as fp32, converted once for every head */
    for (int k = 0; k < INDEX_KEYS; k++)
        for (int64_t i = 0; i < d; i += F32_LANES) _mm256_storeu_ps(kf + k * d + i, bf16x8_to_f32(kb + k * d + i));
    const __m256 zero = _mm256_setzero_ps();
    __m256 total = zero;
    for (int64_t h = 0; h < H; h++) {
        const uint16_t *qh = qb + h * d;
        __m256 sum = zero;
        for (int half = 0; half < LANES / F32_LANES; half++) {
            __m256 acc[INDEX_KEYS];
            for (int k = 0; k < INDEX_KEYS; k++) acc[k] = zero;
            for (int64_t i = half * F32_LANES; i < d; i += LANES) {
                const __m256 qv = bf16x8_to_f32(qh + i);
                for (int k = 0; k < INDEX_KEYS; k++)
                    acc[k] = _mm256_add_ps(acc[k], _mm256_mul_ps(qv, _mm256_loadu_ps(kf + k * d + i)));
            }
            transpose8(acc); /* acc[l] lane k: key k's lane half * 8 + l */
            for (int l = 0; l < F32_LANES; l++) sum = _mm256_add_ps(sum, acc[l]);
        }
        const __m256 v = _mm256_max_ps(round_bf16x8(sum), zero);
        total = _mm256_add_ps(total, round_bf16x8(_mm256_mul_ps(_mm256_set1_ps(bf16_to_f32(wb[h])), v)));
    }
    _mm256_storeu_ps(ob, round_bf16x8(total));
}
#endif

/* I[b, s] = sum_h bf16(w[b, h] * bf16(relu(<q[b, h], keys[b, s]>))) for s < visible[b], -inf beyond: the torch
 * path's rounding points (bf16 GEMM output, bf16 product, head sum in fp32 rounded once to bf16).
 * q [B, H, d], w [B, H], keys [B, N, d] bf16; visible [B] int64 (clamped to N by the caller); out [B, N] fp32. */
void decode_index_scores(const uint16_t *q, const uint16_t *w, const uint16_t *keys, const int64_t *visible,
                         int64_t B, int64_t H, int64_t N, int64_t d, float *out) {
    const float neg_inf = -__builtin_inff();
    for (int64_t b = 0; b < B; b++) {
        const uint16_t *qb = q + b * H * d, *kb = keys + b * N * d;
        float *ob = out + b * N;
        int64_t s = 0;
#if defined(KERNELS_AVX2)
        if (d % LANES == 0 && d <= INDEX_MAX_DIM)
            for (; s + INDEX_KEYS <= visible[b]; s += INDEX_KEYS) index_scores_keys(qb, w + b * H, kb + s * d, H, d, ob + s);
#endif
        for (; s < N; s++) {
            if (s >= visible[b]) {
                ob[s] = neg_inf;
                continue;
            }
            float total = 0.0f;
            for (int64_t h = 0; h < H; h++) {
                float v = round_bf16_f32(dot_bf16(qb + h * d, kb + s * d, d));
                v = v > 0.0f ? v : 0.0f;
                total += round_bf16_f32(bf16_to_f32(w[b * H + h]) * v);
            }
            ob[s] = round_bf16_f32(total);
        }
    }
}

/* Row r's k largest of scores[r, 0 : visible[r]] (fp32, finite), by descending score, equal scores lower index
 * first (a stable descending sort's order), then -1 for the slots past the visible entries.
 * scores [R, N]; visible [R] (clamped to N by the caller); out [R, k] int64; scratch [k] fp32. Insertion into
 * the running top-k: O(N k) per row, fine for the decode rows this serves. */
void index_topk_rows(const float *scores, const int64_t *visible, int64_t R, int64_t N, int64_t k, int64_t *out,
                     float *scratch) {
    for (int64_t r = 0; r < R; r++) {
        const float *sr = scores + r * N;
        int64_t *idx = out + r * k;
        int64_t held = 0;
        for (int64_t s = 0; s < visible[r]; s++) {
            float v = sr[s];
            if (held == k && !(v > scratch[k - 1])) continue; /* ties keep the earlier (lower) index */
            int64_t j = held < k ? held++ : k - 1;
            while (j > 0 && v > scratch[j - 1]) {
                scratch[j] = scratch[j - 1];
                idx[j] = idx[j - 1];
                j--;
            }
            scratch[j] = v;
            idx[j] = s;
        }
        for (int64_t j = held; j < k; j++) idx[j] = -1;
    }
}

#if defined(__AVX512F__)
#define GROUPED_CHAINS 4          /* weight rows per pass: independent add chains hide the add latency */
#define GROUPED_PREFETCH_BYTES 2048 /* ahead of each weight row read (rows are 2 KiB at the real shape) */

static inline __m512 bf16x16_vec(const uint16_t *p) { /* 16 bf16 -> fp32 (exact) */
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

/* GROUPED_CHAINS outputs of dot_bf16 at once for J a multiple of LANES: vector lane l is dot_bf16's acc[l] (the same
 * exact products added in the same order), then the same in-order lane sum. */
static void dot_bf16_rows(const uint16_t *a, const uint16_t *w, int64_t J, float *out) {
    __m512 acc[GROUPED_CHAINS];
    for (int q = 0; q < GROUPED_CHAINS; q++) acc[q] = _mm512_setzero_ps();
    for (int64_t k = 0; k < J; k += LANES) {
        if ((k & 31) == 0) /* one prefetch per 64-byte line of each row */
            for (int q = 0; q < GROUPED_CHAINS; q++)
                _mm_prefetch((const char *)(w + q * J + k) + GROUPED_PREFETCH_BYTES, _MM_HINT_T0);
        const __m512 av = bf16x16_vec(a + k);
        for (int q = 0; q < GROUPED_CHAINS; q++)
            acc[q] = _mm512_add_ps(acc[q], _mm512_mul_ps(av, bf16x16_vec(w + q * J + k)));
    }
    for (int q = 0; q < GROUPED_CHAINS; q++) {
        float lanes[LANES];
        _mm512_storeu_ps(lanes, acc[q]);
        float s = 0.0f;
        for (int l = 0; l < LANES; l++) s += lanes[l];
        out[q] = s;
    }
}
#elif defined(KERNELS_AVX2)
#define GROUPED_CHAINS 4 /* weight rows per pass: 4 rows x 2 vectors, independent add chains hide the add latency */

/* GROUPED_CHAINS outputs of dot_bf16 at once for J a multiple of LANES: the vectors of row q hold dot_bf16's acc[0..7]
 * and acc[8..15] (the same exact products added in the same order), then the same in-order lane sum. */
static void dot_bf16_rows(const uint16_t *a, const uint16_t *w, int64_t J, float *out) {
    __m256 acc[GROUPED_CHAINS][2];
    for (int q = 0; q < GROUPED_CHAINS; q++) acc[q][0] = acc[q][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < J; k += LANES) {
        const __m256 a0 = bf16x8_to_f32(a + k), a1 = bf16x8_to_f32(a + k + 8);
        for (int q = 0; q < GROUPED_CHAINS; q++) {
            acc[q][0] = _mm256_add_ps(acc[q][0], _mm256_mul_ps(a0, bf16x8_to_f32(w + q * J + k)));
            acc[q][1] = _mm256_add_ps(acc[q][1], _mm256_mul_ps(a1, bf16x8_to_f32(w + q * J + k + 8)));
        }
    }
    for (int q = 0; q < GROUPED_CHAINS; q++) {
        float lanes[LANES];
        _mm256_storeu_ps(lanes, acc[q][0]);
        _mm256_storeu_ps(lanes + 8, acc[q][1]);
        float s = 0.0f;
        for (int l = 0; l < LANES; l++) s += lanes[l];
        out[q] = s;
    }
}

#define GROUPED_TOKENS 4   /* tokens per pass sharing each weight row's conversion: 4 x 2 accumulators */
#define GROUPED_MAX_J 2048 /* the tokens' fp32 copy lives on the stack (32 KiB; the real shape's J is 1024) */

/* sums[u] = dot_bf16(token u, w) for GROUPED_TOKENS tokens a [GROUPED_TOKENS, J] (their bf16 values as fp32) and
 * one weight row w [J] bf16, J a multiple of LANES: the vectors of token u hold dot_bf16's acc[0..7] and acc[8..15]
 * (the same exact products added in the same order), then the same in-order lane sum. */
static void dot_tokens_row(const float *a, const uint16_t *w, int64_t J, float *sums) {
    __m256 acc[GROUPED_TOKENS][2];
    for (int u = 0; u < GROUPED_TOKENS; u++) acc[u][0] = acc[u][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < J; k += LANES) {
        const __m256 w0 = bf16x8_to_f32(w + k), w1 = bf16x8_to_f32(w + k + 8);
        for (int u = 0; u < GROUPED_TOKENS; u++) {
            acc[u][0] = _mm256_add_ps(acc[u][0], _mm256_mul_ps(_mm256_loadu_ps(a + u * J + k), w0));
            acc[u][1] = _mm256_add_ps(acc[u][1], _mm256_mul_ps(_mm256_loadu_ps(a + u * J + k + 8), w1));
        }
    }
    for (int u = 0; u < GROUPED_TOKENS; u++) {
        float lanes[LANES];
        _mm256_storeu_ps(lanes, acc[u][0]);
        _mm256_storeu_ps(lanes + 8, acc[u][1]);
        float s = 0.0f;
        for (int l = 0; l < LANES; l++) s += lanes[l];
        sums[u] = s;
    }
}

/* grouped_output_rows for tokens t0 .. t0 + GROUPED_TOKENS (J % LANES == 0, J <= GROUPED_MAX_J): each weight row
 * read and converted once for the block's tokens instead of once per token. */
static void grouped_token_block(const uint16_t *o, const uint16_t *w, int64_t t0, int64_t G, int64_t R, int64_t J,
                                uint16_t *out) {
    float a[GROUPED_TOKENS * GROUPED_MAX_J];
    for (int64_t g = 0; g < G; g++) {
        for (int u = 0; u < GROUPED_TOKENS; u++)
            for (int64_t k = 0; k < J; k++) a[u * J + k] = bf16_to_f32(o[((t0 + u) * G + g) * J + k]);
        for (int64_t i = 0; i < R; i++) {
            float sums[GROUPED_TOKENS];
            dot_tokens_row(a, w + (g * R + i) * J, J, sums);
            for (int u = 0; u < GROUPED_TOKENS; u++) out[((t0 + u) * G + g) * R + i] = f32_to_bf16(sums[u]);
        }
    }
}
#endif

/* The block-diagonal wo_a: out[t, g * r + i] = bf16(sum_j o[t, g, j] w[g, i, j]), o [T, G, J], w [G, R, J]
 * bf16 (J = H / G * d), out [T, G * R] bf16; each sum is dot_bf16's tree. */
void grouped_output_rows(const uint16_t *o, const uint16_t *w, int64_t T, int64_t G, int64_t R, int64_t J,
                         uint16_t *out) {
    int64_t t = 0;
#if defined(KERNELS_AVX2)
    if (J % LANES == 0 && J <= GROUPED_MAX_J)
        for (; t + GROUPED_TOKENS <= T; t += GROUPED_TOKENS) grouped_token_block(o, w, t, G, R, J, out);
#endif
    for (; t < T; t++)
        for (int64_t g = 0; g < G; g++) {
            const uint16_t *og = o + (t * G + g) * J;
            int64_t i = 0;
#if defined(__AVX512F__) || defined(KERNELS_AVX2)
            if (J % LANES == 0)
                for (; i + GROUPED_CHAINS <= R; i += GROUPED_CHAINS) {
                    float sums[GROUPED_CHAINS];
                    dot_bf16_rows(og, w + (g * R + i) * J, J, sums);
                    for (int q = 0; q < GROUPED_CHAINS; q++) out[(t * G + g) * R + i + q] = f32_to_bf16(sums[q]);
                }
#endif
            for (; i < R; i++) out[(t * G + g) * R + i] = f32_to_bf16(dot_bf16(og, w + (g * R + i) * J, J));
        }
}
