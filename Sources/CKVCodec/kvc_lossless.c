// Codec 1, lossless. Body after the common header:
//   side   [layers*2*channels] bytes: per (layer, K/V, channel) maximum exponent (bits 0-4) and majority
//          sign (bit 5) over the chunk's tokens
//   zlen   u64: size of the zstd frame
//   zstd   one zstd frame holding the transformed high-byte plane (count bytes), in value order:
//          h' = (maxexp - exponent) << 3 | (sign ^ majority sign) << 2 | top 2 mantissa bits
//   low    [count] bytes: the low byte (8 low mantissa bits) of every value, raw
// The transform makes the high bytes of all channels share one distribution (zstd's literal Huffman
// coder then gets close to the per-channel entropy); the low byte is incompressible.
#include <stdlib.h>
#include <zstd.h>
#include "kvc_internal.h"

size_t kvc_lossless_bound(size_t count) {
    size_t zb = ZSTD_compressBound(count);
    if (zb == 0 || count > (SIZE_MAX - 4096 - zb) / 2) return 0;
    return LMC_KV_HEADER_SIZE + count /* side, <= count */ + 8 + zb + count;
}

size_t kvc_lossless_encode(int level, const uint16_t *src, const kvc_dims *d, uint8_t *dst, size_t cap) {
    const size_t C = d->channels, T = d->tokens, P = (size_t)d->layers * 2u, N = (size_t)d->count;
    const size_t side = P * C;
    if (cap < side + 8 + N) return 0;
    uint8_t *hb = malloc(N ? N : 1);
    uint32_t *signs = malloc(C * sizeof(uint32_t));
    uint8_t *maxe = malloc(C);
    if (!hb || !signs || !maxe) { free(hb); free(signs); free(maxe); return 0; }
    for (size_t p = 0; p < P; p++) {
        const uint16_t *x = src + p * T * C;
        memset(signs, 0, C * sizeof(uint32_t));
        memset(maxe, 0, C);
        for (size_t t = 0; t < T; t++) {
            const uint16_t *row = x + t * C;
            for (size_t c = 0; c < C; c++) {
                uint8_t e = (uint8_t)((row[c] >> 10) & 31u);
                maxe[c] = e > maxe[c] ? e : maxe[c];
                signs[c] += row[c] >> 15;
            }
        }
        uint8_t *sp = dst + p * C;
        for (size_t c = 0; c < C; c++) {
            uint8_t maj = (uint8_t)(2u * signs[c] > T);
            sp[c] = (uint8_t)(maxe[c] | (maj << 5));
        }
        uint8_t *h = hb + p * T * C;
        for (size_t t = 0; t < T; t++) {
            const uint16_t *row = x + t * C;
            uint8_t *hr = h + t * C;
            for (size_t c = 0; c < C; c++) {
                uint32_t v = row[c];
                uint32_t r = (uint32_t)(sp[c] & 31u) - ((v >> 10) & 31u);
                uint32_t s = (v >> 15) ^ (sp[c] >> 5);
                hr[c] = (uint8_t)((r << 3) | (s << 2) | ((v >> 8) & 3u));
            }
        }
    }
    free(signs); free(maxe);
    size_t zcap = cap - side - 8 - N;
    size_t z;
    if (zcap >= ZSTD_compressBound(N)) {
        z = ZSTD_compress(dst + side + 8, zcap, hb, N, level);
    } else {  // zstd may fail with less than its bound even if the frame fits: go through scratch
        size_t zb = ZSTD_compressBound(N);
        uint8_t *tmp = malloc(zb);
        if (!tmp) { free(hb); return 0; }
        z = ZSTD_compress(tmp, zb, hb, N, level);
        if (!ZSTD_isError(z) && z <= zcap) memcpy(dst + side + 8, tmp, z);
        else z = (size_t)-1; // an error code for ZSTD_isError
        free(tmp);
    }
    free(hb);
    if (ZSTD_isError(z)) return 0;
    kvc_put64(dst + side, z);
    uint8_t *lo = dst + side + 8 + z;
    for (size_t i = 0; i < N; i++) lo[i] = (uint8_t)src[i];
    return side + 8 + z + N;
}

// Rebuilds one row of C values from transformed high bytes `h` (a private copy) and raw low bytes.
static void lossless_row(uint16_t *restrict out, const uint8_t *restrict h, const uint8_t *restrict lo,
                         const uint16_t *restrict me, const uint16_t *restrict mj, size_t C) {
    for (size_t c = 0; c < C; c++) {
        uint16_t v = h[c];
        uint16_t hi = (uint16_t)(((me[c] - ((v >> 1) & 0x7cu)) & 0x7cu) | (((v << 5) & 0x80u) ^ mj[c]) | (v & 3u));
        out[c] = (uint16_t)((hi << 8) | lo[c]);
    }
}

#if KVC_X86
#include <immintrin.h>
__attribute__((target("avx2")))
static void lossless_row_avx2(uint16_t *restrict out, const uint8_t *restrict h, const uint8_t *restrict lo,
                              const uint16_t *restrict me, const uint16_t *restrict mj, size_t C) {
    const __m256i k7c = _mm256_set1_epi16(0x7c), k80 = _mm256_set1_epi16(0x80), k3 = _mm256_set1_epi16(3);
    size_t c = 0;
    for (; c + 16 <= C; c += 16) {
        __m256i v = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(h + c)));
        __m256i l = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(lo + c)));
        __m256i e = _mm256_and_si256(_mm256_sub_epi16(_mm256_loadu_si256((const __m256i *)(me + c)),
                                                      _mm256_and_si256(_mm256_srli_epi16(v, 1), k7c)), k7c);
        __m256i s = _mm256_xor_si256(_mm256_and_si256(_mm256_slli_epi16(v, 5), k80),
                                     _mm256_loadu_si256((const __m256i *)(mj + c)));
        __m256i hi = _mm256_or_si256(_mm256_or_si256(e, s), _mm256_and_si256(v, k3));
        _mm256_storeu_si256((__m256i *)(out + c), _mm256_or_si256(_mm256_slli_epi16(hi, 8), l));
    }
    if (c < C) lossless_row(out + c, h + c, lo + c, me + c, mj + c, C - c);
}
#endif

int kvc_lossless_decode(const uint8_t *src, size_t size, const kvc_dims *d, uint16_t *dst) {
    return kvc_lossless_decode_impl(src, size, d, dst, 1);
}

int kvc_lossless_decode_impl(const uint8_t *src, size_t size, const kvc_dims *d, uint16_t *dst, int allow_simd) {
    const size_t C = d->channels, T = d->tokens, P = (size_t)d->layers * 2u, N = (size_t)d->count;
    const size_t side = P * C;
    const int simd = kvc_use_avx2(allow_simd, 0);
    if (size < side + 8) return LMC_KV_ERR_TRUNCATED;
    uint64_t z = kvc_get64(src + side);
    if (z > size - side - 8 || size - side - 8 - z < N) return LMC_KV_ERR_TRUNCATED;
    if (size - side - 8 - z != N) return LMC_KV_ERR_CORRUPT;
    for (size_t k = 0; k < side; k++)
        if (src[k] & 0xc0u) return LMC_KV_ERR_CORRUPT;
    const uint8_t *zs = src + side + 8, *lo = zs + z;
    // The high-byte plane is decompressed into the upper half of dst (bytes N .. 2N) and consumed row by
    // row: rebuilding value i writes bytes 2i, 2i+1, always below the unread part (N + i ..).
    uint8_t *hb = (uint8_t *)dst + N;
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    if (!dc) return LMC_KV_ERR_NOMEM;
    size_t r = ZSTD_decompressDCtx(dc, hb, N, zs, (size_t)z);
    ZSTD_freeDCtx(dc);
    if (ZSTD_isError(r) || r != N) return LMC_KV_ERR_CORRUPT;
    uint16_t *me = malloc(C * 2 * sizeof(uint16_t));
    uint8_t *rowbuf = malloc(C);
    if (!me || !rowbuf) { free(me); free(rowbuf); return LMC_KV_ERR_NOMEM; }
    uint16_t *mj = me + C;
    size_t i = 0;
    for (size_t p = 0; p < P; p++) {
        const uint8_t *sp = src + p * C;
        for (size_t c = 0; c < C; c++) {
            me[c] = (uint16_t)((sp[c] & 31u) << 2);
            mj[c] = (uint16_t)((sp[c] & 32u) << 2);
        }
        for (size_t t = 0; t < T; t++, i += C) {
            memcpy(rowbuf, hb + i, C);
#if KVC_X86
            if (simd) { lossless_row_avx2(dst + i, rowbuf, lo + i, me, mj, C); continue; }
#endif
            lossless_row(dst + i, rowbuf, lo + i, me, mj, C);
        }
    }
    free(me); free(rowbuf);
    return 0;
}
