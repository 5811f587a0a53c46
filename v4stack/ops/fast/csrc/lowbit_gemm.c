/* y[M, N] = x[M, K] @ W^T with W read in its checkpoint format (loaded with ctypes by v4stack/ops/fast/lowbit.py):
 *   FMT_BF16: W uint16 [N, K] (bf16 bits)
 *   FMT_FP8:  W uint8 [N, K] e4m3 bytes + ue8m0 scale [ceil(N/b), ceil(K/b)] (block b x b)
 *   FMT_FP4:  W uint8 [N, K/2] e2m1 nibble pairs (low nibble = even column) + ue8m0 scale [N, K/32]
 * x fp32 [M, K], y fp32 [M, N]; fp32 accumulation. Each weight is dequantised once per call into a small fp32
 * panel of PANEL rows (exact: e4m3/e2m1 x power-of-two scale), then multiplied against every row of x, so the
 * weight bytes are read once per call whatever M is. Panels are split over OpenMP threads (count passed in).
 * AVX-512 where the compiler targets it (-march=native), else AVX2 + FMA + F16C (lowbit_avx2.h), else plain C; all
 * three give the same bits: each output is one 16-lane fp32 FMA chain and one fixed summation tree (sum16). No
 * fast-math. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define LOWBIT_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define LOWBIT_AVX2 1
#endif

enum { FMT_BF16 = 0, FMT_FP8 = 1, FMT_FP4 = 2 };
enum { ISA_PLAIN = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 }; /* lowbit_isa's answers */
#define PANEL 8         /* weight rows per panel: 8 independent accumulators at M = 1 hide the FMA latency */
#define MROWS 2         /* activation rows per micro-tile: 2 x 8 accumulators = 16 of the 32 vector registers */
#define FP4_BLOCK 32    /* e2m1 values per ue8m0 scale along K */
#define UE8M0_BIAS 127
/* bf16 weights at a few activation rows (decode's head): read straight from the checkpoint bits, no panel */
/* activation rows it takes (lowbit.DECODE_ROWS, all a decode-sized call has): each weight group is read from memory
 * once and met by every x chunk from L1; FMA-bound at 16 rows. Which rows the head sends here per build, and the
 * figures against the ordered GEMM: ops.fast.linear.HEAD_DIRECT_MAX_ROWS */
#define BF16_DIRECT_ROWS 16
#define BF16_DIRECT_CHUNK 4     /* activation rows per pass over a weight group: 4 x 4 accumulators in registers */
#define BF16_DIRECT_GROUP 4     /* weight rows in flight: 4 independent FMA chains per activation row */
/* FP8 / FP4 weights at a few activation rows (decode's linears and experts): dequantised in registers, no panel */
#define LOWBIT_DIRECT_ROWS 4    /* activation rows it takes (one pass: more would dequantise each weight twice) */
#define LOWBIT_DIRECT_GROUP 4   /* weight rows in flight */
/* AVX2 FP8 up to here: lowbit_direct_avx2 takes x AVX2_XCHUNK rows a pass, converting a weight group again per pass
 * (4 ops per 16 weights, the group in L1), which beats writing and reading the fp32 panel at 5-8 rows (the same
 * chains: identical bits). Measured (1 thread, A/B in one process, min of 9 rounds of 300 calls, noisy host):
 * 8 rows 256 x 256 31.8 -> 27.9 us, 512 x 512 124.5 -> 95.4; at 16 rows it was 45.0 -> 53.0 and 170.8 -> 160.6
 * (no clear gain: the panel stays). FP4's conversion costs more and keeps the panel above LOWBIT_DIRECT_ROWS. */
#define FP8_DIRECT_ROWS_AVX2 8
#define LOWBIT_PREFETCH_BYTES 4096 /* bytes ahead of each weight row read */
/* bf16_direct's prefetches go to L2, not L1: the L2's miss queue keeps more lines in flight than the L1's fill
 * buffers. Measured in the real-shape decode step (1 thread CPU, A/B in one process, 8 rounds, load ~1): the head
 * 9.95 -> 9.10 ms median, the step 16.72 -> 15.88; alone, 13.2 -> 10.9 ms (load 4) */
#define HEAD_HINT _MM_HINT_T1
#define PREFETCH_AHEAD 4096     /* elements (8 KiB) ahead of each weight row read: measured 1 thread, bf16
                                 * 129,280 x 512, 1 row: 8.7 ms without, 6.9-7.5 with 2-8 KiB ahead (the
                                 * hardware prefetcher alone keeps too few lines in flight) */
/* 2^8 x ue8m0(e) is exact for e <= this (2^128 overflows): then fp8x16's single product equals dequant_row's two */
#define FP8_FOLD_MAX_EXPONENT 246
#define LANES 16                /* the fp32 lanes of one accumulator: every build's chains are the AVX-512 zmm's */

static const float E2M1[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                               -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

static inline float bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* ue8m0 byte -> 2^(e - 127); e = 0 is the fp32 subnormal 2^-127. */
static inline float ue8m0(uint8_t e) { return e ? bits_to_f32((uint32_t)e << 23) : bits_to_f32(0x00400000u); }

/* e4m3fn byte -> float (finite codes): sign, 4 exponent bits (bias 7), 3 mantissa bits, subnormal step 2^-9. */
static inline float e4m3_scalar(uint8_t b) {
    int e = (b >> 3) & 15, m = b & 7;
    float v = e ? ldexpf(1.0f + m / 8.0f, e - 7) : ldexpf((float)m, -9);
    return (b & 0x80) ? -v : v;
}

/* The definition every build computes, in plain C: lane l of an output's accumulator takes fmaf(x[k], w[k], acc)
 * over k = l, l + 16, ... (a K tail's missing lanes x = w = +0, FMA still done), then the tree of GCC's
 * _mm512_reduce_add_ps: t[i] = a[i + 8] + a[i], u[j] = t[j + 4] + t[j], (u[0] + u[2]) + (u[1] + u[3]). */
static inline float sum16(const float *a) {
    float t[LANES / 2], u[LANES / 4];
    for (int i = 0; i < LANES / 2; i++) t[i] = a[i + LANES / 2] + a[i];
    for (int j = 0; j < LANES / 4; j++) u[j] = t[j + LANES / 4] + t[j];
    return (u[0] + u[2]) + (u[1] + u[3]);
}

/* x [K] . w [K] (fp32 weights, or bf16 bits when w16) as that definition */
static inline float chain16(const float *x, const float *w, const uint16_t *w16, int64_t K) {
    float acc[LANES] = {0.0f};
    for (int64_t k0 = 0; k0 < K; k0 += LANES)
        for (int l = 0; l < LANES; l++) {
            int64_t k = k0 + l;
            float xv = k < K ? x[k] : 0.0f, wv = k >= K ? 0.0f : w16 ? bits_to_f32((uint32_t)w16[k] << 16) : w[k];
            acc[l] = fmaf(xv, wv, acc[l]);
        }
    return sum16(acc);
}

#if defined(LOWBIT_AVX2) || defined(LOWBIT_AVX512) /* AVX-512 builds: its one-row FP8 / FP4 kernels (lowbit_gemm) */
#include "lowbit_avx2.h"
#endif

/* Row n (global index row0 + n) of W -> fp32 [K] in out. */
static void dequant_row(int fmt, const uint8_t *w, const uint8_t *scale, int64_t row, int64_t K, int64_t block,
                        float *out) {
    if (fmt == FMT_BF16) {
        const uint16_t *r = (const uint16_t *)w + row * K;
        int64_t k = 0;
#ifdef LOWBIT_AVX512
        for (; k + 16 <= K; k += 16) {
            __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(r + k)));
            _mm512_storeu_ps(out + k, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
        }
#elif defined(LOWBIT_AVX2)
        for (; k + 16 <= K; k += 16) lane16_store(out + k, bf16x16_avx2(r + k));
#endif
        for (; k < K; k++) out[k] = bits_to_f32((uint32_t)r[k] << 16);
    } else if (fmt == FMT_FP8) {
        const uint8_t *r = w + row * K;
        const uint8_t *srow = scale + (row / block) * ((K + block - 1) / block);
        int64_t k = 0;
#ifdef LOWBIT_AVX512
        /* e4m3 -> fp16 by bit placement (sign to bit 15, exponent|mantissa to bits 7..13) is the value x 2^-8;
         * the fp16 -> fp32 conversion is exact, then x 2^8 and x the block scale (both exact). */
        const __m512 two8 = _mm512_set1_ps(256.0f);
        for (int64_t b0 = 0; b0 < K; b0 += block) { /* one scale per block: no division per vector */
            int64_t end = b0 + block < K ? b0 + block : K;
            const __m512 s = _mm512_set1_ps(ue8m0(srow[b0 / block]));
            for (k = b0; k + 16 <= end; k += 16) {
                __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(r + k)));
                __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x80)), 8),
                                            _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x7f)), 7));
                _mm512_storeu_ps(out + k, _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtph_ps(h), two8), s));
            }
            for (; k < end; k++) out[k] = e4m3_scalar(r[k]) * ue8m0(srow[b0 / block]);
        }
#elif defined(LOWBIT_AVX2)
        const __m256 unscale = _mm256_set1_ps(FP8_UNSCALE); /* (value x 2^-120) x 2^120 x scale: one rounding */
        for (int64_t b0 = 0; b0 < K; b0 += block) {
            int64_t end = b0 + block < K ? b0 + block : K;
            const __m256 s = _mm256_set1_ps(ue8m0(srow[b0 / block]));
            for (k = b0; k + 16 <= end; k += 16) lane16_store(out + k, lane16_mul(fp8x16_direct(r + k, unscale), s));
            for (; k < end; k++) out[k] = e4m3_scalar(r[k]) * ue8m0(srow[b0 / block]);
        }
#endif
        for (; k < K; k++) out[k] = e4m3_scalar(r[k]) * ue8m0(srow[k / block]);
    } else { /* FMT_FP4 */
        const uint8_t *r = w + row * (K / 2);
        const uint8_t *srow = scale + row * (K / FP4_BLOCK);
        int64_t k = 0;
#ifdef LOWBIT_AVX512
        const __m512 lut = _mm512_loadu_ps(E2M1);
        const __m512i even = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        const __m512i odd = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        for (; k + FP4_BLOCK <= K; k += FP4_BLOCK) { /* 16 bytes = 32 values = one scale block */
            __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(r + k / 2)));
            __m512 lo = _mm512_permutexvar_ps(_mm512_and_si512(b, _mm512_set1_epi32(15)), lut); /* columns 2i */
            __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), lut);                   /* columns 2i+1 */
            __m512 s = _mm512_set1_ps(ue8m0(srow[k / FP4_BLOCK]));
            _mm512_storeu_ps(out + k, _mm512_mul_ps(_mm512_permutex2var_ps(lo, even, hi), s));
            _mm512_storeu_ps(out + k + 16, _mm512_mul_ps(_mm512_permutex2var_ps(lo, odd, hi), s));
        }
#elif defined(LOWBIT_AVX2)
        for (; k + FP4_BLOCK <= K; k += FP4_BLOCK) { /* 16 bytes = 32 values = one scale block */
            __m256 slut = _mm256_load_ps(FP4_LUTS[srow[k / FP4_BLOCK]]); /* fp4_scaled_lut(ue8m0(the byte)) */
            lane16_store(out + k, fp4x16_avx2(r + k / 2, slut));
            lane16_store(out + k + 16, fp4x16_avx2(r + k / 2 + 8, slut));
        }
#endif
        for (; k < K; k++) {
            uint8_t byte = r[k / 2];
            out[k] = E2M1[(k & 1) ? byte >> 4 : byte & 15] * ue8m0(srow[k / FP4_BLOCK]);
        }
    }
}

/* y[m0 .. m0+mr, n0 .. n0+nr] = x rows . panel rows (panel fp32 [nr, K]); mr <= MROWS, nr <= PANEL. */
static inline __attribute__((always_inline)) void tile(const float *x, int64_t K, const float *panel, float *y,
                                                       int64_t N, int64_t m0, int mr, int64_t n0, int nr) {
#ifdef LOWBIT_AVX512
    __m512 acc[MROWS][PANEL];
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) acc[i][j] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k < K; k += 16) {
        __mmask16 mask = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
        __m512 xv[MROWS];
        for (int i = 0; i < mr; i++) xv[i] = _mm512_maskz_loadu_ps(mask, x + (m0 + i) * K + k);
        for (int j = 0; j < nr; j++) {
            __m512 wv = _mm512_maskz_loadu_ps(mask, panel + j * K + k);
            for (int i = 0; i < mr; i++) acc[i][j] = _mm512_fmadd_ps(xv[i], wv, acc[i][j]);
        }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) y[(m0 + i) * N + n0 + j] = _mm512_reduce_add_ps(acc[i][j]);
#else
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) y[(m0 + i) * N + n0 + j] = chain16(x + (m0 + i) * K, panel + j * K, NULL, K);
#endif
}

/* Constant mr / nr so the accumulators stay in registers; edges take the same code with fewer rows. */
static void panel_gemm(const float *x, int64_t M, int64_t K, const float *panel, float *y, int64_t N, int64_t n0,
                       int nr) {
#ifdef LOWBIT_AVX2
    panel_gemm_avx2(x, M, K, panel, y, N, n0, nr);
    return;
#endif
    for (int64_t m0 = 0; m0 < M; m0 += MROWS) {
        int mr = M - m0 >= MROWS ? MROWS : (int)(M - m0);
        if (nr == PANEL) {
            if (mr == MROWS) tile(x, K, panel, y, N, m0, MROWS, n0, PANEL);
            else tile(x, K, panel, y, N, m0, 1, n0, PANEL);
        } else {
            tile(x, K, panel, y, N, m0, mr, n0, nr);
        }
    }
}

#ifdef LOWBIT_AVX512
static inline __m512 bf16x16(const uint16_t *p, __mmask16 mask) { /* 16 bf16 -> fp32 (exact), masked lanes 0 */
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p)), 16));
}
#endif

#ifndef LOWBIT_AVX2 /* AVX2: bf16_direct_avx2 (lowbit_avx2.h) */
/* Weight rows [n0, n0 + nr) (bf16 [N, K], global rows row0 + n) against mr activation rows, bit-identical to
 * dequant_row + tile: each output is one 16-lane fp32 FMA chain over k in order (the same masked tail), then the
 * same horizontal sum; only the schedule differs (the weight converted in registers, lines prefetched ahead). */
static inline __attribute__((always_inline)) void bf16_direct_group(const float *x, int mr, int64_t K,
                                                                    const uint16_t *w, int64_t row0, int64_t n0,
                                                                    int nr, float *y, int64_t N) {
#ifdef LOWBIT_AVX512
    __m512 acc[BF16_DIRECT_CHUNK][BF16_DIRECT_GROUP];
    const uint16_t *b = w + (row0 + n0) * K;
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) acc[i][j] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) {
        __mmask16 mask = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
        if ((k & 31) == 0) /* one prefetch per 64-byte line of each row */
            for (int j = 0; j < nr; j++) _mm_prefetch((const char *)(b + j * K + k + PREFETCH_AHEAD), HEAD_HINT);
        __m512 xv[BF16_DIRECT_CHUNK];
        for (int i = 0; i < mr; i++) xv[i] = _mm512_maskz_loadu_ps(mask, x + i * K + k);
        for (int j = 0; j < nr; j++) {
            __m512 wv = bf16x16(b + j * K + k, mask);
            for (int i = 0; i < mr; i++) acc[i][j] = _mm512_fmadd_ps(xv[i], wv, acc[i][j]);
        }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) y[i * N + n0 + j] = _mm512_reduce_add_ps(acc[i][j]);
#else
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) y[i * N + n0 + j] = chain16(x + i * K, NULL, w + (row0 + n0 + j) * K, K);
#endif
}

/* M <= BF16_DIRECT_ROWS rows of x against bf16 W, weight-row groups split over the threads; x rows in chunks. */
static void bf16_direct(const float *x, int64_t M, int64_t K, const uint16_t *w, int64_t N, int64_t row0, float *y,
                        int nthreads) {
    int64_t groups = (N + BF16_DIRECT_GROUP - 1) / BF16_DIRECT_GROUP;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        int64_t n0 = g * BF16_DIRECT_GROUP;
        int nr = N - n0 >= BF16_DIRECT_GROUP ? BF16_DIRECT_GROUP : (int)(N - n0);
        for (int64_t m0 = 0; m0 < M; m0 += BF16_DIRECT_CHUNK) { /* later chunks find the group's lines in L1 */
            const float *xc = x + m0 * K;
            float *yc = y + m0 * N;
            int mr = M - m0 >= BF16_DIRECT_CHUNK ? BF16_DIRECT_CHUNK : (int)(M - m0);
            switch (nr == BF16_DIRECT_GROUP ? mr : 0) { /* constant trip counts keep acc in registers */
            case 1: bf16_direct_group(xc, 1, K, w, row0, n0, BF16_DIRECT_GROUP, yc, N); break;
            case 2: bf16_direct_group(xc, 2, K, w, row0, n0, BF16_DIRECT_GROUP, yc, N); break;
            case 3: bf16_direct_group(xc, 3, K, w, row0, n0, BF16_DIRECT_GROUP, yc, N); break;
            case 4: bf16_direct_group(xc, 4, K, w, row0, n0, BF16_DIRECT_GROUP, yc, N); break;
            default: bf16_direct_group(xc, mr, K, w, row0, n0, nr, yc, N);
            }
        }
    }
}
#endif

#ifdef LOWBIT_AVX512
/* 16 e4m3 bytes (masked lanes 0) -> their fp32 values x s256 = 2^8 x the block scale. The byte placed in fp16
 * (b << 8, arithmetic >> 1, bit 14 cleared: sign at 15, exponent|mantissa at 7..13) is the value x 2^-8, as in
 * dequant_row; its fp16 -> fp32 conversion is exact, so one product rounds exactly once, like dequant_row's
 * (v x 2^8) x s (whose first product is exact) whenever 2^8 x s is itself exact (fp8_fold). */
static inline __m512 fp8x16(const uint8_t *p, __mmask16 mask, __m512 s256) {
    __m256i b = _mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(mask, p));
    __m256i h = _mm256_and_si256(_mm256_srai_epi16(_mm256_slli_epi16(b, 8), 1), _mm256_set1_epi16((short)0xBFFF));
    return _mm512_maskz_mul_ps(mask, _mm512_cvtph_ps(h), s256);
}

/* 32 e4m3 bytes -> columns [0, 16) in *lo and [16, 32) in *hi, each as fp8x16 computes it (the placement done on
 * 512 bits at once, then two exact fp16 -> fp32 conversions). */
static inline void fp8x32(const uint8_t *p, __m512 s256, __m512 *lo, __m512 *hi) {
    __m512i b = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)p));
    __m512i h = _mm512_and_si512(_mm512_srai_epi16(_mm512_slli_epi16(b, 8), 1), _mm512_set1_epi16((short)0xBFFF));
    *lo = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), s256);
    *hi = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), s256);
}

/* 16 bytes = 32 e2m1 values (low nibble = even column) x s -> columns [0, 16) in *lo, [16, 32) in *hi, the same
 * lookups, interleave and product as dequant_row. */
static inline void fp4x32(const uint8_t *p, __m512 s, __m512 *lo, __m512 *hi) {
    const __m512 lut = _mm512_loadu_ps(E2M1);
    const __m512i even = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i odd = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
    __m512 l = _mm512_permutexvar_ps(_mm512_and_si512(b, _mm512_set1_epi32(15)), lut);
    __m512 h = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), lut);
    *lo = _mm512_mul_ps(_mm512_permutex2var_ps(l, even, h), s);
    *hi = _mm512_mul_ps(_mm512_permutex2var_ps(l, odd, h), s);
}


/* FP8 / FP4 weight rows [n0, n0 + nr) (global rows row0 + n) against mr activation rows, bit-identical to
 * dequant_row + tile: each output is one 16-lane FMA chain over k in order (the same masked tail) of the same
 * dequantised values, then the same horizontal sum; the weight is dequantised in registers and prefetched ahead. */
static inline __attribute__((always_inline)) void lowbit_direct_group(const float *x, int mr, int64_t K, int fmt,
                                                                      const uint8_t *w, const uint8_t *scale,
                                                                      int64_t block, int64_t row0, int64_t n0,
                                                                      int nr, float *y, int64_t N) {
    __m512 acc[LOWBIT_DIRECT_ROWS][LOWBIT_DIRECT_GROUP];
    const int64_t rowbytes = fmt == FMT_FP8 ? K : K / 2;
    const uint8_t *b = w + (row0 + n0) * rowbytes;
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) acc[i][j] = _mm512_setzero_ps();
    if (fmt == FMT_FP8) {
        const int64_t kblocks = (K + block - 1) / block;
        const __m512 two8 = _mm512_set1_ps(256.0f);
        for (int64_t b0 = 0; b0 < K; b0 += block) {
            __m512 s[LOWBIT_DIRECT_GROUP], s256[LOWBIT_DIRECT_GROUP];
            int fold = 1;
            for (int j = 0; j < nr; j++) {
                uint8_t e = scale[((row0 + n0 + j) / block) * kblocks + b0 / block];
                fold &= e <= FP8_FOLD_MAX_EXPONENT;
                s[j] = _mm512_set1_ps(ue8m0(e));
                s256[j] = _mm512_mul_ps(s[j], two8);
            }
            int64_t end = b0 + block < K ? b0 + block : K, k = b0;
            for (; k + 32 <= end; k += 32) { /* 32 columns a step: the byte -> fp16 placement on 512 bits */
                if ((k & 63) == 0) /* one prefetch per 64-byte line of each row */
                    for (int j = 0; j < nr; j++)
                        _mm_prefetch((const char *)(b + j * K + k + LOWBIT_PREFETCH_BYTES), _MM_HINT_T0);
                __m512 xa[LOWBIT_DIRECT_ROWS], xb[LOWBIT_DIRECT_ROWS];
                for (int i = 0; i < mr; i++) {
                    xa[i] = _mm512_loadu_ps(x + i * K + k);
                    xb[i] = _mm512_loadu_ps(x + i * K + k + 16);
                }
                for (int j = 0; j < nr; j++) {
                    __m512 wa, wb;
                    fp8x32(b + j * K + k, fold ? s256[j] : two8, &wa, &wb);
                    if (!fold) {
                        wa = _mm512_mul_ps(wa, s[j]);
                        wb = _mm512_mul_ps(wb, s[j]);
                    }
                    for (int i = 0; i < mr; i++) acc[i][j] = _mm512_fmadd_ps(xa[i], wa, acc[i][j]);
                    for (int i = 0; i < mr; i++) acc[i][j] = _mm512_fmadd_ps(xb[i], wb, acc[i][j]);
                }
            }
            for (; k < end; k += 16) {
                __mmask16 mask = end - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (end - k)) - 1);
                if ((k & 63) == 0) /* one prefetch per 64-byte line of each row */
                    for (int j = 0; j < nr; j++)
                        _mm_prefetch((const char *)(b + j * K + k + LOWBIT_PREFETCH_BYTES), _MM_HINT_T0);
                __m512 xv[LOWBIT_DIRECT_ROWS];
                for (int i = 0; i < mr; i++) xv[i] = _mm512_maskz_loadu_ps(mask, x + i * K + k);
                for (int j = 0; j < nr; j++) {
                    __m512 wv = fold ? fp8x16(b + j * K + k, mask, s256[j])
                                     : _mm512_mul_ps(fp8x16(b + j * K + k, mask, two8), s[j]);
                    for (int i = 0; i < mr; i++) acc[i][j] = _mm512_fmadd_ps(xv[i], wv, acc[i][j]);
                }
            }
        }
    } else { /* FMT_FP4, K a multiple of FP4_BLOCK */
        for (int64_t k = 0; k < K; k += FP4_BLOCK) {
            if ((k & 127) == 0) /* 128 columns = one 64-byte line of each row */
                for (int j = 0; j < nr; j++)
                    _mm_prefetch((const char *)(b + j * rowbytes + k / 2 + LOWBIT_PREFETCH_BYTES), _MM_HINT_T0);
            __m512 xlo[LOWBIT_DIRECT_ROWS], xhi[LOWBIT_DIRECT_ROWS];
            for (int i = 0; i < mr; i++) {
                xlo[i] = _mm512_loadu_ps(x + i * K + k);
                xhi[i] = _mm512_loadu_ps(x + i * K + k + 16);
            }
            for (int j = 0; j < nr; j++) {
                __m512 lo, hi;
                fp4x32(b + j * rowbytes + k / 2, _mm512_set1_ps(ue8m0(scale[(row0 + n0 + j) * (K / FP4_BLOCK) +
                                                                             k / FP4_BLOCK])), &lo, &hi);
                for (int i = 0; i < mr; i++) acc[i][j] = _mm512_fmadd_ps(xlo[i], lo, acc[i][j]);
                for (int i = 0; i < mr; i++) acc[i][j] = _mm512_fmadd_ps(xhi[i], hi, acc[i][j]);
            }
        }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) y[i * N + n0 + j] = _mm512_reduce_add_ps(acc[i][j]);
}
#endif

#if defined(LOWBIT_AVX512) || defined(LOWBIT_AVX2)
/* Whether lowbit_direct takes this call: few rows, FP8 blocks of whole vectors, FP4 whole scale blocks. */
static int lowbit_direct_applies(int fmt, int64_t M, int64_t K, int64_t block) {
#ifdef LOWBIT_AVX2
    if (fmt == FMT_FP8 && M <= FP8_DIRECT_ROWS_AVX2) return block > 0 && block % 16 == 0;
#endif
    return M <= LOWBIT_DIRECT_ROWS && ((fmt == FMT_FP8 && block > 0 && block % 16 == 0) ||
                                       (fmt == FMT_FP4 && K % FP4_BLOCK == 0));
}

#endif

#ifdef LOWBIT_AVX512 /* AVX2: lowbit_direct_avx2 (lowbit_avx2.h) */
/* M <= LOWBIT_DIRECT_ROWS rows of x against FP8 / FP4 W; weight-row groups split over the threads. The first
 * LOWBIT_PREFETCH_BYTES of the rows are requested up front (the loop's prefetches run that far ahead). */
static void lowbit_direct(const float *x, int64_t M, int64_t K, int fmt, const uint8_t *w, const uint8_t *scale,
                          int64_t N, int64_t block, int64_t row0, float *y, int nthreads) {
    int64_t rowbytes = fmt == FMT_FP8 ? K : K / 2, groups = (N + LOWBIT_DIRECT_GROUP - 1) / LOWBIT_DIRECT_GROUP;
    int64_t head = N * rowbytes < LOWBIT_PREFETCH_BYTES ? N * rowbytes : LOWBIT_PREFETCH_BYTES;
    for (int64_t off = 0; off < head; off += 64) _mm_prefetch((const char *)(w + row0 * rowbytes + off), _MM_HINT_T0);
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        int64_t n0 = g * LOWBIT_DIRECT_GROUP;
        int nr = N - n0 >= LOWBIT_DIRECT_GROUP ? LOWBIT_DIRECT_GROUP : (int)(N - n0);
        if (nr != LOWBIT_DIRECT_GROUP) {
            lowbit_direct_group(x, (int)M, K, fmt, w, scale, block, row0, n0, nr, y, N);
            continue;
        }
        /* constant trip counts and format keep acc in registers */
#define LOWBIT_DIRECT_CASE(rows)                                                                            \
    case rows:                                                                                              \
        if (fmt == FMT_FP8)                                                                                 \
            lowbit_direct_group(x, rows, K, FMT_FP8, w, scale, block, row0, n0, LOWBIT_DIRECT_GROUP, y, N); \
        else                                                                                                \
            lowbit_direct_group(x, rows, K, FMT_FP4, w, scale, block, row0, n0, LOWBIT_DIRECT_GROUP, y, N); \
        break;
        switch (M) {
            LOWBIT_DIRECT_CASE(1)
            LOWBIT_DIRECT_CASE(2)
            LOWBIT_DIRECT_CASE(3)
            LOWBIT_DIRECT_CASE(4)
        default: lowbit_direct_group(x, (int)M, K, fmt, w, scale, block, row0, n0, nr, y, N);
        }
#undef LOWBIT_DIRECT_CASE
    }
}
#endif

/* The entry point. Returns 0, or -1 when a per-thread panel cannot be allocated (the caller falls back). */
int lowbit_gemm(const float *x, int64_t M, int64_t K, const void *w, const uint8_t *scale, int fmt, int64_t N,
                int64_t block, int64_t row0, float *y, int nthreads) {
    if (fmt == FMT_BF16 && M <= BF16_DIRECT_ROWS) {
#ifdef LOWBIT_AVX2
        return bf16_direct_avx2(x, M, K, (const uint16_t *)w, N, row0, y, nthreads);
#else
        bf16_direct(x, M, K, (const uint16_t *)w, N, row0, y, nthreads);
        return 0;
#endif
    }
#if defined(LOWBIT_AVX512) || defined(LOWBIT_AVX2) /* plain C: the panel path computes the same chains */
    if (lowbit_direct_applies(fmt, M, K, block)) {
#ifdef LOWBIT_AVX2
        return lowbit_direct_avx2(x, M, K, fmt, (const uint8_t *)w, scale, N, block, row0, y, nthreads);
#else
        /* one FP8 / FP4 row: the AVX2 kernels beat the zmm ones on AMD Zen 4 (FP8: x' f products, x prescaled per
         * block and the weight placed in fp16 and widened, no multiply per weight; FP4: scaled lookup tables made
         * once). 1 thread, warm, min of 30 calls: FP8 8192 x 256 189 -> 132 us, 2048 x 256 68 -> 37, 512 x 1024
         * 51 -> 36; FP4 512 x 512 33 -> 26. The same chains: identical bits */
        if ((fmt == FMT_FP8 || fmt == FMT_FP4) && M == 1)
            return lowbit_direct_avx2(x, M, K, fmt, (const uint8_t *)w, scale, N, block, row0, y, nthreads);
        lowbit_direct(x, M, K, fmt, (const uint8_t *)w, scale, N, block, row0, y, nthreads);
        return 0;
#endif
    }
#endif
    int failed = 0;
    int64_t panels = (N + PANEL - 1) / PANEL;
#pragma omp parallel num_threads(nthreads) reduction(|: failed)
    {
        float *panel = (float *)malloc(sizeof(float) * PANEL * (size_t)K);
        if (!panel) failed = 1;
#pragma omp for schedule(static)
        for (int64_t p = 0; p < panels; p++) {
            if (!panel) continue;
            int64_t n0 = p * PANEL;
            int nr = N - n0 >= PANEL ? PANEL : (int)(N - n0);
            for (int j = 0; j < nr; j++) dequant_row(fmt, (const uint8_t *)w, scale, row0 + n0 + j, K, block,
                                                     panel + j * K);
            panel_gemm(x, M, K, panel, y, N, n0, nr);
        }
        free(panel);
    }
    return failed ? -1 : 0;
}

/* Which kernels this build compiled: ISA_AVX512, ISA_AVX2 or ISA_PLAIN (tests check a build is what its flags say). */
int lowbit_isa(void) {
#if defined(LOWBIT_AVX512)
    return ISA_AVX512;
#elif defined(LOWBIT_AVX2)
    return ISA_AVX2;
#else
    return ISA_PLAIN;
#endif
}

/* Rows [row0, row0 + rows) of W -> fp32 out [rows, K] (the prefill path's tile for torch's GEMM). */
void lowbit_dequant(const void *w, const uint8_t *scale, int fmt, int64_t K, int64_t block, int64_t row0,
                    int64_t rows, float *out, int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t n = 0; n < rows; n++) dequant_row(fmt, (const uint8_t *)w, scale, row0 + n, K, block, out + n * K);
}
