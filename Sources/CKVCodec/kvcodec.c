// Public entry points: header writing/checking and dispatch to the codecs.
#include "kvc_internal.h"

size_t lmc_kv_encode_bound(int codec, size_t count) {
    if ((uint64_t)count > KVC_MAX_COUNT) return 0;
    switch (codec) {
    case LMC_KV_LOSSLESS: return kvc_lossless_bound(count);
    case LMC_KV_Q8: return kvc_q8_bound(count);
    case LMC_KV_CACHEGEN: return kvc_cg_bound(count);
    default: return 0;
    }
}

size_t lmc_kv_encode(int codec, int level, const uint16_t *src, uint32_t layers, uint32_t tokens,
                     uint32_t channels, uint32_t head_dim, uint8_t *dst, size_t cap) {
    kvc_dims d;
    if (!src || !dst || kvc_dims_make(&d, layers, tokens, channels, head_dim)) return 0;
    if (cap < LMC_KV_HEADER_SIZE) return 0;
    switch (codec) {
    case LMC_KV_LOSSLESS:
        if (level != 0) return 0;
        break;
    case LMC_KV_Q8: level = 0; break;
    case LMC_KV_CACHEGEN:
        if (level < 0 || level >= LMC_KV_CACHEGEN_LEVELS) return 0;
        break;
    default: return 0;
    }
    kvc_header_write(dst, codec, level, &d);
    uint8_t *body = dst + LMC_KV_HEADER_SIZE;
    size_t bcap = cap - LMC_KV_HEADER_SIZE, n;
    switch (codec) {
    case LMC_KV_LOSSLESS: n = kvc_lossless_encode(src, &d, body, bcap); break;
    case LMC_KV_Q8: n = kvc_q8_encode(src, &d, body, bcap); break;
    default: n = kvc_cg_encode(level, src, &d, body, bcap); break;
    }
    return n ? n + LMC_KV_HEADER_SIZE : 0;
}

int lmc_kv_stream_codec(const uint8_t *src, size_t size) {
    if (!src) return LMC_KV_ERR_ARG;
    if (size < LMC_KV_HEADER_SIZE) return LMC_KV_ERR_TRUNCATED;
    if (src[0] != KVC_MAGIC0 || src[1] != KVC_MAGIC1 || src[2] != KVC_MAGIC2 || src[3] != KVC_MAGIC3) return LMC_KV_ERR_MAGIC;
    if ((src[5] != KVC_VERSION && src[5] != KVC_VERSION_EARLIER) || src[7] != 0) return LMC_KV_ERR_MAGIC;
    switch (src[4]) {
    case LMC_KV_LOSSLESS: case LMC_KV_Q8: return src[4];
    case LMC_KV_CACHEGEN: return src[6] < LMC_KV_CACHEGEN_LEVELS ? LMC_KV_CACHEGEN : LMC_KV_ERR_MAGIC;
    default: return LMC_KV_ERR_MAGIC;
    }
}

int lmc_kv_decode(const uint8_t *src, size_t size, uint32_t layers, uint32_t tokens, uint32_t channels,
                  uint32_t head_dim, uint16_t *dst) {
    return lmc_kv_decode_path(src, size, layers, tokens, channels, head_dim, dst, 1);
}

int lmc_kv_decode_path(const uint8_t *src, size_t size, uint32_t layers, uint32_t tokens, uint32_t channels,
                       uint32_t head_dim, uint16_t *dst, int allow_simd) {
    kvc_dims d;
    if (!dst || kvc_dims_make(&d, layers, tokens, channels, head_dim)) return LMC_KV_ERR_ARG;
    int codec = lmc_kv_stream_codec(src, size);
    if (codec < 0) return codec;
    if (kvc_get32(src + 8) != layers || kvc_get32(src + 12) != tokens || kvc_get32(src + 16) != channels ||
        kvc_get32(src + 20) != head_dim)
        return LMC_KV_ERR_DIMS;
    const uint8_t *body = src + LMC_KV_HEADER_SIZE;
    size_t bsize = size - LMC_KV_HEADER_SIZE;
    switch (codec) {
    case LMC_KV_LOSSLESS: return kvc_lossless_decode_impl(src[5], body, bsize, &d, dst, allow_simd);
    case LMC_KV_Q8: return kvc_q8_decode_impl(body, bsize, &d, dst, allow_simd);
    default: return kvc_cg_decode_impl(body, bsize, &d, dst, allow_simd);
    }
}
