/* MoE routing of decode-sized calls after the gate GEMM, in one call (loaded by v4stack/ops/fast/route_kernel.py):
 * the score function, the selection bias, top-k (or the hash layers' tid2eid row), the gather, the
 * renormalisation and route_scale, the arithmetic of ops.reference.moe.route:
 *
 *     s = score(logits)                                  [T, E] fp32
 *     idx = topk(s + bias) | tid2eid[token_id]           [T, k]  (descending; ties: the lower expert id first)
 *     w = s[idx] / sum_j s[idx_j] * route_scale          [T, k]  (no renormalisation for softmax)
 *
 * Rounding points: the scores are rounded to fp32 where torch rounds them (softplus before the square root; the
 * softmax's x - max, each exponential and the sum), the transcendentals themselves are libm's double exp / log1p
 * rounded once to fp32 (torch's vectorised Sleef / MKL ones are within an ulp of the true value, so a score may
 * differ from torch's by an fp32 ulp); the bias add, the sum over the k picks (in slot order), the division and
 * the route_scale product are single fp32 operations. No vector code: every build gives the same bits. */
#include <math.h>
#include <stdint.h>

#define SCORE_SQRTSOFTPLUS 0 /* ops.fast.route_kernel.SCORE_CODES */
#define SCORE_SIGMOID 1
#define SCORE_SOFTMAX 2
#define SOFTPLUS_THRESHOLD 20.0f /* torch's F.softplus default: above it softplus(x) is x */
#define ROUTE_MAX_EXPERTS 1024   /* route_kernel.MAX_EXPERTS: the per-row scratch on the stack */

#define ROUTE_OK 0
#define ROUTE_BAD_SHAPE 1  /* k or E outside what the kernel takes */
#define ROUTE_BAD_INDEX 2  /* a token id outside tid2eid, or an expert id outside [0, E): the caller's torch path */

/* Scores of one row: logits [E] -> s [E], each rounded to fp32 where torch rounds it. */
static void row_scores(const float *logits, int64_t n, int score_func, float *s) {
    if (score_func == SCORE_SOFTMAX) {
        float max = logits[0];
        for (int64_t e = 1; e < n; e++) max = (logits[e] > max || isnan(logits[e])) ? logits[e] : max;
        float sum = 0.0f;
        for (int64_t e = 0; e < n; e++) {
            const float d = logits[e] - max; /* fp32, as torch's exp(x - max) */
            s[e] = (float)exp((double)d);
            sum += s[e];
        }
        for (int64_t e = 0; e < n; e++) s[e] = s[e] / sum;
    } else if (score_func == SCORE_SIGMOID) {
        for (int64_t e = 0; e < n; e++) s[e] = (float)(1.0 / (1.0 + exp(-(double)logits[e])));
    } else {
        for (int64_t e = 0; e < n; e++) {
            const float x = logits[e];
            const float softplus = x > SOFTPLUS_THRESHOLD ? x : (float)log1p(exp((double)x));
            s[e] = sqrtf(softplus);
        }
    }
}

/* a ranks before b (a at a lower index than b): larger, a NaN counting as the largest (torch's descending sort);
 * equal values keep the lower index first, so the caller scans upward and replaces only on "better". */
static int better(float a, float b) { return (a > b) || (isnan(a) && !isnan(b)); }

/* The k best experts of sel [E] (k <= E), descending with the lower index first on ties -> idx [k]: one pass in
 * index order keeping the best so far ranked in idx (an expert enters only when strictly better than the k-th, and
 * moves only past strictly worse ones, so among equals the earlier index stays ahead: the stable sort's first k). */
static void top_k(const float *sel, int64_t n, int64_t k, int64_t *idx) {
    int64_t kept = 0;
    for (int64_t e = 0; e < n; e++) {
        if (kept == k && !better(sel[e], sel[idx[k - 1]])) continue;
        int64_t j = kept < k ? kept++ : k - 1;
        for (; j > 0 && better(sel[e], sel[idx[j - 1]]); j--) idx[j] = idx[j - 1];
        idx[j] = e;
    }
}

/* logits [rows, n_experts] fp32 (the gate GEMM's output) -> weights [rows, k] fp32, experts [rows, k] int64.
 * bias [n_experts] fp32 for score-routed layers (tid2eid NULL); for hash layers tid2eid [vocab, k] int64 and
 * token_ids [rows] int64 (bias ignored). softmax: 1 when score_func is SCORE_SOFTMAX (no renormalisation).
 * Returns ROUTE_OK, or ROUTE_BAD_SHAPE / ROUTE_BAD_INDEX with the outputs partly written (the caller then takes its
 * torch path, which raises on the bad index). */
int moe_route(const float *logits, int64_t rows, int64_t n_experts, int score_func, const float *bias,
              const int64_t *tid2eid, int64_t vocab, const int64_t *token_ids, int64_t k, float route_scale,
              float *weights, int64_t *experts) {
    if (n_experts < 1 || n_experts > ROUTE_MAX_EXPERTS || k < 1 || k > n_experts) return ROUTE_BAD_SHAPE;
    float s[ROUTE_MAX_EXPERTS], sel[ROUTE_MAX_EXPERTS];
    for (int64_t r = 0; r < rows; r++) {
        row_scores(logits + r * n_experts, n_experts, score_func, s);
        int64_t *idx = experts + r * k;
        if (tid2eid) {
            const int64_t t = token_ids[r];
            if (t < 0 || t >= vocab) return ROUTE_BAD_INDEX;
            for (int64_t j = 0; j < k; j++) {
                idx[j] = tid2eid[t * k + j];
                if (idx[j] < 0 || idx[j] >= n_experts) return ROUTE_BAD_INDEX;
            }
        } else {
            for (int64_t e = 0; e < n_experts; e++) sel[e] = s[e] + bias[e];
            top_k(sel, n_experts, k, idx);
        }
        float *w = weights + r * k;
        float sum = 0.0f;
        for (int64_t j = 0; j < k; j++) {
            w[j] = s[idx[j]];
            sum += w[j];
        }
        for (int64_t j = 0; j < k; j++) w[j] = (score_func == SCORE_SOFTMAX ? w[j] : w[j] / sum) * route_scale;
    }
    return ROUTE_OK;
}
