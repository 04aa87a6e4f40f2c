// Codec 2, q8 (the same body in stream versions 2 and 3). Body after the common header, for every plane p = (layer, K/V) in data
// order (K before V within a layer), T tokens x C channels:
//   u8 mode
//   mode 0 (blocks, like llama.cpp's q8_0): for every token, for every block of up to 32 consecutive
//          channels (the last block of a row may be shorter): a float16 scale d (u16 LE) and the block's
//          int8 values q; value = q * d.
//   mode 1 (per channel): C float16 scales d[c] (u16 LE), then T x C int8 values q; value = q * d[c].
// Values are q * d rounded to float16. Encoding: d = absmax / 127 of the block (mode 0) or of the channel
// over the chunk's tokens (mode 1), rounded up to float16 (at most 515.5, so 127 * d stays finite);
// q = round-half-away(x / d) clamped to [-127, 127]. The encoder codes each plane both ways and keeps the
// mode with the smaller squared error (ties: mode 0); on Gemma 3 K planes (a few outlier channels up to
// ~100) take mode 1 and V planes mode 0. Sizes: mode 0 8.5 bits/value, mode 1 8 + 16/T bits/value.
#include <stdlib.h>
#include "kvc_internal.h"

#define Q8_BLOCK 32u

size_t kvc_q8_bound(size_t count) {
    // worst case: 1 mode byte + a 2-byte scale per value
    if (count > (SIZE_MAX - 64) / 4) return 0;
    return LMC_KV_HEADER_SIZE + 4 * count;
}

// absmax of float16 bit patterns (NaN -> 0, inf -> 65504) as the rounded-up scale's bits
static inline uint16_t q8_abs(uint16_t x) {
    uint16_t a = (uint16_t)(x & 0x7fffu);
    return a >= 0x7c00u ? (a > 0x7c00u ? 0 : 0x7bffu) : a;
}
static inline uint16_t q8_scale(uint16_t amax) {
    float af = kvc_f16_to_f32(amax);
    uint16_t dh = kvc_f32_to_f16(af / 127.0f);
    if (kvc_f16_to_f32(dh) * 127.0f < af) dh++;  // round the scale up: no clipping (subnormal scales)
    if (dh > 0x6007u) dh = 0x6007u;              // 515.5: 127 * d stays below 65504 (no inf)
    return dh;
}
static inline int8_t q8_round(float x, float df) {  // round half away from zero, clamp to +-127
    if (df == 0.0f) return 0;
    float v = x / df;
    v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
    int i = (int)v;
    float fr = v - (float)i;
    i += (fr >= 0.5f) - (fr <= -0.5f);
    return (int8_t)(i > 127 ? 127 : (i < -127 ? -127 : i));
}
// squared error of x coded as q * d (rounded to float16, as decoded)
static inline double q8_err(float x, int8_t q, float df) {
    double e = (double)x - (double)kvc_f16_to_f32(kvc_f32_to_f16((float)q * df));
    return e * e;
}

size_t kvc_q8_encode(const uint16_t *src, const kvc_dims *d, uint8_t *dst, size_t cap) {
    const size_t C = d->channels, T = d->tokens, P = (size_t)d->layers * 2u;
    const size_t nb = (C + Q8_BLOCK - 1) / Q8_BLOCK;
    const size_t size0 = 1 + T * (C + 2 * nb), size1 = 1 + 2 * C + T * C;  // per plane
    size_t result = 0, w = 0;
    uint16_t *amax = malloc(C * sizeof(uint16_t));
    float *scale = malloc(C * sizeof(float));
    if (!amax || !scale) goto done;
    for (size_t p = 0; p < P; p++) {
        const uint16_t *x = src + p * T * C;
        // mode 1 scales and error
        for (size_t c = 0; c < C; c++) amax[c] = 0;
        for (size_t t = 0; t < T; t++)
            for (size_t c = 0; c < C; c++) { uint16_t a = q8_abs(x[t * C + c]); amax[c] = a > amax[c] ? a : amax[c]; }
        for (size_t c = 0; c < C; c++) { amax[c] = q8_scale(amax[c]); scale[c] = kvc_f16_to_f32(amax[c]); }
        double err1 = 0.0, err0 = 0.0;
        for (size_t t = 0; t < T; t++)
            for (size_t c = 0; c < C; c++) {
                float v = kvc_f16_to_f32_finite(x[t * C + c]);
                err1 += q8_err(v, q8_round(v, scale[c]), scale[c]);
            }
        // mode 0 error
        for (size_t t = 0; t < T; t++)
            for (size_t b = 0; b < C; b += Q8_BLOCK) {
                size_t m = C - b < Q8_BLOCK ? C - b : Q8_BLOCK;
                uint16_t a = 0;
                for (size_t j = 0; j < m; j++) { uint16_t y = q8_abs(x[t * C + b + j]); a = y > a ? y : a; }
                float df = kvc_f16_to_f32(q8_scale(a));
                for (size_t j = 0; j < m; j++) {
                    float v = kvc_f16_to_f32_finite(x[t * C + b + j]);
                    err0 += q8_err(v, q8_round(v, df), df);
                }
            }
        int mode = err1 < err0;
        size_t need = mode ? size1 : size0;
        if (cap - w < need) goto done;
        uint8_t *o = dst + w;
        *o++ = (uint8_t)mode;
        if (mode) {
            for (size_t c = 0; c < C; c++) { kvc_put16(o, amax[c]); o += 2; }
            for (size_t t = 0; t < T; t++)
                for (size_t c = 0; c < C; c++) *o++ = (uint8_t)q8_round(kvc_f16_to_f32_finite(x[t * C + c]), scale[c]);
        } else {
            for (size_t t = 0; t < T; t++)
                for (size_t b = 0; b < C; b += Q8_BLOCK) {
                    size_t m = C - b < Q8_BLOCK ? C - b : Q8_BLOCK;
                    uint16_t a = 0;
                    for (size_t j = 0; j < m; j++) { uint16_t y = q8_abs(x[t * C + b + j]); a = y > a ? y : a; }
                    uint16_t dh = q8_scale(a);
                    float df = kvc_f16_to_f32(dh);
                    kvc_put16(o, dh); o += 2;
                    for (size_t j = 0; j < m; j++) *o++ = (uint8_t)q8_round(kvc_f16_to_f32_finite(x[t * C + b + j]), df);
                }
        }
        w += need;
    }
    result = w;
done:
    free(amax); free(scale);
    return result;
}

static void q8_row_scalar(uint16_t *restrict out, const int8_t *restrict q, const float *restrict df, size_t n) {
    for (size_t j = 0; j < n; j++) out[j] = kvc_f32_to_f16((float)q[j] * df[j]);
}
static void q8_block_scalar(uint16_t *restrict out, const int8_t *restrict q, float df, size_t n) {
    for (size_t j = 0; j < n; j++) out[j] = kvc_f32_to_f16((float)q[j] * df);
}

#if KVC_X86
#include <immintrin.h>
// out[j] = f16(q[j] * df[j]) for n values (df: per-channel scales)
__attribute__((target("avx2,f16c")))
static void q8_row_avx2(uint16_t *restrict out, const int8_t *restrict q, const float *restrict df, size_t n) {
    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m128i b = _mm_loadu_si128((const __m128i *)(q + j));
        __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
        __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
        __m128i h0 = _mm256_cvtps_ph(_mm256_mul_ps(f0, _mm256_loadu_ps(df + j)), _MM_FROUND_TO_NEAREST_INT);
        __m128i h1 = _mm256_cvtps_ph(_mm256_mul_ps(f1, _mm256_loadu_ps(df + j + 8)), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(out + j), h0);
        _mm_storeu_si128((__m128i *)(out + j + 8), h1);
    }
    for (; j < n; j++) out[j] = kvc_f32_to_f16((float)q[j] * df[j]);
}
// mode 0 plane rows: blocks of 32 (the last one of a row possibly shorter)
__attribute__((target("avx2,f16c")))
static void q8_blocks_avx2(const uint8_t *src, size_t T, size_t C, uint16_t *dst) {
    for (size_t t = 0; t < T; t++)
        for (size_t b = 0; b < C; b += Q8_BLOCK) {
            size_t m = C - b < Q8_BLOCK ? C - b : Q8_BLOCK;
            float df = kvc_f16_to_f32(kvc_get16(src));
            const int8_t *q = (const int8_t *)(src + 2);
            uint16_t *out = dst + t * C + b;
            if (m == Q8_BLOCK) {
                __m256 vd = _mm256_set1_ps(df);
                __m256i b32 = _mm256_loadu_si256((const __m256i *)q);
                __m128i lo = _mm256_castsi256_si128(b32), hi = _mm256_extracti128_si256(b32, 1);
                __m128i h0 = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), vd), _MM_FROUND_TO_NEAREST_INT);
                __m128i h1 = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), vd), _MM_FROUND_TO_NEAREST_INT);
                __m128i h2 = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), vd), _MM_FROUND_TO_NEAREST_INT);
                __m128i h3 = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), vd), _MM_FROUND_TO_NEAREST_INT);
                _mm_storeu_si128((__m128i *)(out), h0);
                _mm_storeu_si128((__m128i *)(out + 8), h1);
                _mm_storeu_si128((__m128i *)(out + 16), h2);
                _mm_storeu_si128((__m128i *)(out + 24), h3);
            } else
                q8_block_scalar(out, q, df, m);
            src += 2 + m;
        }
}
#endif

int kvc_q8_decode_impl(const uint8_t *src, size_t size, const kvc_dims *d, uint16_t *dst, int allow_simd) {
    const size_t C = d->channels, T = d->tokens, P = (size_t)d->layers * 2u;
    const size_t nb = (C + Q8_BLOCK - 1) / Q8_BLOCK;
    const int simd = kvc_use_avx2(allow_simd, 1);
    // every plane takes at least T * C bytes (count = P * T * C <= 2^40: no overflow)
    if (size / P < T * C) return LMC_KV_ERR_TRUNCATED;
    float *df = malloc(C * sizeof(float));
    if (!df) return LMC_KV_ERR_NOMEM;
    int rc = 0;
    const uint8_t *r = src, *end = src + size;
    for (size_t p = 0; p < P; p++) {
        uint16_t *out = dst + p * T * C;
        if (r == end) { rc = LMC_KV_ERR_TRUNCATED; break; }
        int mode = *r++;
        size_t need = mode == 1 ? 2 * C + T * C : T * (C + 2 * nb);
        if (mode > 1) { rc = LMC_KV_ERR_CORRUPT; break; }
        if ((size_t)(end - r) < need) { rc = LMC_KV_ERR_TRUNCATED; break; }
        if (mode == 1) {
            for (size_t c = 0; c < C; c++) df[c] = kvc_f16_to_f32(kvc_get16(r + 2 * c));
            const int8_t *q = (const int8_t *)(r + 2 * C);
            for (size_t t = 0; t < T; t++) {
#if KVC_X86
                if (simd) { q8_row_avx2(out + t * C, q + t * C, df, C); continue; }
#endif
                q8_row_scalar(out + t * C, q + t * C, df, C);
            }
        } else {
#if KVC_X86
            if (simd) q8_blocks_avx2(r, T, C, out); else
#endif
            {
                const uint8_t *b8 = r;
                for (size_t t = 0; t < T; t++)
                    for (size_t b = 0; b < C; b += Q8_BLOCK) {
                        size_t m = C - b < Q8_BLOCK ? C - b : Q8_BLOCK;
                        q8_block_scalar(out + t * C + b, (const int8_t *)(b8 + 2), kvc_f16_to_f32(kvc_get16(b8)), m);
                        b8 += 2 + m;
                    }
            }
        }
        r += need;
    }
    if (!rc && r != end) rc = LMC_KV_ERR_CORRUPT;
    free(df);
    return rc;
}

