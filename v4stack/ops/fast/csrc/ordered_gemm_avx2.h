/* The AVX2 + FMA (8-lane) kernels of ordered_gemm.c, included by it when the compiler targets AVX2 and FMA but
 * not AVX-512 (AMD Zen 2/3, -march=x86-64-v3). Same contracts and the same values as the scalar path: every output
 * is one lane of a vector register, its chain's fmas (vfmadd rounds once, as fmaf does) or its lane tree's mul and
 * add in the same order, so only how many outputs run side by side changes. Needs NP, MR, pack_scalar, w_at and
 * bf16_bits_to_f32 from ordered_gemm.c (included after them). */
#include <immintrin.h>

#define AVX2_LANES 8       /* fp32 lanes of a ymm register */
#define AVX2_STRIP_VECTORS 2 /* a micro-tile's columns: half a panel (NP = 32), two ymm accumulators per row; MR = 6
                                rows: 6 x 2 accumulators + 2 weight vectors + 1 broadcast of the 16 ymm registers */
#define AVX2_STRIP_COLS (AVX2_STRIP_VECTORS * AVX2_LANES)
#define AVX2_LINE_BYTES 64 /* a cache line: the packing prefetches the next panel's weights one line at a time (the
                              8 rows' loads stall on memory at decode-sized row counts, where packing is ~1/3) */

/* 8 fp32 weights from element `at` of w (fp32, or bf16 placed in the high half of each lane: exact) */
static inline __m256 avx2_load8(const void *w, int w_bf16, int64_t at) {
    if (w_bf16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + at))), 16));
    return _mm256_loadu_ps((const float *)w + at);
}

/* 8 rows of 8 columns -> r[c] = column c of the 8 rows (24 shuffles for 64 values, against one scattered 4-byte
 * store per value in pack_scalar) */
static inline void avx2_transpose8(__m256 r[8]) {
    __m256 t[8], s[8];
    for (int i = 0; i < 4; i++) { /* per 128-bit half: t[2i] = a0 b0 a1 b1, t[2i+1] = a2 b2 a3 b3 (rows 2i, 2i+1) */
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 2; g++) { /* s[4g + c], half h: rows 4g .. 4g+3 at column 4h + c */
        s[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        s[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
        s[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        s[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) { /* rows 0-3 and 4-7 of columns c (low halves) and 4 + c (high halves) */
        r[c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x31);
    }
}

/* The vector part of pack_panel (w [N, K]): w rows [n0, n0 + j_done) x columns [k0, k0 + k_done) into p (row
 * stride NP), for the largest j_done <= np and k_done <= kb that are multiples of 8; returns j_done and sets *k_done
 * (the caller packs the rest with pack_scalar). */
static int64_t avx2_pack(const void *w, int w_bf16, int64_t K, int64_t N, int64_t n0, int64_t np, int64_t k0,
                         int64_t kb, float *p, int64_t *k_done) {
    const int64_t j_done = np - np % AVX2_LANES;
    const int64_t elem = w_bf16 ? 2 : 4, line_cols = AVX2_LINE_BYTES / elem;
    /* the same position in the next panel's rows (a panel's NP rows are one contiguous NP x K run): a whole panel
     * ahead, which measured 8% faster at 8-16 rows than the next pack's weights (the same rows' next K block); only
     * rows of w (past its end a prefetch costs a page walk: 6% of a one-panel GEMM), and read early when M >
     * ROW_CHUNK (several row chunks per panel), where packing is a small share */
    const int64_t ahead = NP * K;
    *k_done = j_done > 0 ? kb - kb % AVX2_LANES : 0;
    for (int64_t j = 0; j < j_done; j += AVX2_LANES)
        for (int64_t k = 0; k < *k_done; k += AVX2_LANES) {
            __m256 r[AVX2_LANES];
            if (k % line_cols < AVX2_LANES && n0 + NP + j + AVX2_LANES <= N) /* one per 64-byte line of each row */
                for (int i = 0; i < AVX2_LANES; i++)
                    _mm_prefetch((const char *)w + ((n0 + j + i) * K + k0 + k + ahead) * elem, _MM_HINT_T0);
            for (int i = 0; i < AVX2_LANES; i++) r[i] = avx2_load8(w, w_bf16, (n0 + j + i) * K + k0 + k);
            avx2_transpose8(r);
            for (int c = 0; c < AVX2_LANES; c++) _mm256_storeu_ps(p + (k + c) * NP + j, r[c]);
        }
    return j_done;
}

static const int32_t AVX2_MASK_SOURCE[2 * AVX2_LANES] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

static inline __m256i avx2_mask(int64_t n) { /* lanes 0 .. n-1 on (n clamped to 0 .. 8) */
    n = n < 0 ? 0 : n > AVX2_LANES ? AVX2_LANES : n;
    return _mm256_loadu_si256((const __m256i *)(AVX2_MASK_SOURCE + AVX2_LANES - n));
}

/* y[r, n0 + j] (= or +=) the chains of rows x[0 .. R) against packed columns p[k][0 .. 8 V) (row stride NP), for the
 * first n of them (8 V - 7 .. 8 V): tile_generic's sums for a strip of V vectors (V = 1 or 2, a constant). */
static inline __attribute__((always_inline)) void avx2_strip(const float *x, int64_t K, int R, const float *p,
                                                             int64_t k0, int64_t kb, int first, float *y, int64_t N,
                                                             int64_t n0, int64_t n, int V) {
    __m256 acc[MR][AVX2_STRIP_VECTORS];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) acc[r][v] = _mm256_setzero_ps();
    const float *xk = x + k0;
    for (int64_t k = 0; k < kb; k++) {
        __m256 wv[AVX2_STRIP_VECTORS];
        for (int v = 0; v < V; v++) wv[v] = _mm256_loadu_ps(p + k * NP + v * AVX2_LANES);
        for (int r = 0; r < R; r++) {
            const __m256 xv = _mm256_broadcast_ss(xk + r * K + k);
            for (int v = 0; v < V; v++) acc[r][v] = _mm256_fmadd_ps(xv, wv[v], acc[r][v]);
        }
    }
    for (int r = 0; r < R; r++) {
        float *yr = y + r * N + n0;
        for (int v = 0; v < V; v++) {
            float *yv = yr + v * AVX2_LANES;
            const int64_t cols = n - v * AVX2_LANES;
            if (cols >= AVX2_LANES) {
                _mm256_storeu_ps(yv, first ? acc[r][v] : _mm256_add_ps(_mm256_loadu_ps(yv), acc[r][v]));
            } else {
                const __m256i m = avx2_mask(cols);
                _mm256_maskstore_ps(yv, m, first ? acc[r][v] : _mm256_add_ps(_mm256_maskload_ps(yv, m), acc[r][v]));
            }
        }
    }
}

/* columns [c, c + n) of the panel (n >= 1; at most AVX2_STRIP_COLS) as a strip of one or two vectors */
static inline __attribute__((always_inline)) void avx2_strip_of(const float *x, int64_t K, int R, const float *p,
                                                                int64_t k0, int64_t kb, int first, float *y,
                                                                int64_t N, int64_t n0, int64_t c, int64_t n) {
    if (n > AVX2_LANES) avx2_strip(x, K, R, p + c, k0, kb, first, y, N, n0 + c, n, 2);
    else avx2_strip(x, K, R, p + c, k0, kb, first, y, N, n0 + c, n, 1);
}

/* One micro-tile of the full panel (np columns): two strips of up to 16 columns, a strip of 8 or fewer with one
 * vector (N = 24 mHC mixes, N = 4 heads: no chains of padding columns) */
static inline __attribute__((always_inline)) void tile_avx2(const float *x, int64_t K, int R, const float *p,
                                                            int64_t k0, int64_t kb, int first, float *y, int64_t N,
                                                            int64_t n0, int64_t np) {
    avx2_strip_of(x, K, R, p, k0, kb, first, y, N, n0, 0, np < AVX2_STRIP_COLS ? np : AVX2_STRIP_COLS);
    if (np > AVX2_STRIP_COLS)
        avx2_strip_of(x, K, R, p, k0, kb, first, y, N, n0, AVX2_STRIP_COLS, np - AVX2_STRIP_COLS);
}
