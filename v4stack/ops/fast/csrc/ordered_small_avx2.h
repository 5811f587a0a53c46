/* The AVX2 kernel of ordered_gemm.c's small-row order (peel, 4, 4) with bf16 weights (the fp32 compressor projections
 * of a decode step): included by it when the compiler targets AVX2 and FMA but not AVX-512 (AMD Zen 2/3,
 * -march=x86-64-v3), in place of the generic loop's one 128-bit vector per output (which spends most of its
 * instructions widening 4 bf16 at a time). Two outputs share one 256-bit accumulator (128-bit half h = output
 * 2g + h's 4 lanes), so each mul and add does 8 products; the products (fp32 mul, then add: no fma), the lanes they go
 * to and the order of the adds are those of small_block_body_4, so the values are the same bits. Needs SMALL_COLS,
 * w_at and bf16_bits_to_f32 of ordered_gemm.c (included after them).
 *
 * Loads: a pair of rows' weights enters one register with one 16-byte load per row (the second inserted into the
 * high half), so no transpose is needed: bf16 columns s .. s+7 of rows j and j + 1 give [j | j+1] (8 words a half),
 * and an unpack with zero words per 128-bit half gives [j s..s+3 | j+1 s..s+3] (the low words) and
 * [j s+4..s+7 | j+1 s+4..s+7] (the high words) as fp32 (each bf16 placed in the high 16 bits: exact). */
#include <immintrin.h>

#define AVX2_SMALL_PAIRS_MAX (SMALL_COLS / 2) /* accumulators of a full block: two outputs each */
#define AVX2_SMALL_SPAN 16 /* columns per loop iteration: 4 steps of the 4 lanes (two 16-byte loads per row) */
#define AVX2_SMALL_LINE_BYTES 64 /* a cache line: one prefetch per line of each weight row */
#define AVX2_SMALL_L1_WAY_BYTES 4096 /* rows whose stride is a multiple of this share one L1 set (8 ways): a block
                                        and the next one prefetched are 16 lines there, which evict each other (fp32
                                        rows of 8 KiB measured 2x slower with the prefetch), so those are not
                                        prefetched */

/* bf16 weights [a, a + 8) of one row and [b, b + 8) of another (elements of w) -> *lo = [a..a+3 | b..b+3],
 * *hi = [a+4..a+7 | b+4..b+7] in fp32 */
static inline __attribute__((always_inline)) void avx2_pair_two_steps(const uint16_t *w, int64_t a, int64_t b,
                                                                      __m256 *lo, __m256 *hi) {
    const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(w + a))),
                                              _mm_loadu_si128((const __m128i *)(w + b)), 1);
    const __m256i zero = _mm256_setzero_si256();
    *lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v)); /* per half: words 0-3 into the high halves */
    *hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v)); /* words 4-7 */
}

/* bf16 weights [a, a + 4) and [b, b + 4) -> [a..a+3 | b..b+3] in fp32 (one step of the lanes: the last steps) */
static inline __attribute__((always_inline)) __m256 avx2_pair_step(const uint16_t *w, int64_t a, int64_t b) {
    const __m128i v = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(w + a)),
                                         _mm_loadl_epi64((const __m128i *)(w + b)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}

/* Outputs c0 .. c0 + 2 pairs - 1 (pairs a constant: 4 for a full block, 2 for a half one) of row xr [K] in the order
 * (peel, 4, 4), bf16 weight row c at w + c * K, into yr[c]; the same values as small_block_body_4. prefetch_rows: how
 * many weight rows after the block (from c0 + 2 pairs) to prefetch, one line per 64 bytes of each as the loop reads
 * the same columns of its own rows (0: none; never rows past the end of w: a prefetch there costs a page walk). */
static inline __attribute__((always_inline)) void avx2_small_block_bf16(const float *xr, const uint16_t *w, int64_t K,
                                                                        int64_t c0, int pairs, int peel,
                                                                        int prefetch_rows, float *yr) {
    const int cb = 2 * pairs;
    const int64_t stop = peel + 4 * ((K - peel) / 4);
    const int64_t line_cols = AVX2_SMALL_LINE_BYTES / sizeof(uint16_t);
    const uint16_t *ahead = w + (c0 + cb) * K; /* the first prefetched row */
    if ((K * (int64_t)sizeof(uint16_t)) % AVX2_SMALL_L1_WAY_BYTES == 0) prefetch_rows = 0;
    float lanes[AVX2_SMALL_PAIRS_MAX][2 * 4] = {{0.0f}};
    for (int j = 0; j < cb && peel; j++) { /* the peel: lane 0 of output j */
        const int64_t row = (c0 + j) * K;
        float head = xr[0] * bf16_bits_to_f32(w[row]);
        for (int i = 1; i < peel; i++) head = head + xr[i] * bf16_bits_to_f32(w[row + i]);
        lanes[j / 2][4 * (j % 2)] = head;
    }
    __m256 acc[AVX2_SMALL_PAIRS_MAX];
    for (int g = 0; g < pairs; g++) acc[g] = _mm256_loadu_ps(lanes[g]);
    int64_t s = peel;
    for (; s + AVX2_SMALL_SPAN <= stop; s += AVX2_SMALL_SPAN) {
        if ((s - peel) % line_cols < AVX2_SMALL_SPAN)
            for (int j = 0; j < prefetch_rows; j++) _mm_prefetch((const char *)(ahead + j * K + s), _MM_HINT_T0);
        __m256 xq[4];
        for (int q = 0; q < 4; q++) xq[q] = _mm256_broadcast_ps((const __m128 *)(xr + s + 4 * q));
        for (int g = 0; g < pairs; g++) {
            const int64_t a = (c0 + 2 * g) * K + s, b = a + K;
            __m256 t[4];
            avx2_pair_two_steps(w, a, b, &t[0], &t[1]);
            avx2_pair_two_steps(w, a + 8, b + 8, &t[2], &t[3]);
            for (int q = 0; q < 4; q++) acc[g] = _mm256_add_ps(acc[g], _mm256_mul_ps(t[q], xq[q]));
        }
    }
    for (; s < stop; s += 4) { /* the last steps, one at a time */
        const __m256 xq = _mm256_broadcast_ps((const __m128 *)(xr + s));
        for (int g = 0; g < pairs; g++) {
            const int64_t a = (c0 + 2 * g) * K + s;
            acc[g] = _mm256_add_ps(acc[g], _mm256_mul_ps(avx2_pair_step(w, a, a + K), xq));
        }
    }
    for (int g = 0; g < pairs; g++) _mm256_storeu_ps(lanes[g], acc[g]);
    for (int j = 0; j < cb; j++) {
        const float *a = lanes[j / 2] + 4 * (j % 2);
        float out = (a[0] + a[2]) + (a[1] + a[3]); /* the halving: lanes l + l + 2, then the two */
        const int64_t row = (c0 + j) * K;
        for (int64_t i = stop; i < K; i++) out = out + xr[i] * bf16_bits_to_f32(w[row + i]);
        yr[c0 + j] = out;
    }
}
