/* The AVX2 direct kernel's FP8 products as x' f instead of x w (included by lowbit_avx2.h after its lane16 helpers,
 * the FP8 placement constants and the AVX2_SPLIT / AVX2_CONST_ROWS macros; used by lowbit_direct_avx2).
 *
 * The prescaled FP8 blocks: the placed fp32 f = e4m3 value v x 2^-120 is multiplied against x' = x x s120 instead
 * of w = f x s120 against x (s120 = 2^120 x the block scale 2^(e - 127) = 2^(e - 7)). Where w and x' are both
 * exact, x' f and x w are the same real product, so every FMA (one rounding of x w + acc) gives the same bits, and
 * the weight's multiply leaves the inner loop (x' is made once per row block of the weight, for all its rows):
 * w = v x 2^(e - 127) is exact (normal) for every e4m3 v >= 2^-9 when e >= FP8_PRESCALE_MIN_EXPONENT and fold's
 * e <= FP8_FOLD120_MAX_EXPONENT holds; x' = x x 2^(e - 7) then scales up by 2^3 .. 2^127, exact unless it
 * overflows (checked: every x' finite). A weight row block with any column block outside these takes
 * lowbit_block_avx2's multiplied weights for all its columns. Measured (1 thread CPU, A/B in one process, FP8
 * weights without subnormal codes): 256 x 512 at 1 row 12.5 -> 8.9 us, 4 rows 29 -> 24, 2048 x 256 at 1 row 55 ->
 * 40. (e4m3 subnormal codes make f an fp32 subnormal, which costs Zen 3 a microcode assist per FMA here as it cost
 * the multiply before: ~1e-4 of a checkpoint's codes.) */
#define FP8_PRESCALE_MIN_EXPONENT 10 /* 2^-9 x 2^(10 - 127) = 2^-126, fp32's smallest normal */

static inline lane16 fp8x16_placed(const uint8_t *p) { /* fp8x8_direct's f, not multiplied */
    __m256i d0 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p));
    __m256i d1 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
    const __m256i keep = _mm256_set1_epi32((int)0x87F00000u);
    lane16 a = {_mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(d0, 20), keep)),
                _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(d1, 20), keep))};
    return a;
}

/* x [M, K] -> xs [M, K] = x x s120 of its column block, for the weight row block whose scales are srow
 * [ceil(K / block)]. Returns 1 when every column block takes the prescaled products (exponent in range, every x'
 * finite), else 0 (the row block then takes lowbit_block_avx2's). */
static int fp8_prescale(const float *x, int64_t M, int64_t K, const uint8_t *srow, int64_t block, float *xs) {
    const __m256 inf = _mm256_set1_ps(INFINITY), sign = _mm256_set1_ps(-0.0f);
    for (int64_t b0 = 0, kb = 0; b0 < K; b0 += block, kb++) {
        uint8_t e = srow[kb];
        int good = e >= FP8_PRESCALE_MIN_EXPONENT && e <= FP8_FOLD120_MAX_EXPONENT;
        const float s120 = ue8m0(e) * FP8_UNSCALE;
        int64_t end = b0 + block < K ? b0 + block : K;
        for (int64_t m = 0; good && m < M; m++) {
            const float *xr = x + m * K;
            float *xo = xs + m * K;
            __m256 finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
            int64_t k = b0;
            for (; k + 8 <= end; k += 8) {
                __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xr + k), _mm256_set1_ps(s120));
                _mm256_storeu_ps(xo + k, v);
                finite = _mm256_and_ps(finite, _mm256_cmp_ps(_mm256_andnot_ps(sign, v), inf, _CMP_LT_OQ));
            }
            good = _mm256_movemask_ps(finite) == 0xFF;
            for (; k < end; k++) {
                xo[k] = xr[k] * s120;
                good &= isfinite(xo[k]) != 0;
            }
        }
        if (!good) return 0;
    }
    return 1;
}

/* FP8 weight rows [n0, n0 + nr) against mr rows of x' (fp8_prescale of their row block), mr * nr <=
 * AVX2_ACCUMULATORS: lowbit_block_avx2's chains with x' f for x w. No scale is read, so K is one sweep (its blocks
 * are whole vectors: the only tail is K's, as there). */
static inline __attribute__((always_inline)) void fp8_block_prescaled_avx2(const float *xs, int mr, int64_t K,
                                                                           const uint8_t *w, int64_t row0,
                                                                           int64_t n0, int nr, float *y, int64_t N) {
    lane16 acc[AVX2_ACCUMULATORS];
    const uint8_t *b = w + (row0 + n0) * K;
    const int64_t pf_mask = prefetch_step_mask(nr);
    for (int a = 0; a < mr * nr; a++) acc[a] = lane16_zero();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        if (((k / 16) & pf_mask) == 0) /* the rows' nr x 16 bytes a step: a line per 4 / nr steps, in order */
            _mm_prefetch((const char *)b + LOWBIT_PREFETCH_BYTES + (k / 16) * (int64_t)nr * 16, _MM_HINT_T0);
        for (int j = 0; j < nr; j++) {
            lane16 wv = fp8x16_placed(b + j * K + k);
            for (int i = 0; i < mr; i++) acc[i * nr + j] = lane16_fma(lane16_load(xs + i * K + k), wv, acc[i * nr + j]);
        }
    }
    if (k < K) { /* x' masked, the bytes zero-padded */
        mask16 m = tail_mask(K - k);
        lane16 xv[AVX2_ACCUMULATORS];
        for (int i = 0; i < mr; i++) xv[i] = lane16_load_tail(xs + i * K + k, m);
        for (int j = 0; j < nr; j++) {
            uint8_t buf[16] = {0};
            memcpy(buf, b + j * K + k, (size_t)(K - k));
            lane16 wv = fp8x16_placed(buf);
            for (int i = 0; i < mr; i++) acc[i * nr + j] = lane16_fma(xv[i], wv, acc[i * nr + j]);
        }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) y[i * N + n0 + j] = lane16_sum(acc[i * nr + j]);
}

/* A weight-row group (nr <= AVX2_ACCUMULATORS rows) against mr <= AVX2_XCHUNK rows of x' (fp8_block_prescaled_avx2 in
 * AVX2_SPLIT blocks). Not inlined: inside lowbit_direct_avx2's OpenMP body GCC kept the accumulators on the stack
 * (one store and reload per FMA; measured 1 thread, FP8 256 x 512, 1 row: 14.0 us, slower than the multiplied
 * weights' 12.5), in a function of its own they stay in registers (8.9 us). */
static __attribute__((noinline)) void fp8_group_prescaled_avx2(const float *xs, int mr, int64_t K, const uint8_t *w,
                                                              int64_t row0, int64_t n0, int nr, float *y,
                                                              int64_t N) {
#define FP8P_CALL(rows) AVX2_SPLIT(fp8_block_prescaled_avx2(xs, rows, K, w, row0, n0 + j0, bnr, y, N))
    if (nr == AVX2_ACCUMULATORS) {
        const int nr = AVX2_ACCUMULATORS; /* a constant for AVX2_SPLIT: acc stays in registers */
        AVX2_CONST_ROWS(mr, FP8P_CALL)
    } else {
        AVX2_SPLIT(fp8_block_prescaled_avx2(xs, mr, K, w, row0, n0 + j0, bnr, y, N));
    }
#undef FP8P_CALL
}

