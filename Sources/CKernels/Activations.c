// Element-wise activations and softmax with an AVX2 exponential, chosen at run time.

#include "CKernels.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define LMC_X86 1
#include <immintrin.h>
#endif

// sqrt(2/pi), doubled: 0.5·(1 + tanh(u)) = 1 / (1 + e^(-2u)).
static const float kGeluTwoC = 2.0f * 0.7978845608028654f;

static inline float gelu_scalar(float x) {
    if (x > 10.0f) return x;
    if (x < -10.0f) return 0.0f;
    return x / (1.0f + expf(-kGeluTwoC * x * (1.0f + 0.044715f * x * x)));
}

#ifdef LMC_X86
#define LMC_AVX2 __attribute__((target("avx2,fma,f16c")))

// e^x for x in [-87, 88] (inputs are clamped): 2^n · p(r) with r = x − n·ln2, |r| ≤ ln2/2, and a
// degree-6 polynomial; relative error below 1e-6.
LMC_AVX2 static inline __m256 exp_avx2(__m256 input) {
    // Below -87 (and for -inf) the result is 0.
    __m256 underflow = _mm256_cmp_ps(input, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
    __m256 x = _mm256_min_ps(_mm256_max_ps(input, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

LMC_AVX2 static inline __m256 round_half_avx2(__m256 v) {
    return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

LMC_AVX2 static void geglu_avx2(float *gate, const float *up, int64_t n, int half) {
    int64_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f), c = _mm256_set1_ps(-kGeluTwoC), k = _mm256_set1_ps(0.044715f);
    const __m256 hi = _mm256_set1_ps(10.0f), lo = _mm256_set1_ps(-10.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(gate + i);
        if (half) x = round_half_avx2(x);
        __m256 u = _mm256_mul_ps(_mm256_mul_ps(c, x), _mm256_fmadd_ps(_mm256_mul_ps(k, x), x, one));
        __m256 g = _mm256_div_ps(x, _mm256_add_ps(one, exp_avx2(u)));
        g = _mm256_blendv_ps(g, x, _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
        g = _mm256_blendv_ps(g, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
        if (half) g = round_half_avx2(g);
        _mm256_storeu_ps(gate + i, _mm256_mul_ps(g, _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) {
        float x = half ? lmc_round_f16_scalar(gate[i]) : gate[i];
        float g = gelu_scalar(x);
        gate[i] = (half ? lmc_round_f16_scalar(g) : g) * up[i];
    }
}

LMC_AVX2 static void softmax_avx2(float *x, int64_t n) {
    __m256 mv = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    float m = -INFINITY;
    float lanes[8];
    _mm256_storeu_ps(lanes, mv);
    for (int j = 0; j < 8; j++) m = lanes[j] > m ? lanes[j] : m;
    for (int64_t j = i; j < n; j++) m = x[j] > m ? x[j] : m;
    __m256 mm = _mm256_set1_ps(m), sv = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), mm));
        _mm256_storeu_ps(x + i, e);
        sv = _mm256_add_ps(sv, e);
    }
    _mm256_storeu_ps(lanes, sv);
    float sum = 0;
    for (int j = 0; j < 8; j++) sum += lanes[j];
    for (int64_t j = i; j < n; j++) {
        x[j] = expf(x[j] - m);
        sum += x[j];
    }
    __m256 inv = _mm256_set1_ps(1.0f / sum);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (int64_t j = i; j < n; j++) x[j] *= 1.0f / sum;
}
#endif

void lmc_geglu_tanh(float *gate, const float *up, int64_t n, int round_half) {
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) {
        geglu_avx2(gate, up, n, round_half);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
        float x = round_half ? lmc_round_f16_scalar(gate[i]) : gate[i];
        float g = gelu_scalar(x);
        gate[i] = (round_half ? lmc_round_f16_scalar(g) : g) * up[i];
    }
}

void lmc_softmax(float *x, int64_t n) {
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) {
        softmax_avx2(x, n);
        return;
    }
#endif
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    float sum = 0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}
