// CKVCodec: serializers ("serdes") for KV-cache chunks of float16 values.
//
// Input layout (all codecs): float16 bit patterns, [layers][2 (K then V)][tokens][channels], row-major,
// channels fastest; channels = kv_heads * head_dim. Every encoded stream is self-describing: it starts
// with a 24-byte header (magic "LMKC", codec id, version, level, layers, tokens, channels, head_dim),
// and the decoder refuses a stream whose dims differ from the ones it is asked to decode.
//
// Codecs:
//   LMC_KV_LOSSLESS  (1)  bit-exact. Each float16's sign and exponent, taken relative to its channel (the
//                         channel's majority sign and largest exponent), form a 6-bit symbol that is
//                         Huffman-coded (four interleaved streams, decoded several symbols per table
//                         lookup); the 10 mantissa bits, noise, are stored as they are. ~1.2x on Gemma 3 KV.
//                         Streams of the earlier version 2 (the high byte coded with zstd) still decode.
//   LMC_KV_Q8        (2)  int8 with float16 scales (absmax/127), round to nearest; per (layer, K/V) plane
//                         the encoder keeps the smaller squared error of: q8_0 blocks of 32 values per
//                         token (8.5 bits/value), or one scale per channel over the chunk's tokens (8 bits +
//                         16/tokens; K planes with outlier channels). ~1.94x.
//   LMC_KV_CACHEGEN  (3)  lossy, entropy coded: uniform quantization with a step per (layer, K/V, channel),
//                         rANS-coded with frequency tables per (layer, K/V, channel class); channel means
//                         are coded once per chunk as whole steps. `level` picks a
//                         preset (see LMC_KV_CACHEGEN_LEVELS); higher level = smaller, less accurate.
//
// Determinism: the same input gives the same bytes and the same decoded values on every machine and ISA
// (integer arithmetic and plain scalar IEEE float math; SIMD paths give the same bits as the scalar ones).
//
// Thread safety: all functions are reentrant; no global mutable state. Encoders allocate scratch memory
// with malloc (freed before returning); decoders allocate only small per-call tables (on the stack /
// malloc, < 1 MiB; the lossless decoder of version 2 streams also a zstd context). No alignment
// requirements on any buffer.
//
// Hostile input: decoders never read outside [src, src+size) nor write outside dst (exactly
// layers*2*tokens*channels values), whatever the bytes. Corruption inside entropy-coded data is usually
// but not always detected; when undetected the call succeeds with wrong values.
#ifndef CKVCODEC_H
#define CKVCODEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    LMC_KV_LOSSLESS = 1,
    LMC_KV_Q8 = 2,
    LMC_KV_CACHEGEN = 3,
};

/// Number of cachegen presets: valid `level` values are 0 ..< LMC_KV_CACHEGEN_LEVELS.
#define LMC_KV_CACHEGEN_LEVELS 4

/// Error codes (negative) returned by lmc_kv_decode / lmc_kv_stream_codec.
enum {
    LMC_KV_ERR_ARG = -1,       // bad arguments (null pointer, zero/invalid dims, head_dim not dividing channels)
    LMC_KV_ERR_TRUNCATED = -2, // stream shorter than its header or its declared sections
    LMC_KV_ERR_MAGIC = -3,     // not a KV codec stream, or unknown codec / version
    LMC_KV_ERR_DIMS = -4,      // the stream was encoded with other dims than the ones asked for
    LMC_KV_ERR_CORRUPT = -5,   // malformed contents (bad tables, sizes, entropy-coded data)
    LMC_KV_ERR_NOMEM = -6,     // scratch allocation failed
};

/// Size of the stream header common to all codecs.
#define LMC_KV_HEADER_SIZE 24

/// Upper bound of an encoded stream of `count` float16 values (count = layers*2*tokens*channels), any dims.
/// Returns 0 for an unknown codec or an overflowing count.
size_t lmc_kv_encode_bound(int codec, size_t count);

/// Encodes `src` into `dst` (capacity `cap`). `level`: lossless: 0 (it has no levels); q8: ignored;
/// cachegen: preset 0 ..< LMC_KV_CACHEGEN_LEVELS. Returns the encoded size, or 0 on failure (unknown
/// codec/level, bad dims, cap too small, out of memory). channels must be a multiple of head_dim.
/// Lossy codecs map NaN to 0 and clamp +-inf to +-65504.
size_t lmc_kv_encode(int codec, int level, const uint16_t *src, uint32_t layers, uint32_t tokens,
                     uint32_t channels, uint32_t head_dim, uint8_t *dst, size_t cap);

/// Decodes a stream into `dst` (exactly layers*2*tokens*channels float16 values).
/// Returns 0 on success or a negative LMC_KV_ERR_* code. On error dst holds unspecified values.
int lmc_kv_decode(const uint8_t *src, size_t size, uint32_t layers, uint32_t tokens, uint32_t channels,
                  uint32_t head_dim, uint16_t *dst);

/// lmc_kv_decode through the portable decoders only (allow_simd 0) or the SIMD ones where the CPU has
/// them (1, what lmc_kv_decode does): the two give the same values; tests compare them.
int lmc_kv_decode_path(const uint8_t *src, size_t size, uint32_t layers, uint32_t tokens, uint32_t channels,
                       uint32_t head_dim, uint16_t *dst, int allow_simd);

/// The codec id a stream holds (from its header; checks magic, codec, version), or a negative code.
int lmc_kv_stream_codec(const uint8_t *src, size_t size);

#ifdef __cplusplus
}
#endif

#endif
