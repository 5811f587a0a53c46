/* fp32 GEMM in one fixed summation order (loaded with ctypes by v4stack/ops/fast/ordered_gemm.py):
 *   y[t, n] = s_0 + s_1 + ... (block sums added in K order, fp32 adds),
 *   s_b     = fma(x[t, k_last], w[n, k_last], ... fma(x[t, k_first], w[n, k_first], 0))  over block b's k,
 * the order of v4stack/ops/reference/blas_order.py (blocked_fma_linear). Every output is its own chain, so the
 * kernel vectorises across output columns: a lane of a vector register is one output n, and a chain's terms are
 * added in k order whatever the tiling, the thread count or the CPU (fmaf / vfmadd round once, as IEEE says).
 * x fp32 [M, K] row-major; w [N, K] row-major in fp32 or bf16 (bf16 -> fp32 is exact); y fp32 [M, N].
 * Built with -ffp-contract=off: the block sums' adds must stay adds. AVX-512 where the compiler targets it
 * (-march=native), else AVX2 + FMA where it targets those (ordered_gemm_avx2.h: AMD Zen, -march=x86-64-v3), plain C
 * with fmaf otherwise (same values). No fast-math. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#define ORDERED_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#define ORDERED_AVX2 1
#endif

#define NP 32         /* output columns per panel: two 16-lane vectors, one chain per lane */
#ifdef ORDERED_AVX2
#define MR 6          /* rows per micro-tile of half a panel: ordered_gemm_avx2.h */
#else
#define MR 12         /* rows per micro-tile: 12 x 2 accumulators + 2 weight vectors + 1 broadcast of the 32 vector
                         registers (measured, 1 thread: 135 vs 120 GFLOP/s for 8 rows at 2048 x 4096 x 1024) */
#endif
#define ROW_CHUNK 384 /* rows per work item (32 micro-tiles): packing a panel block costs ~1/3 of computing 96
                         rows with it, so a chunk reuses it for many rows; x's chunk x block (384 x 192 fp32,
                         288 KiB) stays in L2 across the panels */
#define PARALLEL_MIN_FMAS (1 << 22) /* below ~4M fmas (~40 us on one core) one thread: waking and joining the
                                       OpenMP team costs more than it saves, and much more on a loaded machine */

static inline float bf16_bits_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Scalar packing of w rows [n0 + j0, n0 + j1) x columns [k0, k0 + kb) into p[kb][NP] (columns j0..j1-1). */
static void pack_scalar(const void *w, int w_bf16, int64_t K, int64_t n0, int64_t j0, int64_t j1, int64_t k0,
                        int64_t kb, float *p) {
    for (int64_t j = j0; j < j1; j++) {
        if (w_bf16) {
            const uint16_t *row = (const uint16_t *)w + (n0 + j) * K + k0;
            for (int64_t k = 0; k < kb; k++) p[k * NP + j] = bf16_bits_to_f32(row[k]);
        } else {
            const float *row = (const float *)w + (n0 + j) * K + k0;
            for (int64_t k = 0; k < kb; k++) p[k * NP + j] = row[k];
        }
    }
}

#ifdef ORDERED_AVX2
#include "ordered_gemm_avx2.h" /* avx2_pack, tile_avx2 */
#endif

#ifdef ORDERED_AVX512
/* 16 rows of 16 columns -> r[c] = column c of the 16 rows (an in-register transpose: 64 shuffles for 256 values,
 * against one scattered 4-byte store per value in pack_scalar, which dominated the head's cost at 8-16 rows). */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {  /* per 128-bit lane L: t[2i] = a0 b0 a1 b1, t[2i+1] = a2 b2 a3 b3 */
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {  /* u[4i + c], lane L: rows 4i .. 4i+3 at column 4L + c */
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        const __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int c = 0; c < 4; c++) {  /* gather lane L of u[c], u[4+c], u[8+c], u[12+c] into column 4L + c */
        const __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88), v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
        const __m512 w1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xdd), w2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xdd);
        r[c] = _mm512_shuffle_f32x4(v1, v2, 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(v1, v2, 0xdd);
        r[4 + c] = _mm512_shuffle_f32x4(w1, w2, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(w1, w2, 0xdd);
    }
}
#endif

/* w rows [n0, n0 + np) x columns [k0, k0 + kb) transposed into p[kb][NP] (w has N rows); columns np..NP-1 are
 * zero (computed, never stored). Values are copied exactly (bf16 -> fp32 by placing the bits), so packing never
 * changes a sum. */
static void pack_panel(const void *w, int w_bf16, int64_t K, int64_t N, int64_t n0, int64_t np, int64_t k0,
                       int64_t kb, float *p) {
    int64_t j_done = 0;
#ifdef ORDERED_AVX512
    int64_t k_done = 0;
    for (; j_done + 16 <= np; j_done += 16) {  /* full groups of 16 rows, 16 columns at a time */
        int64_t k = 0;
        for (; k + 16 <= kb; k += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++) {
                const int64_t at = (n0 + j_done + i) * K + k0 + k;
                r[i] = w_bf16 ? _mm512_castsi512_ps(_mm512_slli_epi32(
                                    _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + at))), 16))
                              : _mm512_loadu_ps((const float *)w + at);
            }
            transpose16(r);
            for (int c = 0; c < 16; c++) _mm512_storeu_ps(p + (k + c) * NP + j_done, r[c]);
        }
        k_done = k;
    }
    if (j_done > 0 && k_done < kb)  /* the columns past the last multiple of 16, for the rows done above */
        pack_scalar(w, w_bf16, K, n0, 0, j_done, k0 + k_done, kb - k_done, p + k_done * NP);
#elif defined(ORDERED_AVX2)
    int64_t k_done = 0;
    j_done = avx2_pack(w, w_bf16, K, N, n0, np, k0, kb, p, &k_done);
    if (j_done > 0 && k_done < kb)
        pack_scalar(w, w_bf16, K, n0, 0, j_done, k0 + k_done, kb - k_done, p + k_done * NP);
#endif
    pack_scalar(w, w_bf16, K, n0, j_done, np, k0, kb, p);
    for (int64_t k = 0; k < kb; k++)
        for (int64_t j = np; j < NP; j++) p[k * NP + j] = 0.0f;
}

/* One micro-tile: rows x[0 .. R) (row stride K, columns from k0), the packed block p [kb][NP]; the R x np chain
 * sums are stored to y (first block) or added to it (row stride N, columns from n0). */
static inline __attribute__((always_inline)) void tile_generic(const float *x, int64_t K, int R, const float *p,
                                                               int64_t k0, int64_t kb, int first, float *y,
                                                               int64_t N, int64_t n0, int64_t np) {
    float acc[MR][NP];
    memset(acc, 0, sizeof(acc));
    for (int64_t k = 0; k < kb; k++) {
        const float *pk = p + k * NP;
        for (int r = 0; r < R; r++) {
            const float xv = x[r * K + k0 + k];
            for (int j = 0; j < NP; j++) acc[r][j] = fmaf(xv, pk[j], acc[r][j]);
        }
    }
    for (int r = 0; r < R; r++) {
        float *yr = y + r * N + n0;
        for (int64_t j = 0; j < np; j++) yr[j] = first ? acc[r][j] : yr[j] + acc[r][j];
    }
}

#ifdef ORDERED_AVX512
static inline __attribute__((always_inline)) void tile_avx512(const float *x, int64_t K, int R, const float *p,
                                                              int64_t k0, int64_t kb, int first, float *y,
                                                              int64_t N, int64_t n0, int64_t np) {
    __m512 a0[MR], a1[MR];
    for (int r = 0; r < R; r++) a0[r] = a1[r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kb; k++) {
        const __m512 w0 = _mm512_loadu_ps(p + k * NP), w1 = _mm512_loadu_ps(p + k * NP + 16);
        for (int r = 0; r < R; r++) {
            const __m512 xv = _mm512_set1_ps(x[r * K + k0 + k]);
            a0[r] = _mm512_fmadd_ps(xv, w0, a0[r]);
            a1[r] = _mm512_fmadd_ps(xv, w1, a1[r]);
        }
    }
    const int64_t lo = np < 16 ? np : 16, hi = np - lo;
    const __mmask16 m0 = (__mmask16)((1u << lo) - 1u), m1 = (__mmask16)((1u << hi) - 1u);
    for (int r = 0; r < R; r++) {
        float *yr = y + r * N + n0;
        __m512 s0 = a0[r], s1 = a1[r];
        if (!first) {
            s0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, yr), s0);
            s1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, yr + 16), s1);
        }
        _mm512_mask_storeu_ps(yr, m0, s0);
        _mm512_mask_storeu_ps(yr + 16, m1, s1);
    }
}
#define TILE tile_avx512
#elif defined(ORDERED_AVX2)
#define TILE tile_avx2
#else
#define TILE tile_generic
#endif

/* Rows [t0, t0 + rows) of one panel for one packed K block: micro-tiles of MR rows, then tiles of 4, then the
 * rest (each a call with a constant row count, so the compiler keeps the accumulators in registers). */
static void panel_rows(const float *x, int64_t K, int64_t t0, int64_t rows, const float *p, int64_t k0, int64_t kb,
                       int first, float *y, int64_t N, int64_t n0, int64_t np) {
    int64_t t = t0;
    const int64_t end = t0 + rows;
    for (; t + MR <= end; t += MR) TILE(x + t * K, K, MR, p, k0, kb, first, y + t * N, N, n0, np);
    for (; t + 4 <= end; t += 4) TILE(x + t * K, K, 4, p, k0, kb, first, y + t * N, N, n0, np);
    switch (end - t) {
        case 3: TILE(x + t * K, K, 3, p, k0, kb, first, y + t * N, N, n0, np); break;
        case 2: TILE(x + t * K, K, 2, p, k0, kb, first, y + t * N, N, n0, np); break;
        case 1: TILE(x + t * K, K, 1, p, k0, kb, first, y + t * N, N, n0, np); break;
        default: break;
    }
}

/* The work items [0, items) of ordered_gemm (its arguments; chunks: row chunks per panel), shared out by an orphaned
 * worksharing loop inside an OpenMP parallel region, all computed by the caller outside one. Returns 1 when the
 * packing buffer cannot be allocated (y is then incomplete), else 0. */
static int gemm_items(const float *x, int64_t M, int64_t K, const void *w, int w_bf16, int64_t N, int64_t block,
                      float *y, int64_t items, int64_t chunks) {
    float *p = (float *)aligned_alloc(64, (size_t)block * NP * sizeof(float));  /* block * 128 bytes */
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; item++) {
        if (p == NULL) continue;  /* every thread still meets the worksharing loop */
        const int64_t n0 = (item / chunks) * NP, t0 = (item % chunks) * ROW_CHUNK;
        const int64_t np = N - n0 < NP ? N - n0 : NP, rows = M - t0 < ROW_CHUNK ? M - t0 : ROW_CHUNK;
        for (int64_t k0 = 0; k0 < K; k0 += block) {
            const int64_t kb = K - k0 < block ? K - k0 : block;
            pack_panel(w, w_bf16, K, N, n0, np, k0, kb, p);
            panel_rows(x, K, t0, rows, p, k0, kb, k0 == 0, y, N, n0, np);
        }
    }
    free(p);
    return p == NULL;
}

/* y = x w^T in the blocked fma order with K blocks of `block` (the last one shorter when block does not divide
 * K). Work items (panel of NP columns x chunk of ROW_CHUNK rows) are split over `threads` OpenMP threads; each
 * output is computed by one thread from its own chain, so the values do not depend on the split; one thread skips
 * the parallel region (~0.7 us a call). Returns 0, or -1 when the packing buffer cannot be allocated (y is then
 * incomplete). */
int ordered_gemm(const float *x, int64_t M, int64_t K, const void *w, int w_bf16, int64_t N, int64_t block,
                 float *y, int threads) {
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) {
        for (int64_t i = 0; i < M * N; i++) y[i] = 0.0f;
        return 0;
    }
    if (block <= 0 || block > K) block = K;
    const int64_t panels = (N + NP - 1) / NP, chunks = (M + ROW_CHUNK - 1) / ROW_CHUNK;
    const int64_t items = panels * chunks;
    if (threads > items) threads = (int)items;
    if (M * N * K < PARALLEL_MIN_FMAS || threads < 1) threads = 1;
    int failed = 0;
    if (threads == 1) {
        failed = gemm_items(x, M, K, w, w_bf16, N, block, y, items, chunks);
    } else {
#pragma omp parallel num_threads(threads) reduction(| : failed)
        failed |= gemm_items(x, M, K, w, w_bf16, N, block, y, items, chunks);
    }
    return failed ? -1 : 0;
}

/* ---- GEMMs with few rows: the small-row kernel's order (blas_order.small_row_order / lane_sum) ----
 * One output's tree is (peel, lanes, step): products rounded to fp32 (mul, then add: no fma), the first `peel`
 * summed in order into lane 0, products peel .. stop-1 (stop = peel + step * ((K - peel) / step)) added to lane
 * (k - peel) % lanes in order, the lanes reduced by halving (lane l + lane l + half), then products stop .. K-1
 * added in order. The order of each output comes from Python (blas_order.small_row_order), per row: one for the
 * features n < first_left_over, one for each left-over feature. */
#define MAX_LANES 8
#define MAX_LEFT_OVER 3   /* the N mod 4 left-over features (blas_order.FEATURE_GROUP = 4) */
#define ORDER_SLOTS (1 + MAX_LEFT_OVER)
#define SMALL_COLS 8      /* output features per block: 8 independent lane vectors hide the add latency */

static inline float w_at(const void *w, int w_bf16, int64_t at) {
    return w_bf16 ? bf16_bits_to_f32(((const uint16_t *)w)[at]) : ((const float *)w)[at];
}

/* Any (peel, lanes, step), one output: x row xr [K], weight row c. */
static float lane_sum_one(const float *xr, const void *w, int w_bf16, int64_t K, int64_t c, int peel, int lanes,
                          int step) {
    float acc[MAX_LANES] = {0.0f};
    const int64_t row = c * K, stop = peel + step * ((K - peel) / step);
    if (peel) {
        float head = xr[0] * w_at(w, w_bf16, row);
        for (int i = 1; i < peel; i++) head = head + xr[i] * w_at(w, w_bf16, row + i);
        acc[0] = head;
    }
    for (int64_t s = peel; s < stop; s += lanes)
        for (int l = 0; l < lanes; l++) acc[l] = acc[l] + xr[s + l] * w_at(w, w_bf16, row + s + l);
    for (int half = lanes / 2; half >= 1; half /= 2)
        for (int l = 0; l < half; l++) acc[l] = acc[l] + acc[l + half];
    float out = acc[0];
    for (int64_t i = stop; i < K; i++) out = out + xr[i] * w_at(w, w_bf16, row + i);
    return out;
}

typedef float v4f __attribute__((vector_size(16)));
typedef float v8f __attribute__((vector_size(32)));
typedef uint16_t v4u16 __attribute__((vector_size(8)));
typedef uint16_t v8u16 __attribute__((vector_size(16)));
typedef uint32_t v4u32 __attribute__((vector_size(16)));
typedef uint32_t v8u32 __attribute__((vector_size(32)));

/* SMALL_COLS outputs (features c0 .. c0+cb-1) of one row with lanes = step = L: the L lanes of each output are
 * the L elements of one vector (lane l = element l), so the vector adds are the lanes' adds. */
#define SMALL_BLOCK(L, VF, VU16, VU32)                                                                              \
    static inline __attribute__((always_inline)) void small_block_body_##L(                                      \
        const float *xr, const void *w, int w_bf16, int64_t K, int64_t c0, int cb, int peel, float *yr) {         \
        VF acc[SMALL_COLS];                                                                                       \
        const int64_t stop = peel + L * ((K - peel) / L);                                                         \
        for (int j = 0; j < cb; j++) {                                                                            \
            acc[j] = (VF){0};                                                                                     \
            if (peel) {                                                                                           \
                const int64_t row = (c0 + j) * K;                                                                 \
                float head = xr[0] * w_at(w, w_bf16, row);                                                        \
                for (int i = 1; i < peel; i++) head = head + xr[i] * w_at(w, w_bf16, row + i);                    \
                acc[j][0] = head;                                                                                 \
            }                                                                                                     \
        }                                                                                                         \
        for (int64_t s = peel; s < stop; s += L) {                                                                \
            VF xv;                                                                                                \
            memcpy(&xv, xr + s, sizeof(xv));                                                                      \
            for (int j = 0; j < cb; j++) {                                                                        \
                const int64_t at = (c0 + j) * K + s;                                                              \
                VF wv;                                                                                            \
                if (w_bf16) {                                                                                     \
                    VU16 h;                                                                                       \
                    memcpy(&h, (const uint16_t *)w + at, sizeof(h));                                              \
                    const VU32 bits = __builtin_convertvector(h, VU32) << 16;                                     \
                    memcpy(&wv, &bits, sizeof(wv));                                                               \
                } else {                                                                                          \
                    memcpy(&wv, (const float *)w + at, sizeof(wv));                                               \
                }                                                                                                 \
                acc[j] = acc[j] + xv * wv;                                                                        \
            }                                                                                                     \
        }                                                                                                         \
        for (int j = 0; j < cb; j++) {                                                                            \
            float a[L];                                                                                           \
            memcpy(a, &acc[j], sizeof(a));                                                                        \
            for (int half = L / 2; half >= 1; half /= 2)                                                          \
                for (int l = 0; l < half; l++) a[l] = a[l] + a[l + half];                                         \
            float out = a[0];                                                                                     \
            const int64_t row = (c0 + j) * K;                                                                     \
            for (int64_t i = stop; i < K; i++) out = out + xr[i] * w_at(w, w_bf16, row + i);                      \
            yr[c0 + j] = out;                                                                                     \
        }                                                                                                         \
    }                                                                                                             \
    /* a full block with a constant width (the accumulators stay in registers), else the tail block */            \
    static void small_block_##L(const float *xr, const void *w, int w_bf16, int64_t K, int64_t c0, int cb,        \
                                int peel, float *yr) {                                                            \
        if (cb == SMALL_COLS && w_bf16) small_block_body_##L(xr, w, 1, K, c0, SMALL_COLS, peel, yr);              \
        else if (cb == SMALL_COLS) small_block_body_##L(xr, w, 0, K, c0, SMALL_COLS, peel, yr);                   \
        else small_block_body_##L(xr, w, w_bf16, K, c0, cb, peel, yr);                                            \
    }
SMALL_BLOCK(4, v4f, v4u16, v4u32)
SMALL_BLOCK(8, v8f, v8u16, v8u32)

#ifdef ORDERED_AVX512
/* The 4-lane order (lanes = step = 4: every one-row GEMM's features) with four outputs per 512-bit accumulator
 * (128-bit quarter j = output j's 4 lanes) instead of one 128-bit vector each: the same products (mul, then add)
 * added to the same lanes in the same order. 16 columns of 4 weight rows are loaded as 4 vectors and transposed by
 * 128-bit quarters, so quarter q of T[q] holds each row's columns s + 4q .. s + 4q + 3 (step q of the lanes). */
#define PACKED_OUTPUTS 4  /* outputs per accumulator */
#define PACKED_SPAN 16    /* columns per transposed load: 4 steps of the 4 lanes */
#define SMALL_PREFETCH_BYTES 2048 /* ahead of each weight row read (the rows are 1-2 KiB: a few rows ahead) */

static inline __m512 row16(const void *w, int w_bf16, int64_t at) { /* 16 weights from element `at`, fp32 */
    if (w_bf16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + at))), 16));
    return _mm512_loadu_ps((const float *)w + at);
}

static inline __m128 row4(const void *w, int w_bf16, int64_t at) { /* 4 weights from element `at`, fp32 */
    if (w_bf16)
        return _mm_castsi128_ps(_mm_slli_epi32(
            _mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i *)((const uint16_t *)w + at))), 16));
    return _mm_loadu_ps((const float *)w + at);
}

/* SMALL_COLS outputs c0 .. c0 + SMALL_COLS - 1 of row xr in the order (peel, 4, 4); same values as
 * small_block_body_4. */
static inline __attribute__((always_inline)) void small_block_packed4(const float *xr, const void *w, int w_bf16,
                                                                      int64_t K, int64_t c0, int peel, float *yr) {
    enum { GROUPS = SMALL_COLS / PACKED_OUTPUTS };
    const int64_t stop = peel + 4 * ((K - peel) / 4);
    const int64_t elem = w_bf16 ? 2 : 4, line_cols = 64 / elem;
    float lanes[GROUPS][16] = {{0.0f}};
    for (int j = 0; j < SMALL_COLS && peel; j++) { /* the peel: lane 0 of output j */
        const int64_t row = (c0 + j) * K;
        float head = xr[0] * w_at(w, w_bf16, row);
        for (int i = 1; i < peel; i++) head = head + xr[i] * w_at(w, w_bf16, row + i);
        lanes[j / PACKED_OUTPUTS][4 * (j % PACKED_OUTPUTS)] = head;
    }
    __m512 acc[GROUPS];
    for (int g = 0; g < GROUPS; g++) acc[g] = _mm512_loadu_ps(lanes[g]);
    int64_t s = peel;
    for (; s + PACKED_SPAN <= stop; s += PACKED_SPAN) {
        if ((s - peel) % line_cols < PACKED_SPAN) /* about one prefetch per 64-byte line of each row */
            for (int j = 0; j < SMALL_COLS; j++)
                _mm_prefetch((const char *)w + ((c0 + j) * K + s) * elem + SMALL_PREFETCH_BYTES, _MM_HINT_T0);
        __m512 xq[4];
        for (int q = 0; q < 4; q++) xq[q] = _mm512_broadcast_f32x4(_mm_loadu_ps(xr + s + 4 * q));
        for (int g = 0; g < GROUPS; g++) {
            const int64_t r0 = (c0 + PACKED_OUTPUTS * g) * K + s;
            const __m512 a = row16(w, w_bf16, r0), b = row16(w, w_bf16, r0 + K);
            const __m512 c = row16(w, w_bf16, r0 + 2 * K), d = row16(w, w_bf16, r0 + 3 * K);
            const __m512 ab01 = _mm512_shuffle_f32x4(a, b, 0x44), ab23 = _mm512_shuffle_f32x4(a, b, 0xEE);
            const __m512 cd01 = _mm512_shuffle_f32x4(c, d, 0x44), cd23 = _mm512_shuffle_f32x4(c, d, 0xEE);
            const __m512 t[4] = {_mm512_shuffle_f32x4(ab01, cd01, 0x88), _mm512_shuffle_f32x4(ab01, cd01, 0xDD),
                                 _mm512_shuffle_f32x4(ab23, cd23, 0x88), _mm512_shuffle_f32x4(ab23, cd23, 0xDD)};
            for (int q = 0; q < 4; q++) acc[g] = _mm512_add_ps(acc[g], _mm512_mul_ps(t[q], xq[q]));
        }
    }
    for (; s < stop; s += 4) { /* the last steps, one at a time */
        const __m512 xq = _mm512_broadcast_f32x4(_mm_loadu_ps(xr + s));
        for (int g = 0; g < GROUPS; g++) {
            const int64_t r0 = (c0 + PACKED_OUTPUTS * g) * K + s;
            __m512 v = _mm512_castps128_ps512(row4(w, w_bf16, r0));
            v = _mm512_insertf32x4(v, row4(w, w_bf16, r0 + K), 1);
            v = _mm512_insertf32x4(v, row4(w, w_bf16, r0 + 2 * K), 2);
            v = _mm512_insertf32x4(v, row4(w, w_bf16, r0 + 3 * K), 3);
            acc[g] = _mm512_add_ps(acc[g], _mm512_mul_ps(v, xq));
        }
    }
    for (int g = 0; g < GROUPS; g++) _mm512_storeu_ps(lanes[g], acc[g]);
    for (int j = 0; j < SMALL_COLS; j++) {
        const float *a = lanes[j / PACKED_OUTPUTS] + 4 * (j % PACKED_OUTPUTS);
        float out = (a[0] + a[2]) + (a[1] + a[3]); /* the halving: lanes l + l + 2, then the two */
        const int64_t row = (c0 + j) * K;
        for (int64_t i = stop; i < K; i++) out = out + xr[i] * w_at(w, w_bf16, row + i);
        yr[c0 + j] = out;
    }
}
#endif

#if defined(ORDERED_AVX2) || defined(ORDERED_AVX512)
#include "ordered_small_avx2.h" /* avx2_small_block_bf16 */
#endif

/* A block in the order (peel, 4, 4): full and half blocks of bf16 weights two outputs to a 256-bit register (AVX2 and
 * AVX-512 builds), other full blocks packed four outputs to a register where AVX-512 is there. prefetch_rows: weight
 * rows after the block that the bf16 kernel prefetches (avx2_small_block_bf16).
 * AVX-512 builds take the AVX2 kernel for bf16 weights too: its prefetch of the next block's rows keeps the lines
 * of these cold weights (the compressor projections of a decode step; the head streams 132 MB between two calls)
 * coming, where small_block_packed4 prefetched only inside its own block. Measured (1 thread, AMD EPYC Zen 4, one
 * row of x, 1024 x 512 bf16, median of 8 calls, noisy host): weights evicted before each call 272 -> 177-190 us, warm
 * 62.5 -> 51-58 us; in the real-shape decode step the six compressor projections 601 -> 568 us a step. */
static void small_block_lanes4(const float *xr, const void *w, int w_bf16, int64_t K, int64_t c0, int cb, int peel,
                               int prefetch_rows, float *yr) {
#if defined(ORDERED_AVX2) || defined(ORDERED_AVX512)
    /* bf16 weights only: with fp32 ones (the mHC mixes, the router, the converted blocks of several rows) the one
     * 128-bit vector per output measured as fast or faster on AVX2 (the pair's 128-bit insert costs what the halved
     * mul and add save there); with bf16 ones the generic loop's conversion dominates */
    enum { FULL = SMALL_COLS / 2, HALF = SMALL_COLS / 4 }; /* pairs of outputs in a full / half block */
    if (w_bf16 && (cb == SMALL_COLS || cb == SMALL_COLS / 2)) { /* a half block: the last of an N = 4 mod 8 */
        if (cb == SMALL_COLS) avx2_small_block_bf16(xr, (const uint16_t *)w, K, c0, FULL, peel, prefetch_rows, yr);
        else avx2_small_block_bf16(xr, (const uint16_t *)w, K, c0, HALF, peel, prefetch_rows, yr);
        return;
    }
#else
    (void)prefetch_rows;
#endif
#ifdef ORDERED_AVX512
    if (cb == SMALL_COLS) { /* fp32 weights: full bf16 blocks were taken above (a constant keeps row16's branch out) */
        small_block_packed4(xr, w, 0, K, c0, peel, yr);
        return;
    }
#endif
    small_block_4(xr, w, w_bf16, K, c0, cb, peel, yr);
}

/* The feature blocks [0, blocks) of ordered_small_gemm (its arguments): shared out by an orphaned worksharing loop
 * when called inside an OpenMP parallel region, all computed by the caller outside one. Returns 1 when the
 * conversion buffer cannot be allocated (y is then incomplete), else 0. */
static int small_blocks(const float *x, int64_t M, int64_t K, const void *w, int w_bf16, int64_t N,
                        int64_t first_left_over, const int32_t *orders, float *y, int64_t blocks) {
    /* bf16 weights with several rows: the block's weight rows converted to fp32 once (exact), not per row */
    float *wf = (w_bf16 && M > 1) ? (float *)malloc((size_t)SMALL_COLS * K * sizeof(float)) : NULL;
    const int failed = w_bf16 && M > 1 && wf == NULL;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        if (failed) continue;  /* every thread still meets the worksharing loop */
        const int64_t c0 = b * SMALL_COLS;
        const int cb = (int)(first_left_over - c0 < SMALL_COLS ? first_left_over - c0 : SMALL_COLS);
        const void *wb = w;
        int64_t cw = c0;  /* the block's first weight row in wb */
        /* the rows of w after the block that the reads of w prefetch (none for a converted block in wf) */
        const int ahead = wf == NULL ? (int)(N - c0 - cb < SMALL_COLS ? N - c0 - cb : SMALL_COLS) : 0;
        if (wf != NULL) {
            for (int j = 0; j < cb; j++)
                for (int64_t k = 0; k < K; k++) wf[j * K + k] = w_at(w, 1, (c0 + j) * K + k);
            wb = wf;
            cw = 0;
        }
        for (int64_t r = 0; r < M; r++) {  /* the block's weight rows stay in cache across the rows of x */
            const int32_t *o = orders + r * ORDER_SLOTS * 3;
            float *yr = y + r * N + c0 - cw;
            if (o[1] == 4) small_block_lanes4(x + r * K, wb, wf == NULL && w_bf16, K, cw, cb, o[0], ahead, yr);
            else small_block_8(x + r * K, wb, wf == NULL && w_bf16, K, cw, cb, o[0], yr);
        }
    }
    free(wf);
    return failed;
}

/* y[M, N] for M < 8 rows in the small-row order; orders int32 [M][ORDER_SLOTS][3] = (peel, lanes, step): slot 0
 * for the features n < first_left_over, slot 1 + i for feature first_left_over + i. Feature blocks are split over
 * `threads` OpenMP threads (each output from its own tree: the values do not depend on the split); one thread
 * skips the parallel region (~0.7 us a call, measured: a decode step makes dozens). Returns 0, or -1 for an order
 * the kernel does not take (lanes not 4 or 8 or above MAX_LANES, too many left-over features). */
int ordered_small_gemm(const float *x, int64_t M, int64_t K, const void *w, int w_bf16, int64_t N,
                       int64_t first_left_over, const int32_t *orders, float *y, int threads) {
    if (N - first_left_over > MAX_LEFT_OVER || first_left_over < 0) return -1;
    for (int64_t r = 0; r < M; r++)
        for (int s = 0; s < ORDER_SLOTS; s++) {
            const int32_t *o = orders + (r * ORDER_SLOTS + s) * 3;
            if (s > 0 && s > N - first_left_over) break;
            if (s == 0 && first_left_over == 0) continue;
            if (o[1] < 1 || o[1] > MAX_LANES || o[2] < 1 || o[0] < 0 || o[0] > K) return -1;
            if (s == 0 && (o[1] != o[2] || (o[1] != 4 && o[1] != 8))) return -1;
        }
    const int64_t blocks = (first_left_over + SMALL_COLS - 1) / SMALL_COLS;
    if (threads > blocks) threads = (int)blocks;
    if (M * N * K < PARALLEL_MIN_FMAS || threads < 1) threads = 1;
    int failed = 0;
    if (threads == 1) {
        failed = small_blocks(x, M, K, w, w_bf16, N, first_left_over, orders, y, blocks);
    } else {
#pragma omp parallel num_threads(threads) reduction(| : failed)
        failed |= small_blocks(x, M, K, w, w_bf16, N, first_left_over, orders, y, blocks);
    }
    if (failed) return -1;
    for (int64_t r = 0; r < M; r++)
        for (int64_t c = first_left_over; c < N; c++) {
            const int32_t *o = orders + (r * ORDER_SLOTS + 1 + (c - first_left_over)) * 3;
            y[r * N + c] = lane_sum_one(x + r * K, w, w_bf16, K, c, o[0], o[1], o[2]);
        }
    return 0;
}
