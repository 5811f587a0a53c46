/* The AVX2 panel path's tile at 2 or more x rows (included by lowbit_avx2.h, after lane16 and tail_mask): each
 * output is tile_block_avx2's lane16 chain, its two 8-lane halves run as separate passes over K. */

#define HALF_NR 2 /* panel rows per tile_halves_avx2 block: AVX2_XCHUNK x HALF_NR 8-lane accumulators */

/* One 8-lane half (h = 0: lanes 0-7, 1: lanes 8-15) of mr x nr lane16 chains over all of K: acc[i][j] ymm. */
static inline __attribute__((always_inline)) void half_pass_avx2(const float *x, int64_t K, const float *panel,
                                                                 int64_t m0, int mr, int nr, int h,
                                                                 __m256 acc[AVX2_XCHUNK][HALF_NR]) {
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) acc[i][j] = _mm256_setzero_ps();
    const int off = h * LANES / 2;
    int64_t k = 0;
    for (; k + LANES <= K; k += LANES) {
        __m256 xv[AVX2_XCHUNK];
        for (int i = 0; i < mr; i++) {
            xv[i] = _mm256_loadu_ps(x + (m0 + i) * K + k + off);
            __asm__("" : "+x"(xv[i])); /* kept in a register: GCC otherwise folds the load into every FMA */
        }
        for (int j = 0; j < nr; j++) {
            __m256 wv = _mm256_loadu_ps(panel + j * K + k + off);
            __asm__("" : "+x"(wv));
            for (int i = 0; i < mr; i++) acc[i][j] = _mm256_fmadd_ps(xv[i], wv, acc[i][j]);
        }
    }
    if (k < K) { /* the tail's missing lanes: x = w = +0, the FMA still done (as tile_block_avx2) */
        mask16 m = tail_mask(K - k);
        __m256i mh = h ? m.hi : m.lo;
        __m256 xv[AVX2_XCHUNK];
        for (int i = 0; i < mr; i++) xv[i] = _mm256_maskload_ps(x + (m0 + i) * K + k + off, mh);
        for (int j = 0; j < nr; j++) {
            __m256 wv = _mm256_maskload_ps(panel + j * K + k + off, mh);
            for (int i = 0; i < mr; i++) acc[i][j] = _mm256_fmadd_ps(xv[i], wv, acc[i][j]);
        }
    }
}

/* tile_block_avx2's outputs for mr (2 .. AVX2_XCHUNK) x rows and nr <= HALF_NR panel rows, the lane16 chains' two
 * halves in two passes over K (a lane's chain does not depend on the other lanes: the same bits). A pass holds
 * mr x nr accumulators, the mr x halves and one weight half: 8 + 4 + 1 of the 16 ymm at 4 x 2, and loads mr + nr
 * vectors per mr x nr FMAs (6 per 8; tile_block_avx2's 4 x 1 blocks reload x per weight row: 10 per 8, which left
 * the 5-16-row panel load-bound). */
static inline __attribute__((always_inline)) void tile_halves_avx2(const float *x, int64_t K, const float *panel,
                                                                   float *y, int64_t N, int64_t m0, int mr,
                                                                   int64_t n0, int nr) {
    __m256 lo[AVX2_XCHUNK][HALF_NR], hi[AVX2_XCHUNK][HALF_NR];
    half_pass_avx2(x, K, panel, m0, mr, nr, 0, lo);
    half_pass_avx2(x, K, panel, m0, mr, nr, 1, hi);
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            lane16 a = {lo[i][j], hi[i][j]};
            y[(m0 + i) * N + n0 + j] = lane16_sum(a);
        }
}

/* a panel's nr rows against mr >= 2 x rows, HALF_NR rows at a time */
static inline __attribute__((always_inline)) void tile_halves_split_avx2(const float *x, int64_t K,
                                                                         const float *panel, float *y, int64_t N,
                                                                         int64_t m0, int mr, int64_t n0, int nr) {
    for (int j0 = 0; j0 < nr; j0 += HALF_NR) {
        if (nr - j0 >= HALF_NR) tile_halves_avx2(x, K, panel + j0 * K, y, N, m0, mr, n0 + j0, HALF_NR);
        else tile_halves_avx2(x, K, panel + j0 * K, y, N, m0, mr, n0 + j0, nr - j0);
    }
}

