// Codec 2, q8 (like llama.cpp's q8_0 with one block per head). Body after the common header: for every
// (layer, K/V, token, head) group of head_dim values, in data order: a float16 scale d (u16 LE) and
// head_dim int8 values q; the value is q * d rounded to float16. Encoding: d = absmax / 127 rounded up
// to float16 (at most 515.5, so 127 * d stays finite),
// q = round-half-away(x / d) clamped to [-127, 127] (x / d with the float16-rounded d).
#include "kvc_internal.h"

size_t kvc_q8_bound(size_t count) {
    // one 2-byte scale per group of >= 1 value
    if (count > (SIZE_MAX - 64) / 3) return 0;
    return LMC_KV_HEADER_SIZE + 3 * count;
}

size_t kvc_q8_encode(const uint16_t *src, const kvc_dims *d, uint8_t *dst, size_t cap) {
    const size_t hd = d->head_dim, groups = (size_t)d->count / hd, gsz = 2 + hd;
    if (cap / gsz < groups) return 0;
    float buf[1024];
    for (size_t g = 0; g < groups; g++) {
        const uint16_t *x = src + g * hd;
        uint8_t *o = dst + g * gsz;
        // absmax on the bit patterns: |x| orders like its magnitude bits (NaN -> 0, inf -> 65504)
        uint16_t amax = 0;
        for (size_t j = 0; j < hd; j++) {
            uint16_t a = (uint16_t)(x[j] & 0x7fffu);
            a = a >= 0x7c00u ? (a > 0x7c00u ? 0 : 0x7bffu) : a;
            amax = a > amax ? a : amax;
        }
        float af = kvc_f16_to_f32(amax);
        uint16_t dh = kvc_f32_to_f16(af / 127.0f);
        if (kvc_f16_to_f32(dh) * 127.0f < af) dh++;  // round the scale up: no clipping (subnormal scales)
        if (dh > 0x6007u) dh = 0x6007u;              // 515.5: 127 * d stays below 65504 (no inf)
        float df = kvc_f16_to_f32(dh);
        kvc_put16(o, dh);
        int8_t *q = (int8_t *)(o + 2);
        if (df == 0.0f) { memset(q, 0, hd); continue; }
        for (size_t j0 = 0; j0 < hd; j0 += 1024) {
            size_t m = hd - j0 < 1024 ? hd - j0 : 1024;
            for (size_t j = 0; j < m; j++) buf[j] = kvc_f16_to_f32_finite(x[j0 + j]) / df;
            for (size_t j = 0; j < m; j++) {  // round half away from zero, clamp to +-127
                float v = buf[j];
                v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
                int i = (int)v;
                float fr = v - (float)i;
                i += (fr >= 0.5f) - (fr <= -0.5f);
                q[j0 + j] = (int8_t)(i > 127 ? 127 : (i < -127 ? -127 : i));
            }
        }
    }
    return groups * gsz;
}

static void q8_group_scalar(uint16_t *restrict out, const int8_t *restrict q, float df, size_t hd) {
    for (size_t j = 0; j < hd; j++) out[j] = kvc_f32_to_f16((float)q[j] * df);
}

#if KVC_X86
#include <immintrin.h>
__attribute__((target("avx2,f16c")))
static void q8_decode_avx2(const uint8_t *src, size_t groups, size_t hd, uint16_t *dst) {
    const size_t gsz = 2 + hd;
    for (size_t g = 0; g < groups; g++) {
        const uint8_t *o = src + g * gsz;
        float df = kvc_f16_to_f32(kvc_get16(o));
        const int8_t *q = (const int8_t *)(o + 2);
        uint16_t *out = dst + g * hd;
        __m256 vd = _mm256_set1_ps(df);
        size_t j = 0;
        for (; j + 16 <= hd; j += 16) {
            __m128i b = _mm_loadu_si128((const __m128i *)(q + j));
            __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
            __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
            __m128i h0 = _mm256_cvtps_ph(_mm256_mul_ps(f0, vd), _MM_FROUND_TO_NEAREST_INT);
            __m128i h1 = _mm256_cvtps_ph(_mm256_mul_ps(f1, vd), _MM_FROUND_TO_NEAREST_INT);
            _mm_storeu_si128((__m128i *)(out + j), h0);
            _mm_storeu_si128((__m128i *)(out + j + 8), h1);
        }
        for (; j < hd; j++) out[j] = kvc_f32_to_f16((float)q[j] * df);
    }
}
#endif

int kvc_q8_decode_impl(const uint8_t *src, size_t size, const kvc_dims *d, uint16_t *dst, int allow_simd);

int kvc_q8_decode_impl(const uint8_t *src, size_t size, const kvc_dims *d, uint16_t *dst, int allow_simd) {
    const size_t hd = d->head_dim, groups = (size_t)d->count / hd, gsz = 2 + hd;
    if (size / gsz < groups) return LMC_KV_ERR_TRUNCATED;
    if (size != groups * gsz) return LMC_KV_ERR_CORRUPT;
#if KVC_X86
    if (allow_simd && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")) {
        q8_decode_avx2(src, groups, hd, dst);
        return 0;
    }
#else
    (void)allow_simd;
#endif
    for (size_t g = 0; g < groups; g++) {
        const uint8_t *o = src + g * gsz;
        q8_group_scalar(dst + g * hd, (const int8_t *)(o + 2), kvc_f16_to_f32(kvc_get16(o)), hd);
    }
    return 0;
}

int kvc_q8_decode(const uint8_t *src, size_t size, const kvc_dims *d, uint16_t *dst) {
    return kvc_q8_decode_impl(src, size, d, dst, 1);
}
