// Element-wise activations and softmax with an AVX2 exponential, chosen at run time.

#include "CKernels.h"

#include <math.h>
#include <pthread.h>
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

// Softmax with expf and a double sum (the path without AVX2).
static void softmax_scalar(float *x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        sum += (double)x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
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

LMC_AVX2 static void geglu_avx2(float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f), c = _mm256_set1_ps(-kGeluTwoC), k = _mm256_set1_ps(0.044715f);
    const __m256 hi = _mm256_set1_ps(10.0f), lo = _mm256_set1_ps(-10.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(gate + i);
        __m256 u = _mm256_mul_ps(_mm256_mul_ps(c, x), _mm256_fmadd_ps(_mm256_mul_ps(k, x), x, one));
        __m256 g = _mm256_div_ps(x, _mm256_add_ps(one, exp_avx2(u)));
        g = _mm256_blendv_ps(g, x, _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
        g = _mm256_blendv_ps(g, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
        _mm256_storeu_ps(gate + i, _mm256_mul_ps(g, _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) gate[i] = gelu_scalar(gate[i]) * up[i];
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

void lmc_geglu_tanh(float *gate, const float *up, int64_t n) {
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) {
        geglu_avx2(gate, up, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) gate[i] = gelu_scalar(gate[i]) * up[i];
}

void lmc_softmax(float *x, int64_t n) {
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) {
        softmax_avx2(x, n);
        return;
    }
#endif
    softmax_scalar(x, n);
}

// MARK: - llama.cpp's half-precision GELU and its softmax

// GELU (tanh form) of every half-precision input, rounded to half precision. llama.cpp's CPU backend
// reads GELU from such a table; computing it directly gives a different half-precision value
// whenever the exact result sits near a rounding boundary.
static float gelu_half_table[65536];
static pthread_once_t gelu_half_once = PTHREAD_ONCE_INIT;

static uint16_t f32_to_f16_bits(float f) {
    uint16_t h;
    lmc_convert_f32_to_f16(&f, &h, 1);
    return h;
}

static void build_gelu_half_table(void) {
    const float c = 0.79788456080286535587989211986876f;  // sqrt(2/pi)
    for (uint32_t bits = 0; bits < 65536; bits++) {
        float x = lmc_f16_to_f32((uint16_t)bits);
        // llama.cpp's build contracts 1 + a·x·x into a fused multiply-add; so does the table here.
        float y = 0.5f * x * (1.0f + tanhf(c * x * fmaf(0.044715f * x, x, 1.0f)));
        gelu_half_table[bits] = lmc_round_f16_scalar(y);
    }
}

#ifdef LMC_X86
LMC_AVX2 static void geglu_table_avx2(float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    const __m256 hi = _mm256_set1_ps(10.0f), lo = _mm256_set1_ps(-10.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(gate + i);
        __m256i idx = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
        __m256 g = _mm256_i32gather_ps(gelu_half_table, idx, 4);
        // At or beyond ±10 the table is not used: GELU is x above, 0 below.
        g = _mm256_blendv_ps(g, x, _mm256_cmp_ps(x, hi, _CMP_GE_OQ));
        g = _mm256_blendv_ps(g, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LE_OQ));
        _mm256_storeu_ps(gate + i, _mm256_mul_ps(g, _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) {
        float x = gate[i];
        float g = x <= -10.0f ? 0.0f : (x >= 10.0f ? x : gelu_half_table[f32_to_f16_bits(x)]);
        gate[i] = g * up[i];
    }
}
#endif

void lmc_geglu_tanh_half_table(float *gate, const float *up, int64_t n) {
    pthread_once(&gelu_half_once, build_gelu_half_table);
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) {
        geglu_table_avx2(gate, up, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
        float x = gate[i];
        float g = x <= -10.0f ? 0.0f : (x >= 10.0f ? x : gelu_half_table[f32_to_f16_bits(x)]);
        gate[i] = g * up[i];
    }
}

#ifdef LMC_X86
// e^x as 2^k · (1 + p(r)), k = round(x / ln 2), r = x − k·ln 2 in two steps, p a degree-5 polynomial
// without constant term: the reduction constants and coefficients of ggml's AVX2 exponential, so
// that softmax probabilities agree with llama.cpp's to the last bit. Lanes with |k| > 126 (results
// below 2^-126 or overflowing) take expf.
LMC_AVX2 static inline __m256 exp_ggml_avx2(__m256 x) {
    const __m256 shift = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shift);
    const __m256 k = _mm256_sub_ps(z, shift);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0x1.62e4p-1f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0x1.7f7d1cp-20f), r);
    const __m256 two_k = _mm256_castsi256_ps(_mm256_add_epi32(
        _mm256_slli_epi32(_mm256_castps_si256(z), 23), _mm256_castps_si256(_mm256_set1_ps(1.0f))));
    const __m256 r2 = _mm256_mul_ps(r, r);
    const __m256 odd = _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), r, _mm256_set1_ps(0x1.573e2ep-5f));
    const __m256 even = _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), r, _mm256_set1_ps(0x1.fffdb6p-2f));
    const __m256 p = _mm256_fmadd_ps(_mm256_fmadd_ps(odd, r2, even), r2,
                                     _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), r));
    __m256 result = _mm256_fmadd_ps(p, two_k, two_k);
    const __m256 outside = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), k), _mm256_set1_ps(126.0f), _CMP_GT_OQ);
    if (_mm256_movemask_ps(outside)) {
        float in[8], out[8];
        _mm256_storeu_ps(in, x);
        _mm256_storeu_ps(out, result);
        int mask = _mm256_movemask_ps(outside);
        for (int j = 0; j < 8; j++) {
            if (mask & (1 << j)) out[j] = expf(in[j]);
        }
        result = _mm256_loadu_ps(out);
    }
    return result;
}

LMC_AVX2 static void softmax_aligned_avx2(float *x, int64_t n, int64_t phase) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    const __m256 mm = _mm256_set1_ps(m);
    double sum = 0;
    float lanes[8];
    for (int64_t s = -phase; s < n; s += 8) {
        const int whole = s >= 0 && s + 8 <= n;
        __m256 v;
        if (whole) {
            v = _mm256_loadu_ps(x + s);
        } else {
            for (int j = 0; j < 8; j++) lanes[j] = (s + j >= 0 && s + j < n) ? x[s + j] : -INFINITY;
            v = _mm256_loadu_ps(lanes);
        }
        // −∞ (masked or padding lanes) takes the expf path of the exponential: 0.
        __m256 e = exp_ggml_avx2(_mm256_sub_ps(v, mm));
        // The block's sum as llama.cpp adds it: halves, then pairs, then the last two lanes.
        __m128 t = _mm_add_ps(_mm256_extractf128_ps(e, 1), _mm256_castps256_ps128(e));
        t = _mm_add_ps(t, _mm_movehl_ps(t, t));
        t = _mm_add_ss(t, _mm_movehdup_ps(t));
        sum += (double)_mm_cvtss_f32(t);
        if (whole) {
            _mm256_storeu_ps(x + s, e);
        } else {
            _mm256_storeu_ps(lanes, e);
            for (int j = 0; j < 8; j++) {
                if (s + j >= 0 && s + j < n) x[s + j] = lanes[j];
            }
        }
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}
#endif

void lmc_softmax_aligned(float *x, int64_t n, int64_t phase) {
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) {
        softmax_aligned_avx2(x, n, phase & 7);
        return;
    }
#endif
    softmax_scalar(x, n);
}
