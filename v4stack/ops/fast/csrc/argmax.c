/* Greedy decoding's argmax over each row of fp32 logits (loaded by v4stack/ops/fast/argmax.py), with torch.argmax's
 * answer: the first index of the largest value, where a NaN counts as the largest (the first NaN wins) and -0.0 ties
 * with +0.0. torch's reduction runs ~2 ns a value (0.2-0.35 ms for a 129,280-entry vocabulary); here one pass finds
 * the maximum and a second the first index holding it, both over data still in cache from the head. */
#include <math.h>
#include <stdint.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#define ARGMAX_AVX512 1
#elif defined(__AVX2__)
#include <immintrin.h>
#define ARGMAX_AVX2 1
#endif

#define ARGMAX_LANES 16 /* fp32 values per AVX-512 register */
#define ARGMAX_AVX2_LANES 8 /* fp32 values per AVX2 register */

/* First index of the largest value of x [n] (n >= 1) under torch's rule. */
static int64_t argmax_row(const float *x, int64_t n) {
    int64_t i = 0;
    float best = x[0];
#ifdef ARGMAX_AVX512
    __m512 vmax = _mm512_set1_ps(x[0]);
    __mmask16 nan = 0;
    for (; i + ARGMAX_LANES <= n; i += ARGMAX_LANES) {
        __m512 v = _mm512_loadu_ps(x + i);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        vmax = _mm512_max_ps(vmax, v);
    }
    if (!nan) {
        best = _mm512_reduce_max_ps(vmax);
        for (; i < n; i++) { /* the tail */
            if (isnan(x[i])) break;
            if (x[i] > best) best = x[i];
        }
        if (i == n) { /* no NaN anywhere: the first index equal to the maximum */
            const __m512 b = _mm512_set1_ps(best);
            for (i = 0; i + ARGMAX_LANES <= n; i += ARGMAX_LANES) {
                __mmask16 hit = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), b, _CMP_EQ_OQ);
                if (hit) return i + __builtin_ctz((unsigned)hit);
            }
            for (; i < n; i++)
                if (x[i] == best) return i;
        }
    }
    i = 0; /* a NaN somewhere: the scalar rule below finds the first one */
    best = x[0];
#elif defined(ARGMAX_AVX2)
    /* the AVX-512 path's two passes on 8 lanes: _mm256_max_ps(v, m) is (v > m ? v : m) per lane, so with no NaN
     * the lanes hold the maxima of their values (a zero of either sign: both compare equal in the second pass,
     * which returns the first index equal to the maximum, the scalar rule's answer) */
    __m256 vmax = _mm256_set1_ps(x[0]), nan = _mm256_setzero_ps();
    for (; i + ARGMAX_AVX2_LANES <= n; i += ARGMAX_AVX2_LANES) {
        __m256 v = _mm256_loadu_ps(x + i);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        vmax = _mm256_max_ps(v, vmax);
    }
    if (!_mm256_movemask_ps(nan)) {
        float lanes[ARGMAX_AVX2_LANES];
        _mm256_storeu_ps(lanes, vmax);
        for (int l = 0; l < ARGMAX_AVX2_LANES; l++) best = lanes[l] > best ? lanes[l] : best;
        for (; i < n; i++) { /* the tail */
            if (isnan(x[i])) break;
            if (x[i] > best) best = x[i];
        }
        if (i == n) { /* no NaN anywhere: the first index equal to the maximum */
            const __m256 b = _mm256_set1_ps(best);
            for (i = 0; i + ARGMAX_AVX2_LANES <= n; i += ARGMAX_AVX2_LANES) {
                int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), b, _CMP_EQ_OQ));
                if (hit) return i + __builtin_ctz((unsigned)hit);
            }
            for (; i < n; i++)
                if (x[i] == best) return i;
        }
    }
    i = 0; /* a NaN somewhere: the scalar rule below finds the first one */
    best = x[0];
#endif
    int64_t arg = 0;
    if (isnan(best)) return 0;
    for (i = 1; i < n; i++) {
        if (isnan(x[i])) return i;
        if (x[i] > best) {
            best = x[i];
            arg = i;
        }
    }
    return arg;
}

/* x [rows, n] fp32 contiguous (n >= 1) -> out [rows] int64. */
void argmax_rows(const float *x, int64_t rows, int64_t n, int64_t *out) {
    for (int64_t r = 0; r < rows; r++) out[r] = argmax_row(x + r * n, n);
}
