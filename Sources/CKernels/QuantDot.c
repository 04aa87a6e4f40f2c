// Quantized matrix-vector kernels: portable C and AVX2/FMA variants chosen at run time, and for batches
// tiles of rows × tokens (QuantDotTiles.h) at the AVX2 and AVX-512 VNNI levels with the AVX2 row dots' bits.
//
// Block layouts follow the GGUF/ggml formats (see Kernels/Dequantize.swift for the documented
// element order of each). Weights stay in their file format; the activation vector is quantized to
// int8 with one scale per 32 values, so the inner loops are integer multiply-adds.

#include "CKernels.h"

#include <math.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define LMC_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

// MARK: - CPU dispatch

// Forcing is per thread, so a test that forces the portable kernels does not change what other
// threads (other tests, the engine) compute.
static _Thread_local int lmc_forced = -1;
static _Atomic int lmc_detected = -1;

int lmc_isa_cap(void) {
    // Read once per call site's first use; the environment does not change while the engine runs.
    const char *text = getenv("LMCACHE_ISA");
    if (!text || !*text) return 1 << 20;
    if (!strcmp(text, "generic") || !strcmp(text, "portable")) return LMC_ISA_GENERIC;
    if (!strcmp(text, "avx2")) return LMC_ISA_AVX2;
    return 1 << 20;
}

int lmc_cpu_isa(void) {
    int cached = atomic_load_explicit(&lmc_detected, memory_order_relaxed);
    if (cached >= 0) return cached;
    int level = LMC_ISA_GENERIC;
#ifdef LMC_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        // F16C comes with every AVX2 CPU in practice, but check CPUID leaf 1 ECX bit 29 anyway.
        unsigned a, b, c, d;
        if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29))) level = LMC_ISA_AVX2;
        // The VNNI kernels use 256-bit EVEX instructions (32 vector registers, vpdpbusd); the runtime's
        // checks include the operating system's support for the AVX-512 state.
        if (level == LMC_ISA_AVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
            level = LMC_ISA_AVX512_VNNI;
    }
#endif
    int cap = lmc_isa_cap();
    if (level > cap) level = cap;
    atomic_store_explicit(&lmc_detected, level, memory_order_relaxed);
    return level;
}

int lmc_active_isa(void) {
    int forced = lmc_forced;
    int cpu = lmc_cpu_isa();
    return (forced >= 0 && forced <= cpu) ? forced : cpu;
}

void lmc_force_isa(int level) { lmc_forced = level; }

// MARK: - Scalars

float lmc_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {
            // Subnormal half: value = man · 2^-24.
            float v = (float)man * (1.0f / 16777216.0f);
            memcpy(&bits, &v, 4);
            bits |= sign;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t load_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline float load_f16(const uint8_t *p) { return lmc_f16_to_f32(load_u16(p)); }

// 6-bit scale and minimum of sub-block j (0..<8) from the 12 packed bytes of a Q4_K/Q5_K block.
static inline void scale_min_k4(int j, const uint8_t *s, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// The eight 6-bit scales (bytes 0-7 of u) and minimums (bytes 8-15) of a Q4_K super-block's 12 scale
// bytes at sc, in sub-block order: scale_min_k4 for all eight sub-blocks at once, as ggml unpacks them.
static inline void unpack_q4_k_scales(const uint8_t *sc, uint32_t u[4]) {
    memcpy(u, sc, 12);
    u[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    const uint32_t m = u[1] & 0x3f3f3f3fu;
    u[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    u[2] = m;
    u[0] &= 0x3f3f3f3fu;
}

// MARK: - Activation quantization

void lmc_quantize_q8(const float *x, int64_t n, int8_t *qs, float *d, float *ds) {
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + b * 32;
        float amax = 0;
        for (int i = 0; i < 32; i++) {
            float a = fabsf(xb[i]);
            amax = a > amax ? a : amax;
        }
        float scale = amax / 127.0f;
        float inv = scale != 0 ? 1.0f / scale : 0.0f;
        int sum = 0;
        for (int i = 0; i < 32; i++) {
            int q = (int)roundf(xb[i] * inv);
            q = q > 127 ? 127 : (q < -127 ? -127 : q);
            qs[b * 32 + i] = (int8_t)q;
            sum += q;
        }
        d[b] = scale;
        ds[b] = scale * (float)sum;
    }
}

// Round to nearest, ties to even, as ggml's nearest_int does: lrintf in the default rounding mode, which
// on x86 is one cvtss2si (lrintf itself is a library call, since it may set errno).
#ifdef LMC_X86
static inline int nearest_int(float v) { return _mm_cvtss_si32(_mm_set_ss(v)); }
#else
static inline int nearest_int(float v) { return (int)lrintf(v); }
#endif

float lmc_round_f16_scalar(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = x & 0x80000000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return f;           // inf or nan
    if (ax >= 0x477ff000u) {                    // rounds to at least 65520: overflow to inf
        uint32_t r = sign | 0x7f800000u;
        memcpy(&f, &r, 4);
        return f;
    }
    if (ax < 0x38800000u) {                     // below the smallest normal half: multiples of 2^-24
        float a = fabsf(f);
        float q = nearbyintf(a * 16777216.0f) / 16777216.0f;
        return sign ? -q : q;
    }
    // Keep 10 mantissa bits, round to nearest even on the 13 dropped bits.
    uint32_t lsb = (ax >> 13) & 1u;
    ax += 0xfffu + lsb;
    ax &= ~0x1fffu;
    uint32_t r = sign | ax;
    memcpy(&f, &r, 4);
    return f;
}

static void quantize_q8_0_like_scalar(const float *x, int64_t n, int8_t *qs, float *d, float *ds) {
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + b * 32;
        float amax = 0;
        for (int i = 0; i < 32; i++) {
            float a = fabsf(xb[i]);
            amax = a > amax ? a : amax;
        }
        // As ggml's x86 quantize_row_q8_0: the multiplier is 127/amax (not 1/scale) and halves round
        // to even. A value that rounds the other way moves a product by a whole quantization step, so
        // the formula, not only the format, decides which of two near-tied tokens llama.cpp picks.
        float scale = amax / 127.0f;
        float inv = amax != 0 ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int i = 0; i < 32; i++) {
            int q = nearest_int(xb[i] * inv);
            qs[b * 32 + i] = (int8_t)q;
            sum += q;
        }
        // The scale is stored in half precision, as a Q8_0 block does.
        d[b] = lmc_round_f16_scalar(scale);
        ds[b] = d[b] * (float)sum;
    }
}

static void quantize_q8_k_like_scalar(const float *x, int64_t n, int8_t *qs, float *d, float *ds) {
    for (int64_t b = 0; b < n / 256; b++) {
        const float *xb = x + b * 256;
        float amax = 0, max = 0;
        for (int i = 0; i < 256; i++) {
            float a = fabsf(xb[i]);
            if (a > amax) {
                amax = a;
                max = xb[i];
            }
        }
        float scale = 0;
        if (amax == 0) {
            memset(qs + b * 256, 0, 256);
        } else {
            // One scale per 256 values; the extreme value maps to -127.
            float iscale = -127.0f / max;
            for (int i = 0; i < 256; i++) {
                int q = nearest_int(iscale * xb[i]);
                qs[b * 256 + i] = (int8_t)(q > 127 ? 127 : q);
            }
            scale = 1.0f / iscale;
        }
        for (int s = 0; s < 8; s++) {
            int sum = 0;
            for (int i = 0; i < 32; i++) sum += qs[b * 256 + s * 32 + i];
            d[b * 8 + s] = scale;
            ds[b * 8 + s] = scale * (float)sum;
        }
    }
}

#ifdef LMC_X86
__attribute__((target("avx2,f16c"))) static void round_f16_avx2(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT)));
    }
    for (; i < n; i++) x[i] = lmc_round_f16_scalar(x[i]);
}
#endif

void lmc_round_f16(float *x, int64_t n) {
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) {
        round_f16_avx2(x, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) x[i] = lmc_round_f16_scalar(x[i]);
}

static uint16_t f32_to_f16_bits(float f) {
    float r = lmc_round_f16_scalar(f);
    uint32_t x;
    memcpy(&x, &r, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0);
    if (ax < 0x38800000u) {  // subnormal half (r is already a multiple of 2^-24)
        float a;
        memcpy(&a, &ax, 4);
        return sign | (uint16_t)(a * 16777216.0f);
    }
    return sign | (uint16_t)(((ax >> 23) - 112) << 10) | (uint16_t)((ax >> 13) & 0x3ffu);
}

#ifdef LMC_X86
__attribute__((target("avx2,f16c"))) static void f32_to_f16_avx2(const float *x, uint16_t *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++) y[i] = f32_to_f16_bits(x[i]);
}

__attribute__((target("avx2,f16c"))) static void f16_to_f32_avx2(const uint16_t *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    }
    for (; i < n; i++) y[i] = lmc_f16_to_f32(x[i]);
}
#endif

void lmc_convert_f32_to_f16(const float *x, uint16_t *y, int64_t n) {
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) {
        f32_to_f16_avx2(x, y, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = f32_to_f16_bits(x[i]);
}

void lmc_convert_f16_to_f32(const uint16_t *x, float *y, int64_t n) {
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) {
        f16_to_f32_avx2(x, y, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = lmc_f16_to_f32(x[i]);
}

// MARK: - Portable row dots

static float dot_q8_0(const uint8_t *w, int64_t nb, const int8_t *qs, const float *d) {
    float acc = 0;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * 34;
        const int8_t *q = (const int8_t *)(blk + 2);
        const int8_t *x = qs + b * 32;
        int s = 0;
        for (int i = 0; i < 32; i++) s += q[i] * x[i];
        acc += load_f16(blk) * d[b] * (float)s;
    }
    return acc;
}

static float dot_q4_0(const uint8_t *w, int64_t nb, const int8_t *qs, const float *d) {
    float acc = 0;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * 18;
        const uint8_t *q = blk + 2;
        const int8_t *x = qs + b * 32;
        int s = 0;
        for (int i = 0; i < 16; i++) {
            s += ((q[i] & 0x0f) - 8) * x[i];
            s += ((q[i] >> 4) - 8) * x[i + 16];
        }
        acc += load_f16(blk) * d[b] * (float)s;
    }
    return acc;
}

static float dot_q5_0(const uint8_t *w, int64_t nb, const int8_t *qs, const float *d) {
    float acc = 0;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * 22;
        uint32_t qh;
        memcpy(&qh, blk + 2, 4);
        const uint8_t *q = blk + 6;
        const int8_t *x = qs + b * 32;
        int s = 0;
        for (int i = 0; i < 16; i++) {
            int lo = (q[i] & 0x0f) | (int)(((qh >> i) & 1) << 4);
            int hi = (q[i] >> 4) | (int)(((qh >> (i + 16)) & 1) << 4);
            s += (lo - 16) * x[i] + (hi - 16) * x[i + 16];
        }
        acc += load_f16(blk) * d[b] * (float)s;
    }
    return acc;
}

static float dot_q4_k(const uint8_t *w, int64_t nb, const int8_t *qs, const float *d, const float *ds) {
    float acc = 0;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * 144;
        float dd = load_f16(blk), dmin = load_f16(blk + 2);
        const uint8_t *sc = blk + 4, *q = blk + 16;
        for (int j = 0; j < 4; j++) {
            int s1, m1, s2, m2;
            scale_min_k4(2 * j, sc, &s1, &m1);
            scale_min_k4(2 * j + 1, sc, &s2, &m2);
            const int8_t *x1 = qs + (b * 8 + 2 * j) * 32, *x2 = x1 + 32;
            int t1 = 0, t2 = 0;
            for (int i = 0; i < 32; i++) {
                t1 += (q[32 * j + i] & 0x0f) * x1[i];
                t2 += (q[32 * j + i] >> 4) * x2[i];
            }
            int64_t k = b * 8 + 2 * j;
            acc += dd * (float)s1 * d[k] * (float)t1 - dmin * (float)m1 * ds[k];
            acc += dd * (float)s2 * d[k + 1] * (float)t2 - dmin * (float)m2 * ds[k + 1];
        }
    }
    return acc;
}

static float dot_q5_k(const uint8_t *w, int64_t nb, const int8_t *qs, const float *d, const float *ds) {
    float acc = 0;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * 176;
        float dd = load_f16(blk), dmin = load_f16(blk + 2);
        const uint8_t *sc = blk + 4, *qh = blk + 16, *q = blk + 48;
        for (int j = 0; j < 4; j++) {
            int s1, m1, s2, m2;
            scale_min_k4(2 * j, sc, &s1, &m1);
            scale_min_k4(2 * j + 1, sc, &s2, &m2);
            const int8_t *x1 = qs + (b * 8 + 2 * j) * 32, *x2 = x1 + 32;
            int t1 = 0, t2 = 0;
            for (int i = 0; i < 32; i++) {
                int v1 = (q[32 * j + i] & 0x0f) | (((qh[i] >> (2 * j)) & 1) << 4);
                int v2 = (q[32 * j + i] >> 4) | (((qh[i] >> (2 * j + 1)) & 1) << 4);
                t1 += v1 * x1[i];
                t2 += v2 * x2[i];
            }
            int64_t k = b * 8 + 2 * j;
            acc += dd * (float)s1 * d[k] * (float)t1 - dmin * (float)m1 * ds[k];
            acc += dd * (float)s2 * d[k + 1] * (float)t2 - dmin * (float)m2 * ds[k + 1];
        }
    }
    return acc;
}

static float dot_q6_k(const uint8_t *w, int64_t nb, const int8_t *qs, const float *d) {
    float acc = 0;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * 210;
        const uint8_t *ql = blk, *qh = blk + 128;
        const int8_t *sc = (const int8_t *)(blk + 192);
        float dd = load_f16(blk + 208);
        for (int half = 0; half < 2; half++) {
            const uint8_t *l = ql + 64 * half, *h = qh + 32 * half;
            const int8_t *s = sc + 8 * half;
            for (int g = 0; g < 4; g++) {
                const int8_t *x = qs + (b * 8 + half * 4 + g) * 32;
                int ta = 0, tb = 0;
                for (int i = 0; i < 32; i++) {
                    int lo = (g & 1) ? l[32 + i] : l[i];
                    int nib = (g < 2) ? (lo & 0x0f) : (lo >> 4);
                    int v = (nib | (((h[i] >> (2 * g)) & 3) << 4)) - 32;
                    if (i < 16) ta += v * x[i]; else tb += v * x[i];
                }
                acc += dd * d[b * 8 + half * 4 + g] * ((float)s[2 * g] * (float)ta + (float)s[2 * g + 1] * (float)tb);
            }
        }
    }
    return acc;
}

// MARK: - AVX2 row dots

#ifdef LMC_X86
#define LMC_AVX2 __attribute__((target("avx2,fma,f16c")))

LMC_AVX2 static inline float hsum_avx2(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

// MARK: - AVX2 activation quantizers

// The largest |x| of 8k floats, as the scalar loops find it: NaNs are skipped (max_ps returns its second
// operand when either is NaN, and the running maximum is always the second), and the order of a
// maximum does not matter.
LMC_AVX2 static inline float amax_avx2(const float *x, int vectors) {
    const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < vectors; k++) m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + 8 * k), abs), m);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

// 32 values × m rounded to the nearest integer, ties to even (cvtps2dq in the default rounding mode: the
// scalar loops' nearest_int), at most `hi`, stored as 32 bytes; returns their sum.
LMC_AVX2 static inline int round32_avx2(const float *x, __m256 m, int hi, int8_t *out) {
    __m256i q[4];
    for (int k = 0; k < 4; k++)
        q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), m)), _mm256_set1_epi32(hi));
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
    // Within ±127 (the values are at most amax · 127 / amax), so the saturating packs keep every value.
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256((__m256i *)out, _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    return _mm_cvtsi128_si32(t);
}

// quantize_q8_0_like_scalar, 8 values at a time: the same multiplier, roundings and sums.
LMC_AVX2 static void quantize_q8_0_like_avx2(const float *x, int64_t n, int8_t *qs, float *d, float *ds) {
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + b * 32;
        float amax = amax_avx2(xb, 4);
        float scale = amax / 127.0f;
        float inv = amax != 0 ? 127.0f / amax : 0.0f;
        // No upper clamp in the scalar loop: none is needed (127 is above every value here).
        int sum = round32_avx2(xb, _mm256_set1_ps(inv), 127, qs + b * 32);
        d[b] = lmc_round_f16_scalar(scale);
        ds[b] = d[b] * (float)sum;
    }
}

// quantize_q8_k_like_scalar, 8 values at a time. Its extreme value is the first whose |x| is the
// largest (the scalar loop replaces it only on a strictly larger one).
LMC_AVX2 static void quantize_q8_k_like_avx2(const float *x, int64_t n, int8_t *qs, float *d, float *ds) {
    const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < n / 256; b++) {
        const float *xb = x + b * 256;
        float amax = amax_avx2(xb, 32);
        float scale = 0;
        int sums[8] = {0};
        if (amax == 0) {
            memset(qs + b * 256, 0, 256);
        } else {
            float max = 0;
            for (int k = 0; k < 32; k++) {
                __m256 v = _mm256_loadu_ps(xb + 8 * k);
                int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(v, abs), _mm256_set1_ps(amax), _CMP_EQ_OQ));
                if (mask) {
                    max = xb[8 * k + __builtin_ctz((unsigned)mask)];
                    break;
                }
            }
            float iscale = -127.0f / max;
            for (int s = 0; s < 8; s++) sums[s] = round32_avx2(xb + 32 * s, _mm256_set1_ps(iscale), 127, qs + b * 256 + 32 * s);
            scale = 1.0f / iscale;
        }
        for (int s = 0; s < 8; s++) {
            d[b * 8 + s] = scale;
            ds[b * 8 + s] = scale * (float)sums[s];
        }
    }
}
#endif

void lmc_quantize_q8_0_like(const float *x, int64_t n, int8_t *qs, float *d, float *ds) {
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) {
        quantize_q8_0_like_avx2(x, n, qs, d, ds);
        return;
    }
#endif
    quantize_q8_0_like_scalar(x, n, qs, d, ds);
}

void lmc_quantize_q8_k_like(const float *x, int64_t n, int8_t *qs, float *d, float *ds) {
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) {
        quantize_q8_k_like_avx2(x, n, qs, d, ds);
        return;
    }
#endif
    quantize_q8_k_like_scalar(x, n, qs, d, ds);
}

#ifdef LMC_X86
// A broadcast load writes the whole register, so the conversion does not depend on earlier values
// (a scalar conversion compiles to an insert into a live register, which chained every block to the
// accumulator and made the loops latency-bound).
LMC_AVX2 static inline __m256 f16x8_avx2(const uint8_t *p) {
    return _mm256_cvtph_ps(_mm_set1_epi16((short)load_u16(p)));
}

LMC_AVX2 static inline float f16_avx2(const uint8_t *p) { return _mm256_cvtss_f32(f16x8_avx2(p)); }

// 8 copies of (f16 at p) · d.
LMC_AVX2 static inline __m256 scale_avx2(const uint8_t *p, const float *d) {
    return _mm256_mul_ps(f16x8_avx2(p), _mm256_broadcast_ss(d));
}

// Products of signed bytes, summed in groups of four, as 8 floats (lane k covers bytes 4k..4k+3).
LMC_AVX2 static inline __m256 dot_i8_avx2(__m256i w, __m256i x) {
    __m256i aw = _mm256_sign_epi8(w, w);
    __m256i sx = _mm256_sign_epi8(x, w);
    __m256i p16 = _mm256_maddubs_epi16(aw, sx);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

// Same with unsigned weights (0..63 here, so the 16-bit pair sums cannot saturate).
LMC_AVX2 static inline __m256 dot_u8i8_avx2(__m256i w, __m256i x) {
    __m256i p16 = _mm256_maddubs_epi16(w, x);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

// 32 low nibbles then 32 high nibbles of 16 bytes, as one vector [lo(16) | hi(16)].
LMC_AVX2 static inline __m256i nibbles16_avx2(const uint8_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m128i m = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    return _mm256_set_m128i(hi, lo);
}

// Byte i is 0xFF when bit i of the 32-bit little-endian word at p is set, else 0.
LMC_AVX2 static inline __m256i bits32_avx2(const uint8_t *p) {
    uint32_t bits;
    memcpy(&bits, p, 4);
    __m256i v = _mm256_set1_epi32((int)bits);
    // Byte i takes byte i/8 of the word (the shuffle works per 128-bit lane; both lanes hold the word).
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    v = _mm256_shuffle_epi8(v, spread);
    const __m256i pick = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, pick), pick);
}

LMC_AVX2 static float dot_q8_0_avx2(const uint8_t *w, int64_t nb, const int8_t *qs, const float *d) {
    // Two accumulators hide the FMA latency.
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        const uint8_t *b0 = w + b * 34, *b1 = b0 + 34;
        __m256i q0 = _mm256_loadu_si256((const __m256i *)(b0 + 2));
        __m256i q1 = _mm256_loadu_si256((const __m256i *)(b1 + 2));
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(qs + b * 32));
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(qs + b * 32 + 32));
        acc0 = _mm256_fmadd_ps(dot_i8_avx2(q0, x0), scale_avx2(b0, d + b), acc0);
        acc1 = _mm256_fmadd_ps(dot_i8_avx2(q1, x1), scale_avx2(b1, d + b + 1), acc1);
    }
    for (; b < nb; b++) {
        const uint8_t *blk = w + b * 34;
        __m256i q = _mm256_loadu_si256((const __m256i *)(blk + 2));
        __m256i x = _mm256_loadu_si256((const __m256i *)(qs + b * 32));
        acc0 = _mm256_fmadd_ps(dot_i8_avx2(q, x), scale_avx2(blk, d + b), acc0);
    }
    return hsum_avx2(_mm256_add_ps(acc0, acc1));
}

LMC_AVX2 static float dot_q4_0_avx2(const uint8_t *w, int64_t nb, const int8_t *qs, const float *d) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i eight = _mm256_set1_epi8(8);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * 18;
        __m256i q = _mm256_sub_epi8(nibbles16_avx2(blk + 2), eight);
        __m256i x = _mm256_loadu_si256((const __m256i *)(qs + b * 32));
        acc = _mm256_fmadd_ps(dot_i8_avx2(q, x), scale_avx2(blk, d + b), acc);
    }
    return hsum_avx2(acc);
}

// The 32 signed values (nibble | high bit << 4) − 16 of a Q5_0 block. Setting the top four bits where
// the high bit is clear gives nibble − 16 as a signed byte directly, one operation less than or-ing
// 16 in and subtracting it.
LMC_AVX2 static inline __m256i q5_0_values_avx2(const uint8_t *blk) {
    __m256i hb = _mm256_andnot_si256(bits32_avx2(blk + 2), _mm256_set1_epi8((char)0xF0));
    return _mm256_or_si256(nibbles16_avx2(blk + 6), hb);
}

LMC_AVX2 static float dot_q5_0_avx2(const uint8_t *w, int64_t nb, const int8_t *qs, const float *d) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        const uint8_t *b0 = w + b * 22, *b1 = b0 + 22;
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(qs + b * 32));
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(qs + b * 32 + 32));
        acc0 = _mm256_fmadd_ps(dot_i8_avx2(q5_0_values_avx2(b0), x0), scale_avx2(b0, d + b), acc0);
        acc1 = _mm256_fmadd_ps(dot_i8_avx2(q5_0_values_avx2(b1), x1), scale_avx2(b1, d + b + 1), acc1);
    }
    for (; b < nb; b++) {
        const uint8_t *blk = w + b * 22;
        __m256i x = _mm256_loadu_si256((const __m256i *)(qs + b * 32));
        acc0 = _mm256_fmadd_ps(dot_i8_avx2(q5_0_values_avx2(blk), x), scale_avx2(blk, d + b), acc0);
    }
    return hsum_avx2(_mm256_add_ps(acc0, acc1));
}

// Two rows against the same activation: shares the activation loads and runs four independent
// accumulator chains.
LMC_AVX2 static void dot2_q8_0_avx2(const uint8_t *w0, const uint8_t *w1, int64_t nb, const int8_t *qs,
                                    const float *d, float *out) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(qs + b * 32));
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(qs + b * 32 + 32));
        const uint8_t *p0 = w0 + b * 34, *p1 = w1 + b * 34;
        a0 = _mm256_fmadd_ps(dot_i8_avx2(_mm256_loadu_si256((const __m256i *)(p0 + 2)), x0), scale_avx2(p0, d + b), a0);
        c0 = _mm256_fmadd_ps(dot_i8_avx2(_mm256_loadu_si256((const __m256i *)(p1 + 2)), x0), scale_avx2(p1, d + b), c0);
        a1 = _mm256_fmadd_ps(dot_i8_avx2(_mm256_loadu_si256((const __m256i *)(p0 + 36)), x1), scale_avx2(p0 + 34, d + b + 1), a1);
        c1 = _mm256_fmadd_ps(dot_i8_avx2(_mm256_loadu_si256((const __m256i *)(p1 + 36)), x1), scale_avx2(p1 + 34, d + b + 1), c1);
    }
    for (; b < nb; b++) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(qs + b * 32));
        const uint8_t *p0 = w0 + b * 34, *p1 = w1 + b * 34;
        a0 = _mm256_fmadd_ps(dot_i8_avx2(_mm256_loadu_si256((const __m256i *)(p0 + 2)), x0), scale_avx2(p0, d + b), a0);
        c0 = _mm256_fmadd_ps(dot_i8_avx2(_mm256_loadu_si256((const __m256i *)(p1 + 2)), x0), scale_avx2(p1, d + b), c0);
    }
    out[0] = hsum_avx2(_mm256_add_ps(a0, a1));
    out[1] = hsum_avx2(_mm256_add_ps(c0, c1));
}

LMC_AVX2 static void dot2_q5_0_avx2(const uint8_t *w0, const uint8_t *w1, int64_t nb, const int8_t *qs,
                                    const float *d, float *out) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(qs + b * 32));
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(qs + b * 32 + 32));
        const uint8_t *p0 = w0 + b * 22, *p1 = w1 + b * 22;
        a0 = _mm256_fmadd_ps(dot_i8_avx2(q5_0_values_avx2(p0), x0), scale_avx2(p0, d + b), a0);
        c0 = _mm256_fmadd_ps(dot_i8_avx2(q5_0_values_avx2(p1), x0), scale_avx2(p1, d + b), c0);
        a1 = _mm256_fmadd_ps(dot_i8_avx2(q5_0_values_avx2(p0 + 22), x1), scale_avx2(p0 + 22, d + b + 1), a1);
        c1 = _mm256_fmadd_ps(dot_i8_avx2(q5_0_values_avx2(p1 + 22), x1), scale_avx2(p1 + 22, d + b + 1), c1);
    }
    for (; b < nb; b++) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(qs + b * 32));
        const uint8_t *p0 = w0 + b * 22, *p1 = w1 + b * 22;
        a0 = _mm256_fmadd_ps(dot_i8_avx2(q5_0_values_avx2(p0), x0), scale_avx2(p0, d + b), a0);
        c0 = _mm256_fmadd_ps(dot_i8_avx2(q5_0_values_avx2(p1), x0), scale_avx2(p1, d + b), c0);
    }
    out[0] = hsum_avx2(_mm256_add_ps(a0, a1));
    out[1] = hsum_avx2(_mm256_add_ps(c0, c1));
}

LMC_AVX2 static float dot_q4_k_avx2(const uint8_t *w, int64_t nb, const int8_t *qs, const float *d,
                                    const float *ds) {
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * 144;
        float dd = f16_avx2(blk), dmin = f16_avx2(blk + 2);
        const uint8_t *sc = blk + 4, *q = blk + 16;
        const int64_t k0 = b * 8;
        for (int j = 0; j < 4; j++) {
            int s1, m1, s2, m2;
            scale_min_k4(2 * j, sc, &s1, &m1);
            scale_min_k4(2 * j + 1, sc, &s2, &m2);
            __m256i v = _mm256_loadu_si256((const __m256i *)(q + 32 * j));
            __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            const int8_t *x1 = qs + (k0 + 2 * j) * 32;
            __m256 p1 = dot_u8i8_avx2(lo, _mm256_loadu_si256((const __m256i *)x1));
            __m256 p2 = dot_u8i8_avx2(hi, _mm256_loadu_si256((const __m256i *)(x1 + 32)));
            acc = _mm256_fmadd_ps(p1, _mm256_set1_ps(dd * (float)s1 * d[k0 + 2 * j]), acc);
            acc = _mm256_fmadd_ps(p2, _mm256_set1_ps(dd * (float)s2 * d[k0 + 2 * j + 1]), acc);
            mins += dmin * ((float)m1 * ds[k0 + 2 * j] + (float)m2 * ds[k0 + 2 * j + 1]);
        }
    }
    return hsum_avx2(acc) - mins;
}

LMC_AVX2 static float dot_q5_k_avx2(const uint8_t *w, int64_t nb, const int8_t *qs, const float *d,
                                    const float *ds) {
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * 176;
        float dd = f16_avx2(blk), dmin = f16_avx2(blk + 2);
        const uint8_t *sc = blk + 4, *q = blk + 48;
        __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + 16));
        const int64_t k0 = b * 8;
        for (int j = 0; j < 4; j++) {
            int s1, m1, s2, m2;
            scale_min_k4(2 * j, sc, &s1, &m1);
            scale_min_k4(2 * j + 1, sc, &s2, &m2);
            __m256i v = _mm256_loadu_si256((const __m256i *)(q + 32 * j));
            // Shifting 16-bit lanes by < 8 keeps each byte's own bit in bit 0 after the mask.
            __m256i h1 = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j)), one);
            __m256i h2 = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j + 1)), one);
            __m256i lo = _mm256_or_si256(_mm256_and_si256(v, m4), _mm256_slli_epi16(h1, 4));
            __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), _mm256_slli_epi16(h2, 4));
            const int8_t *x1 = qs + (k0 + 2 * j) * 32;
            __m256 p1 = dot_u8i8_avx2(lo, _mm256_loadu_si256((const __m256i *)x1));
            __m256 p2 = dot_u8i8_avx2(hi, _mm256_loadu_si256((const __m256i *)(x1 + 32)));
            acc = _mm256_fmadd_ps(p1, _mm256_set1_ps(dd * (float)s1 * d[k0 + 2 * j]), acc);
            acc = _mm256_fmadd_ps(p2, _mm256_set1_ps(dd * (float)s2 * d[k0 + 2 * j + 1]), acc);
            mins += dmin * ((float)m1 * ds[k0 + 2 * j] + (float)m2 * ds[k0 + 2 * j + 1]);
        }
    }
    return hsum_avx2(acc) - mins;
}

LMC_AVX2 static float dot_q6_k_avx2(const uint8_t *w, int64_t nb, const int8_t *qs, const float *d) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * 210;
        const int8_t *sc = (const int8_t *)(blk + 192);
        float dd = f16_avx2(blk + 208);
        for (int half = 0; half < 2; half++) {
            const uint8_t *l = blk + 64 * half;
            __m256i l0 = _mm256_loadu_si256((const __m256i *)l);
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(l + 32));
            __m256i h = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * half));
            __m256i lows[4] = {
                _mm256_and_si256(l0, m4), _mm256_and_si256(l1, m4),
                _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
            };
            const int8_t *s = sc + 8 * half;
            for (int g = 0; g < 4; g++) {
                __m256i hb = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * g)), m2);
                __m256i v = _mm256_sub_epi8(_mm256_or_si256(lows[g], _mm256_slli_epi16(hb, 4)), off);
                const int64_t k = b * 8 + half * 4 + g;
                __m256 p = dot_i8_avx2(v, _mm256_loadu_si256((const __m256i *)(qs + k * 32)));
                float f = dd * d[k];
                __m256 scale = _mm256_setr_ps(f * s[2 * g], f * s[2 * g], f * s[2 * g], f * s[2 * g],
                                              f * s[2 * g + 1], f * s[2 * g + 1], f * s[2 * g + 1], f * s[2 * g + 1]);
                acc = _mm256_fmadd_ps(p, scale, acc);
            }
        }
    }
    return hsum_avx2(acc);
}

// MARK: - Tiles of rows × tokens

// Per block of tokens, what the K-quant tiles read besides the activations: Q4_K the tokens' ds
// transposed (dst[k · ldt + t], the minimums' terms of a tile's tokens as lanes), Q6_K the activations
// with the 4-byte groups of each 32 in the order LMC_Q6_K_LANES, and at the VNNI level where none is
// −128 the top bit of each flipped (x + 128, vpdpbusd's unsigned operand).
typedef struct {
    const float *dst;
    int64_t ldt;
    const uint8_t *xs;
} lmc_tile_aux;

#define LMC_Q6_K_LANES _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)

// The two floats at p, repeated 4 times, broadcast from memory (a load: written as a plain load, the
// compiler keeps the stored values in registers and broadcasts each with a shuffle).
#define LMC_BROADCAST_PAIR(p, reg)                                                  \
    ({                                                                              \
        __m256 v_;                                                                  \
        __asm__("vbroadcastsd %1, %0" : "=" reg(v_) : "m"(*(const double *)(p)));  \
        v_;                                                                         \
    })

typedef float lmc_v8f __attribute__((vector_size(32)));
typedef float lmc_v4f __attribute__((vector_size(16)));

// The float at p in 8 lanes, broadcast from memory (a load, not a shuffle; see LMC_BROADCAST_PAIR).
#define LMC_BROADCAST_ONE(p, reg)                                              \
    ({                                                                         \
        __m256 v_;                                                             \
        __asm__("vbroadcastss %1, %0" : "=" reg(v_) : "m"(*(const float *)(p))); \
        v_;                                                                    \
    })

// The AVX2 level: the row dots' own integer steps. With 16 vector registers, one row against four
// tokens measured fastest for the K-quants (Zen 4, one thread; 4 accumulators). The 32-value formats
// run their even and odd blocks as two passes (8 accumulators live, not 16) over one row and eight
// tokens, with each block's scales for the eight tokens formed by one multiplication and broadcast
// from memory: Q5_0 14% and Q8_0 3% faster than one row by four tokens with both passes at once
// (AMD EPYC, AVX2 only, one thread, 2,048 rows of 640 values by 20, 64 and 512 tokens).
#define LMC_TILE_TARGET LMC_AVX2
#define LMC_TILE(name) name##_avx2
#define LMC_TILE_DOT_ABS(a, w, x) dot_abs_avx2(a, w, x)
#define LMC_TILE_DOT_U8(u, x) dot_u8i8_avx2(u, x)
#define LMC_TILE_HAS_ZP 0
#define LMC_TILE_Q5_0_VALUES(blk) q5_0_values_avx2(blk)
#define LMC_TILE_ZP_INIT(w) (w)
#define LMC_TILE_ZP_DOT(c, u, w) _mm256_setzero_ps()
#define LMC_TILE_ROWS_32 1
#define LMC_TILE_TOKENS_32 8
#define LMC_TILE_SPLIT_32 1
#define LMC_TILE_ROWS_K 1
#define LMC_TILE_TOKENS_K 4
#define LMC_TILE_TOKENS_Q6_K 4
#define LMC_TILE_ROWS_Q6_K 1
#define LMC_TILE_BROADCAST_PAIR(p) LMC_BROADCAST_PAIR(p, "x")
#define LMC_TILE_BROADCAST_ONE(p) LMC_BROADCAST_ONE(p, "x")

// dot_i8_avx2 with |w| already computed (shared by the tokens of a tile).
LMC_AVX2 static inline __m256 dot_abs_avx2(__m256i aw, __m256i w, __m256i x) {
    __m256i p16 = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

#include "QuantDotTiles.h"

#undef LMC_TILE_HAS_ZP
#undef LMC_TILE_Q5_0_VALUES
#undef LMC_TILE_ZP_INIT
#undef LMC_TILE_ZP_DOT
#undef LMC_TILE_TARGET
#undef LMC_TILE
#undef LMC_TILE_DOT_ABS
#undef LMC_TILE_DOT_U8
#undef LMC_TILE_ROWS_32
#undef LMC_TILE_TOKENS_32
#undef LMC_TILE_ROWS_K
#undef LMC_TILE_TOKENS_K
#undef LMC_TILE_TOKENS_Q6_K
#undef LMC_TILE_ROWS_Q6_K
#undef LMC_TILE_BROADCAST_PAIR
#undef LMC_TILE_BROADCAST_ONE
#undef LMC_TILE_SPLIT_32

// The VNNI level: vpdpbusd adds the four products of each lane in 32 bits where the AVX2 dots add pairs
// in 16 bits (maddubs) and then pairs of those (madd). The results are the same integers: maddubs
// saturates only beyond ±32767, and the pairs here stay within it (|w| ≤ 128 against |x| ≤ 128 with
// the sign moved to x, at most 2 · 128 · 127 = 32512 above zero and 2 · 128 · −128 = −32768 below; the
// unsigned weights are below 64). The 32 registers of AVX-512VL hold larger tiles.
#define LMC_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define LMC_TILE_TARGET LMC_VNNI
#define LMC_TILE(name) name##_vnni
#define LMC_TILE_DOT_ABS(a, w, x) dot_abs_vnni(a, w, x)
#define LMC_TILE_DOT_U8(u, x) dot_u8i8_vnni(u, x)
#define LMC_TILE_HAS_ZP 1
#define LMC_TILE_Q5_0_VALUES(blk) q5_0_values_vnni(blk)
#define LMC_TILE_ZP_INIT(w) zp_init_vnni(w)
#define LMC_TILE_ZP_DOT(c, u, w) zp_dot_vnni(c, u, w)
// 32 registers: 2 rows × 4 tokens (16 accumulators) for the 32-value formats, 2 rows × 8 tokens for the
// K-quants (measured against 1 × 8, 2 × 4, 3 × 4, 3 × 8, 4 × 4 and 1 × 16; Zen 4, one thread, 512 tokens).
#define LMC_TILE_ROWS_32 2
#define LMC_TILE_TOKENS_32 4
#define LMC_TILE_ROWS_K 2
#define LMC_TILE_TOKENS_K 8
#define LMC_TILE_TOKENS_Q6_K 8
#define LMC_TILE_ROWS_Q6_K 2
#define LMC_TILE_SPLIT_32 0
#define LMC_TILE_BROADCAST_PAIR(p) LMC_BROADCAST_PAIR(p, "v")
#define LMC_TILE_BROADCAST_ONE(p) LMC_BROADCAST_ONE(p, "v")

LMC_VNNI static inline __m256 dot_abs_vnni(__m256i aw, __m256i w, __m256i x) {
    return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, _mm256_sign_epi8(x, w)));
}

// q5_0_values_avx2 with the high bits as a mask register: nibble − 16 where the bit is clear.
LMC_VNNI static inline __m256i q5_0_values_vnni(const uint8_t *blk) {
    uint32_t bits;
    memcpy(&bits, blk + 2, 4);
    __m256i nib = nibbles16_avx2(blk + 6);
    return _mm256_mask_sub_epi8(nib, (__mmask32)~bits, nib, _mm256_set1_epi8(16));
}

LMC_VNNI static inline __m256 dot_u8i8_vnni(__m256i u, __m256i x) {
    return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x));
}

// Without −128 among the activations, |w| · sign(x, w) = w · x for every byte, so the AVX2 dots' sums
// are the plain Σ w · x, which vpdpbusd gives from x + 128 (unsigned) and w (signed) once −128 · Σw is
// taken off: that offset is the weights' alone and starts each lane's sum, so a token costs one
// instruction per block and row where the sign trick costs two. zp_init_vnni(w) is −128 · Σw per lane.
LMC_VNNI static inline __m256i zp_init_vnni(__m256i w) {
    __m256i c = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), w);
    return _mm256_sub_epi32(_mm256_setzero_si256(), c);
}

LMC_VNNI static inline __m256 zp_dot_vnni(__m256i init, __m256i xu, __m256i w) {
    return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(init, xu, w));
}

#include "QuantDotTiles.h"

#undef LMC_TILE_HAS_ZP
#undef LMC_TILE_Q5_0_VALUES
#undef LMC_TILE_ZP_INIT
#undef LMC_TILE_ZP_DOT
#undef LMC_TILE_TARGET
#undef LMC_TILE
#undef LMC_TILE_DOT_ABS
#undef LMC_TILE_DOT_U8
#undef LMC_TILE_BROADCAST_PAIR
#undef LMC_TILE_BROADCAST_ONE
#undef LMC_TILE_SPLIT_32
#endif

// MARK: - Row loops

#ifdef LMC_X86
// Whether any of the n bytes at p is −128.
LMC_AVX2 static int has_int8_min(const int8_t *p, int64_t n) {
    const __m256i m = _mm256_set1_epi8((char)0x80);
    __m256i any = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) any = _mm256_or_si256(any, _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(p + i)), m));
    int found = !_mm256_testz_si256(any, any);
    for (; i < n; i++) found |= p[i] == -128;
    return found;
}
#endif

#ifdef LMC_X86
// The activations of the Q6_K tiles: src with the 4-byte groups of each 32 bytes in the order
// LMC_Q6_K_LANES, and with flip the top bit of each byte flipped; n a multiple of 32.
LMC_AVX2 static void q6_k_activations_avx2(const int8_t *src, uint8_t *dst, int64_t n, int flip) {
    const __m256i top = _mm256_set1_epi8(flip ? (char)0x80 : 0);
    for (int64_t i = 0; i < n; i += 32) {
        __m256i x = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(src + i)), LMC_Q6_K_LANES);
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(x, top));
    }
}
#endif

typedef float (*lmc_dot_fn)(const uint8_t *w, int64_t n, const int8_t *qs, const float *d, const float *ds);

#define LMC_WRAP(name, call) \
    static float name(const uint8_t *w, int64_t n, const int8_t *qs, const float *d, const float *ds) { \
        (void)ds; \
        return call; \
    }
LMC_WRAP(w_q4_0, dot_q4_0(w, n / 32, qs, d))
LMC_WRAP(w_q5_0, dot_q5_0(w, n / 32, qs, d))
LMC_WRAP(w_q8_0, dot_q8_0(w, n / 32, qs, d))
LMC_WRAP(w_q4_k, dot_q4_k(w, n / 256, qs, d, ds))
LMC_WRAP(w_q5_k, dot_q5_k(w, n / 256, qs, d, ds))
LMC_WRAP(w_q6_k, dot_q6_k(w, n / 256, qs, d))
#ifdef LMC_X86
LMC_WRAP(w_q4_0_avx2, dot_q4_0_avx2(w, n / 32, qs, d))
LMC_WRAP(w_q5_0_avx2, dot_q5_0_avx2(w, n / 32, qs, d))
LMC_WRAP(w_q8_0_avx2, dot_q8_0_avx2(w, n / 32, qs, d))
LMC_WRAP(w_q4_k_avx2, dot_q4_k_avx2(w, n / 256, qs, d, ds))
LMC_WRAP(w_q5_k_avx2, dot_q5_k_avx2(w, n / 256, qs, d, ds))
LMC_WRAP(w_q6_k_avx2, dot_q6_k_avx2(w, n / 256, qs, d))
#endif

static lmc_dot_fn dot_for(int32_t t) {
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) {
        switch (t) {
        case 2: return w_q4_0_avx2;
        case 6: return w_q5_0_avx2;
        case 8: return w_q8_0_avx2;
        case 12: return w_q4_k_avx2;
        case 13: return w_q5_k_avx2;
        case 14: return w_q6_k_avx2;
        default: return 0;
        }
    }
#endif
    switch (t) {
    case 2: return w_q4_0;
    case 6: return w_q5_0;
    case 8: return w_q8_0;
    case 12: return w_q4_k;
    case 13: return w_q5_k;
    case 14: return w_q6_k;
    default: return 0;
    }
}

// MARK: - Prefetching

// The row loops below are bound by memory, not arithmetic, only if weight bytes arrive before the
// kernels ask for them. The hardware prefetcher alone left the dot products waiting on memory as long
// as they computed (a Q8_0 output head read at ~10 GB/s against ~18 GB/s for a plain read of the same
// bytes on two cores); asking for the lines a few KiB ahead of the rows being computed overlaps the
// two. Prefetching changes no arithmetic.
#define LMC_PREFETCH_DISTANCE 2048

// Requests every 64-byte line from *next up to min(target, end), and advances *next.
static inline void prefetch_until(const uint8_t **next, const uint8_t *target, const uint8_t *end) {
    if (target > end) target = end;
    while (*next < target) {
        __builtin_prefetch(*next, 0, 3);
        *next += 64;
    }
}

#ifdef LMC_X86
// MARK: - One token at the VNNI level

// lmc_matvec_q8 at the AVX-512 VNNI level: R rows at a time (independent accumulator chains hide the
// latency of each row's chain), every row with exactly the float operations of its AVX2 row dot, in
// the same order. Only the integer sums of four products per lane are formed differently, and give the
// same integers: with no −128 among the activations the AVX2 dots' sums are the plain Σ w · x (see
// zp_init_vnni), and vpdpbusd takes them from an unsigned form u = w + c of the weights (c = 16 for
// Q5_0, 32 for Q6_K; the codes are stored that way) as Σ u · x − c · Σ x,
// where c · Σ x per lane is the activation's alone: computed once per call, it starts each lane's sum.
// The activations a call gets have no −128 (the quantizers never write it); a call that has one keeps
// the AVX2 kernels. Q4_K's codes are unsigned already (vpdpbusd gives maddubs + madd's sums for any
// activations). Q4_0, Q5_K and Q8_0 keep the AVX2 kernels (see LMC_MV_ROWS).

// −c · (sum of each 4 activations), 8 lanes per 32 values, for n values.
LMC_VNNI static void act_offsets_vnni(const int8_t *qs, int64_t n, int c, __m256i *out) {
    const __m256i cv = _mm256_set1_epi8((char)c);
    for (int64_t b = 0; b < n / 32; b++) {
        __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), cv, _mm256_loadu_si256((const __m256i *)(qs + 32 * b)));
        out[b] = _mm256_sub_epi32(_mm256_setzero_si256(), s);
    }
}

// The 32 values nibble | high bit << 4 (0..31) of a Q5_0 block: q5_0_values_avx2 + 16.
LMC_VNNI static inline __m256i q5_0_unsigned_vnni(const uint8_t *blk) {
    uint32_t bits;
    memcpy(&bits, blk + 2, 4);
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(blk + 6)));
    v = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f));
    return _mm256_mask_add_epi8(v, (__mmask32)bits, v, _mm256_set1_epi8(16));
}

// Q5_0 rows: as dot_q5_0_avx2 (even blocks into accumulator 0, odd ones into 1, a last block of an odd
// count into 0, then hsum(acc0 + acc1)).
LMC_VNNI static inline __attribute__((always_inline)) void
rows_q5_0_vnni(int R, const uint8_t *w, int64_t row_bytes, int64_t nb, const int8_t *qs, const float *d,
               const __m256i *off, float *y) {
    __m256 acc[4][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b += 2) {
        const int e_end = b + 1 < nb ? 2 : 1;
        for (int e = 0; e < e_end; e++) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(qs + (b + e) * 32));
            const __m256 dx = _mm256_broadcast_ss(d + b + e);
            for (int r = 0; r < R; r++) {
                const uint8_t *blk = w + r * row_bytes + (b + e) * 22;
                __m256i u = q5_0_unsigned_vnni(blk);
                __m256 p = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(off[b + e], u, x));
                acc[r][e] = _mm256_fmadd_ps(p, _mm256_mul_ps(f16x8_avx2(blk), dx), acc[r][e]);
            }
        }
    }
    for (int r = 0; r < R; r++) y[r] = hsum_avx2(_mm256_add_ps(acc[r][0], acc[r][1]));
}

// Q6_K rows (210-byte super-blocks): as dot_q6_k_avx2 (one accumulator; per group of 32 values the
// scale (dd · d[k]) · s for each half of the lanes). The 6-bit codes are the unsigned form (v + 32).
LMC_VNNI static inline __attribute__((always_inline)) void
rows_q6_k_vnni(int R, const uint8_t *w, int64_t row_bytes, int64_t nb, const int8_t *qs, const float *d,
               const __m256i *off, float *y) {
    __m256 acc[4];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    // Lanes 0-3 take scale 2g, lanes 4-7 scale 2g + 1, of the 8 scales of a half.
    const __m256i pick[4] = {_mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3),
                             _mm256_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5), _mm256_setr_epi32(6, 6, 6, 6, 7, 7, 7, 7)};
    for (int64_t b = 0; b < nb; b++) {
        for (int half = 0; half < 2; half++) {
            __m256i lows[4][4], h[4];
            __m256 dd[4], sc[4];
            for (int r = 0; r < R; r++) {
                const uint8_t *blk = w + r * row_bytes + b * 210;
                dd[r] = f16x8_avx2(blk + 208);
                const uint8_t *l = blk + 64 * half;
                __m256i l0 = _mm256_loadu_si256((const __m256i *)l);
                __m256i l1 = _mm256_loadu_si256((const __m256i *)(l + 32));
                lows[r][0] = _mm256_and_si256(l0, m4);
                lows[r][1] = _mm256_and_si256(l1, m4);
                lows[r][2] = _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4);
                lows[r][3] = _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4);
                h[r] = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * half));
                sc[r] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 192 + 8 * half))));
            }
            for (int g = 0; g < 4; g++) {
                const int64_t k = b * 8 + half * 4 + g;
                const __m256i x = _mm256_loadu_si256((const __m256i *)(qs + k * 32));
                const __m256 dx = _mm256_broadcast_ss(d + k);
                for (int r = 0; r < R; r++) {
                    // Bits 2g, 2g + 1 of each byte of h into bits 4, 5 (16-bit shifts: the bits that cross
                    // into the neighbouring byte are masked off).
                    __m256i hs = g == 0 ? _mm256_slli_epi16(h[r], 4)
                               : g == 1 ? _mm256_slli_epi16(h[r], 2)
                               : g == 2 ? h[r]
                                        : _mm256_srli_epi16(h[r], 2);
                    // lows | (hs & 0x30)
                    __m256i u = _mm256_ternarylogic_epi32(lows[r][g], hs, m30, 0xF8);
                    __m256 p = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(off[k], u, x));
                    __m256 scale = _mm256_mul_ps(_mm256_mul_ps(dd[r], dx), _mm256_permutevar8x32_ps(sc[r], pick[g]));
                    acc[r] = _mm256_fmadd_ps(p, scale, acc[r]);
                }
            }
        }
    }
    for (int r = 0; r < R; r++) y[r] = hsum_avx2(acc[r]);
}

// Q4_K rows (144-byte super-blocks): as dot_q4_k_avx2, the 8 products dd · s · d[k] of a super-block
// formed at once (the same two roundings per element) and the minimums' term with its statement.
LMC_VNNI static inline __attribute__((always_inline)) void
rows_q4_k_vnni(int R, const uint8_t *w, int64_t row_bytes, int64_t nb, const int8_t *qs, const float *d,
               const float *ds, float *y) {
    __m256 acc[4];
    float mins[4];
    for (int r = 0; r < R; r++) {
        acc[r] = _mm256_setzero_ps();
        mins[r] = 0;
    }
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t b = 0; b < nb; b++) {
        const int64_t k0 = b * 8;
        const __m256 dk = _mm256_loadu_ps(d + k0);
        float f[4][8] __attribute__((aligned(32)));
        uint8_t mb[4][8];
        float dmin[4];
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + r * row_bytes + b * 144;
            float dd = f16_avx2(blk);
            dmin[r] = f16_avx2(blk + 2);
            uint32_t u[4];
            unpack_q4_k_scales(blk + 4, u);
            __m256 s = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)u)));
            _mm256_store_ps(f[r], _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(dd), s), dk));
            memcpy(mb[r], u + 2, 8);
        }
        for (int j = 0; j < 4; j++) {
            const int8_t *x1 = qs + (k0 + 2 * j) * 32;
            const __m256i xa = _mm256_loadu_si256((const __m256i *)x1);
            const __m256i xb = _mm256_loadu_si256((const __m256i *)(x1 + 32));
            for (int r = 0; r < R; r++) {
                const uint8_t *blk = w + r * row_bytes + b * 144;
                __m256i v = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * j));
                __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                __m256 p1 = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), lo, xa));
                __m256 p2 = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), hi, xb));
                acc[r] = _mm256_fmadd_ps(p1, _mm256_broadcast_ss(&f[r][2 * j]), acc[r]);
                acc[r] = _mm256_fmadd_ps(p2, _mm256_broadcast_ss(&f[r][2 * j + 1]), acc[r]);
                float m1 = (float)mb[r][2 * j], m2 = (float)mb[r][2 * j + 1];
                // The statement of dot_q4_k_avx2 (the same contraction into fused multiply-adds).
                mins[r] += dmin[r] * (m1 * ds[k0 + 2 * j] + m2 * ds[k0 + 2 * j + 1]);
            }
        }
    }
    for (int r = 0; r < R; r++) y[r] = hsum_avx2(acc[r]) - mins[r];
}

// Rows per step. Q5_0: two measured fastest, in cache and from memory. Q4_K and Q6_K: two were faster
// in cache, but Q6_K read from memory at half the speed of one row at a time (Zen 4, one thread), so the
// K-quants go one row at a time. Q8_0 (the output head, read from memory) stays with the AVX2 pair
// kernel: this form of it, faster in cache, read from memory ~20% slower.
#define LMC_MV_ROWS 2
#define LMC_MV_ROWS_K 1
#define LMC_MV_MAX_BLOCKS 512

// `R` rows at `row` (R a constant where called, so the kernels unroll) of type t (6, 12 or 14).
LMC_VNNI static inline __attribute__((always_inline)) void
rows_vnni(int32_t t, int R, const uint8_t *row, int64_t row_bytes, int64_t n, const int8_t *qs, const float *d,
          const float *ds, const __m256i *off, float *y) {
    if (t == 6) rows_q5_0_vnni(R, row, row_bytes, n / 32, qs, d, off, y);
    else if (t == 12) rows_q4_k_vnni(R, row, row_bytes, n / 256, qs, d, ds, y);
    else rows_q6_k_vnni(R, row, row_bytes, n / 256, qs, d, off, y);
}

// Rows row_begin..<row_end at the VNNI level; 0 where this type or activation is not handled here.
LMC_VNNI static int matvec_vnni(int32_t t, const uint8_t *base, int64_t row_bytes, int64_t row_begin, int64_t row_end,
                                int64_t n, const int8_t *qs, const float *d, const float *ds, float *y) {
    // Q4_K's codes are unsigned: no offsets, any activations. Q5_0 and Q6_K take their codes' unsigned
    // form, offset per block by the activations, which must hold no −128.
    __m256i off[LMC_MV_MAX_BLOCKS];
    if (t == 6 || t == 14) {
        if (n / 32 > LMC_MV_MAX_BLOCKS || has_int8_min(qs, n)) return 0;
        act_offsets_vnni(qs, n, t == 6 ? 16 : 32, off);
    } else if (t != 12) {
        return 0;
    }
    const uint8_t *end = base + row_end * row_bytes;
    const uint8_t *next = base + row_begin * row_bytes;
    const int64_t step = t == 6 ? LMC_MV_ROWS : LMC_MV_ROWS_K;
    int64_t r = row_begin;
    for (; r + step <= row_end; r += step) {
        const uint8_t *row = base + r * row_bytes;
        prefetch_until(&next, row + step * row_bytes + LMC_PREFETCH_DISTANCE, end);
        if (step == LMC_MV_ROWS) rows_vnni(t, LMC_MV_ROWS, row, row_bytes, n, qs, d, ds, off, y + (r - row_begin));
        else rows_vnni(t, LMC_MV_ROWS_K, row, row_bytes, n, qs, d, ds, off, y + (r - row_begin));
    }
    for (; r < row_end; r++) {
        const uint8_t *row = base + r * row_bytes;
        prefetch_until(&next, row + row_bytes + LMC_PREFETCH_DISTANCE, end);
        rows_vnni(t, 1, row, row_bytes, n, qs, d, ds, off, y + (r - row_begin));
    }
    return 1;
}

// MARK: - Q5_0 rows unpacked once per block of tokens

// The tiles above unpack a Q5_0 block and form its scales for every tile of 4 or 8 tokens: as
// much work as the products themselves. With activations without −128, a group of rows is unpacked once
// per block of tokens instead (QuantDotUnpacked.h). Both levels take the products in the zero-point
// form: x + 128 (unsigned) times w (signed), with −128 · Σw taken off per lane; maddubs cannot saturate
// on it for Q5_0 (|w| ≤ 16: at most 2 · 255 · 16).
//
// Measured on Q5_0 (AMD EPYC Zen 4, one thread, 2,048 rows of 640 values by 512 tokens): VNNI 40 GMAC/s
// with the tiles above, 72 unpacked with 3 rows × 4 tokens (2 × 4: 65, 2 × 8: 60, 4 × 4: 62, 1 × 8:
// 60); the AVX2 level 33 against 49 with 2 rows × 2 tokens (1 × 4: 46, 1 × 8: 45); the engine's prefill
// 1.29× (VNNI) and 1.20× (AVX2) faster (docs/benchmarks.md, "Q5_0 rows unpacked once per block of tokens").
// From memory too (65,536 rows by 4 to 32 tokens, as a batch of decodes reads them): VNNI 35–40 against
// 43–57 GMAC/s. Tried for Q6_K: 51 against 57 (VNNI), 35 against 39 (AVX2), 1% of a prefill: not kept.

#define LMC_PRE_TARGET LMC_VNNI
#define LMC_PRE(name) name##_vnni
#define LMC_PRE_ROWS 3
#define LMC_PRE_TOKENS 4
#define LMC_PRE_VALUES(blk) q5_0_values_vnni(blk)
#define LMC_PRE_INIT(w) zp_init_vnni(w)
#define LMC_PRE_DOT(init, xu, w) zp_dot_vnni(init, xu, w)
#define LMC_PRE_BROADCAST(p) LMC_BROADCAST_ONE(p, "v")
#include "QuantDotUnpacked.h"

// −128 · Σw per lane, as zp_init_vnni, from maddubs and madd (pairs of 128 · w stay far below 2^15).
LMC_AVX2 static inline __m256i zp_init_avx2(__m256i w) {
    __m256i c = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8((char)0x80), w), _mm256_set1_epi16(1));
    return _mm256_sub_epi32(_mm256_setzero_si256(), c);
}

// Σ (x + 128) · w − 128 · Σw per lane (= Σ x · w) as 8 floats, for |w| ≤ 16.
LMC_AVX2 static inline __m256 zp_dot_avx2(__m256i init, __m256i xu, __m256i w) {
    __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(xu, w), _mm256_set1_epi16(1));
    return _mm256_cvtepi32_ps(_mm256_add_epi32(s, init));
}

#define LMC_PRE_TARGET LMC_AVX2
#define LMC_PRE(name) name##_avx2
#define LMC_PRE_ROWS 2
#define LMC_PRE_TOKENS 2
#define LMC_PRE_VALUES(blk) q5_0_values_avx2(blk)
#define LMC_PRE_INIT(w) zp_init_avx2(w)
#define LMC_PRE_DOT(init, xu, w) zp_dot_avx2(init, xu, w)
#define LMC_PRE_BROADCAST(p) LMC_BROADCAST_ONE(p, "x")
#include "QuantDotUnpacked.h"
#endif

void lmc_matmul_q8(int32_t t, const void *w, int64_t row_bytes, int64_t row_begin, int64_t row_end, int64_t n,
                   int64_t tokens, const int8_t *qs, const float *d, const float *ds, float *y, int64_t ldy) {
    lmc_dot_fn dot = dot_for(t);
    if (!dot) return;
    const uint8_t *base = (const uint8_t *)w;
    const int64_t nb = n / 32;
#ifdef LMC_X86
    // Tiles of rows × tokens for the types of the models we run; Q4_0 and Q5_K keep the row dots.
    const int isa = lmc_active_isa();
    if (isa >= LMC_ISA_AVX2 && (t == 6 || t == 8 || t == 12 || t == 14)) {
        const int tile_rows = isa >= LMC_ISA_AVX512_VNNI ? tile_rows_vnni(t) : tile_rows_avx2(t);
        // The VNNI tiles' shorter form needs activations without −128 (the quantizers never write it).
        const int zp = isa >= LMC_ISA_AVX512_VNNI && !has_int8_min(qs, tokens * n);
        // Q5_0 rows unpacked once per block of tokens where it pays: from 4 tokens (at 1 the tiles are
        // faster). Q8_0 has nothing to unpack; its rows unpacked were slower where they come from memory
        // (the output head by 4 to 16 tokens: 34–48 against 50 GMAC/s).
        if (tokens >= 4 && t == 6 && (isa >= LMC_ISA_AVX512_VNNI ? zp : !has_int8_min(qs, tokens * n)) &&
            (isa >= LMC_ISA_AVX512_VNNI ? matmul_unpacked_vnni : matmul_unpacked_avx2)(base, row_bytes, row_begin, row_end,
                                                                                      n, tokens, qs, d, y, ldy))
            return;
        // Blocks of tokens keep their activations in L2 while each group of rows stays in L1.
        const int64_t token_block = 64;
        lmc_tile_aux aux = {0, token_block, 0};
        void *scratch = 0;
        // Scales transposed (scratch[k · token_block + t]): Q4_K's ds; the AVX2 level's Q8_0 and Q5_0 d
        // (tile32 with LMC_TILE_SPLIT_32), with 8 zeros after the last row for its 8-float loads.
        const int transposed = t == 12 || (isa < LMC_ISA_AVX512_VNNI && (t == 6 || t == 8));
        if (transposed || t == 14) {
            scratch = transposed ? calloc((size_t)(token_block * nb + 8), sizeof(float)) : malloc((size_t)(token_block * n));
            if (!scratch) goto rows;
            if (transposed) aux.dst = scratch;
            else aux.xs = scratch;
        }
        for (int64_t j0 = 0; j0 < tokens; j0 += token_block) {
            int64_t j1 = j0 + token_block < tokens ? j0 + token_block : tokens;
            if (transposed)
                for (int64_t j = j0; j < j1; j++)
                    for (int64_t k = 0; k < nb; k++)
                        ((float *)scratch)[k * token_block + (j - j0)] = (t == 12 ? ds : d)[j * nb + k];
            if (t == 14) q6_k_activations_avx2(qs + j0 * n, scratch, (j1 - j0) * n, zp);
            const uint8_t *end = base + row_end * row_bytes;
            const uint8_t *next = base + row_begin * row_bytes;
            for (int64_t r = row_begin; r < row_end; r += tile_rows) {
                int rows = row_end - r < tile_rows ? (int)(row_end - r) : tile_rows;
                const uint8_t *row = base + r * row_bytes;
                prefetch_until(&next, row + rows * row_bytes + LMC_PREFETCH_DISTANCE, end);
                if (isa >= LMC_ISA_AVX512_VNNI)
                    rows_tokens_vnni(t, zp, rows, row, row_bytes, n, j1 - j0, qs + j0 * n, d + j0 * nb, ds + j0 * nb,
                                     &aux, y + j0 * ldy + r, ldy);
                else
                    rows_tokens_avx2(t, 0, rows, row, row_bytes, n, j1 - j0, qs + j0 * n, d + j0 * nb, ds + j0 * nb,
                                     &aux, y + j0 * ldy + r, ldy);
            }
        }
        free(scratch);
        return;
    }
rows:;
#endif
    // Blocks of tokens keep their activations in L2 while each weight row stays in L1.
    const int64_t token_block = 64;
    for (int64_t j0 = 0; j0 < tokens; j0 += token_block) {
        int64_t j1 = j0 + token_block < tokens ? j0 + token_block : tokens;
        const uint8_t *end = base + row_end * row_bytes;
        const uint8_t *next = base + row_begin * row_bytes;
        for (int64_t r = row_begin; r < row_end; r++) {
            const uint8_t *row = base + r * row_bytes;
            prefetch_until(&next, row + row_bytes + LMC_PREFETCH_DISTANCE, end);
            for (int64_t j = j0; j < j1; j++) {
                y[j * ldy + r] = dot(row, n, qs + j * n, d + j * nb, ds + j * nb);
            }
        }
    }
}

int lmc_matvec_supports(int32_t t) {
    switch (t) {
    case 2: case 6: case 8: case 12: case 13: case 14: return 1;
    default: return 0;
    }
}

void lmc_matvec_q8(int32_t t, const void *w, int64_t row_bytes, int64_t row_begin, int64_t row_end, int64_t n,
                   const int8_t *qs, const float *d, const float *ds, float *y) {
    lmc_dot_fn dot = dot_for(t);
    const uint8_t *base = (const uint8_t *)w;
    const uint8_t *end = base + row_end * row_bytes;
    const uint8_t *next = base + row_begin * row_bytes;
    int64_t r = row_begin;
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX512_VNNI && matvec_vnni(t, base, row_bytes, row_begin, row_end, n, qs, d, ds, y))
        return;
    // Pairs of rows for the 32-value formats (the output head and most projections); the pair kernels
    // compute each row exactly as the single-row kernels do.
    if (lmc_active_isa() >= LMC_ISA_AVX2 && (t == 8 || t == 6)) {
        for (; r + 1 < row_end; r += 2) {
            const uint8_t *p0 = base + r * row_bytes;
            prefetch_until(&next, p0 + 2 * row_bytes + LMC_PREFETCH_DISTANCE, end);
            if (t == 8) dot2_q8_0_avx2(p0, p0 + row_bytes, n / 32, qs, d, y + (r - row_begin));
            else dot2_q5_0_avx2(p0, p0 + row_bytes, n / 32, qs, d, y + (r - row_begin));
        }
    }
#endif
    for (; r < row_end; r++) {
        const uint8_t *row = base + r * row_bytes;
        prefetch_until(&next, row + row_bytes + LMC_PREFETCH_DISTANCE, end);
        y[r - row_begin] = dot ? dot(row, n, qs, d, ds) : NAN;
    }
}
