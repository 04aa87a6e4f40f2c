// Internal helpers shared by the codec files (not part of the public API).
#ifndef KVC_INTERNAL_H
#define KVC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "CKVCodec.h"

// No floating-point contraction (a*b+c -> fma) anywhere: results must not depend on the ISA.
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define KVC_X86 1
#else
#define KVC_X86 0
#endif

#define KVC_MAGIC0 'L'
#define KVC_MAGIC1 'M'
#define KVC_MAGIC2 'K'
#define KVC_MAGIC3 'C'
// Version 3 changed only the lossless codec's body; version 2 streams of every codec still decode.
#define KVC_VERSION 3
#define KVC_VERSION_EARLIER 2

// Largest number of values a stream may hold (2^40): keeps all size arithmetic far from overflow.
#define KVC_MAX_COUNT ((uint64_t)1 << 40)

static inline void kvc_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void kvc_put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void kvc_put64(uint8_t *p, uint64_t v) { kvc_put32(p, (uint32_t)v); kvc_put32(p + 4, (uint32_t)(v >> 32)); }
static inline uint16_t kvc_get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t kvc_get32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t kvc_get64(const uint8_t *p) { return (uint64_t)kvc_get32(p) | ((uint64_t)kvc_get32(p + 4) << 32); }

// float16 <-> float32, integer-only, round to nearest even; NaN keeps its top payload bits and is made
// quiet (the same bits as x86 F16C vcvtps2ph / vcvtph2ps, checked exhaustively).
static inline uint16_t kvc_f32_to_f16(float f) {
    uint32_t x; memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (ax >= 0x38800000u) {
        uint32_t r = ax - 0x38000000u;
        uint32_t h = r >> 13, rem = r & 0x1fffu;
        h += (rem > 0x1000u) || (rem == 0x1000u && (h & 1u));
        return (uint16_t)(sign | h);
    }
    if (ax <= 0x33000000u) return sign;
    uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e;  // 14..23
    uint32_t h = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    h += (rem > half) || (rem == half && (h & 1u));
    return (uint16_t)(sign | h);
}

static inline float kvc_f16_to_f32(uint16_t h) {
    uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 31u, m = h & 0x3ffu, x;
    if (e == 31u) x = s | 0x7f800000u | (m ? 0x400000u : 0u) | (m << 13);  // NaN made quiet, as F16C
    else if (e) x = s | ((e + 112u) << 23) | (m << 13);
    else if (!m) x = s;
    else {
        int sh = __builtin_clz(m) - 21;
        m <<= sh;
        x = s | ((uint32_t)(113 - sh) << 23) | ((m & 0x3ffu) << 13);
    }
    float f; memcpy(&f, &x, 4);
    return f;
}

// Lossy codecs' input sanitation: NaN -> 0, +-inf -> +-65504 (as float).
static inline float kvc_f16_to_f32_finite(uint16_t h) {
    if ((h & 0x7c00u) == 0x7c00u) {
        if (h & 0x3ffu) return 0.0f;
        return (h & 0x8000u) ? -65504.0f : 65504.0f;
    }
    return kvc_f16_to_f32(h);
}

typedef struct {
    uint32_t layers, tokens, channels, head_dim;
    uint64_t count;  // layers * 2 * tokens * channels
} kvc_dims;

// Validates dims; 0 on success.
static inline int kvc_dims_make(kvc_dims *d, uint32_t layers, uint32_t tokens, uint32_t channels, uint32_t head_dim) {
    if (!layers || !tokens || !channels || !head_dim || channels % head_dim) return LMC_KV_ERR_ARG;
    uint64_t c = (uint64_t)layers * 2u * tokens;
    if (c > KVC_MAX_COUNT / channels) return LMC_KV_ERR_ARG;
    d->layers = layers; d->tokens = tokens; d->channels = channels; d->head_dim = head_dim;
    d->count = c * channels;
    if ((uint64_t)(size_t)d->count != d->count || d->count > (uint64_t)(SIZE_MAX / 4)) return LMC_KV_ERR_ARG;
    return 0;
}

static inline void kvc_header_write(uint8_t *p, int codec, int level, const kvc_dims *d) {
    p[0] = KVC_MAGIC0; p[1] = KVC_MAGIC1; p[2] = KVC_MAGIC2; p[3] = KVC_MAGIC3;
    p[4] = (uint8_t)codec; p[5] = KVC_VERSION; p[6] = (uint8_t)level; p[7] = 0;
    kvc_put32(p + 8, d->layers); kvc_put32(p + 12, d->tokens); kvc_put32(p + 16, d->channels); kvc_put32(p + 20, d->head_dim);
}

// Codec entry points (after the common header is written / checked).
size_t kvc_lossless_bound(size_t count);
size_t kvc_lossless_encode(const uint16_t *src, const kvc_dims *d, uint8_t *dst, size_t cap);
size_t kvc_q8_bound(size_t count);
size_t kvc_q8_encode(const uint16_t *src, const kvc_dims *d, uint8_t *dst, size_t cap);
size_t kvc_cg_bound(size_t count);
#define KVC_CG_MAXLM 64
typedef struct { float rel, beta_k, beta_v, early, kmul, vmul; float layer_mul[KVC_CG_MAXLM]; int offsets; } kvc_cg_params;
size_t kvc_cg_encode_params(const kvc_cg_params *pr, const uint16_t *src, const kvc_dims *d, uint8_t *dst, size_t cap);
size_t kvc_cg_encode(int level, const uint16_t *src, const kvc_dims *d, uint8_t *dst, size_t cap);

// The decoders with the choice of path: allow_simd = 0 forces the portable one (the two give the
// same bits; harnesses compare them).
int kvc_lossless_decode_impl(int version, const uint8_t *src, size_t size, const kvc_dims *d, uint16_t *dst,
                             int allow_simd);
int kvc_q8_decode_impl(const uint8_t *src, size_t size, const kvc_dims *d, uint16_t *dst, int allow_simd);
int kvc_cg_decode_impl(const uint8_t *src, size_t size, const kvc_dims *d, uint16_t *dst, int allow_simd);

// Whether a decoder takes its AVX2 path (with F16C conversions when need_f16c), chosen at run time.
static inline int kvc_use_avx2(int allow_simd, int need_f16c) {
#if KVC_X86
    return allow_simd && __builtin_cpu_supports("avx2") && (!need_f16c || __builtin_cpu_supports("f16c"));
#else
    (void)allow_simd;
    (void)need_f16c;
    return 0;
#endif
}

#endif
