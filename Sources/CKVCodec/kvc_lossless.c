// Codec 1, lossless. Every float16 v is split in three: its sign and exponent as one 6-bit symbol,
// relative to its channel (per (layer, K/V, channel): the largest exponent and the majority sign over
// the chunk's tokens), its top 2 mantissa bits and its low 8 mantissa bits. The symbols carry 3 to 4
// bits of entropy on model KV and are Huffman-coded; the 10 mantissa bits are noise and are stored as
// they are.
//
// Body after the common header (stream version 3):
//   side     [layers*2*channels] bytes: per (layer, K/V, channel) maximum exponent (bits 0-4) and
//            majority sign (bit 5)
//   lengths  32 bytes: the code length of each of the 64 symbols, 4 bits each (symbol 2k in the low
//            nibble of byte k); 0 = symbol absent, at most KVC_HUF_MAX_BITS
//   sizes    4 x u64: the byte size of each of the 4 Huffman streams
//   streams  stream k holds symbols [k*count/4, (k+1)*count/4) in value order, codes packed from the
//            least significant bit of each byte on (canonical codes, bit-reversed)
//   mant     [8*ceil(count/32)] bytes: the 2 top mantissa bits of value i, in groups of 32 values: value
//            32g + j at bits 2*(j/8) of byte 8g + j%8 (so that one 64-bit shift per 8 values unpacks them)
//   low      [count] bytes: the low byte of every value
// Symbol of value v in channel c: (maxexp[c] - exponent) << 1 | (sign ^ majority[c]).
//
// Version 2 streams (the high byte transformed and coded with zstd, the low byte raw) still decode.
#include <stdlib.h>
#include <zstd.h>
#include "kvc_internal.h"

#define KVC_HUF_SYMBOLS 64
#define KVC_HUF_MAX_BITS 12
#define KVC_HUF_TABLE (1u << KVC_HUF_MAX_BITS)
#define KVC_HUF_STREAMS 4
// A table entry (uint32): bytes 0-2 up to 3 symbols decoded from the next KVC_HUF_MAX_BITS bits, bits
// 24-27 the bits they take, bits 30-31 how many there are (so that entry >> 24 is the bits taken plus
// a multiple of 64). Bit patterns that start no code (a code may be incomplete) decode to KVC_HUF_BAD,
// which the rebuild pass detects.
#define KVC_HUF_BAD 0x40u

static size_t mant_bytes(size_t count) { return (count + 31) / 32 * 8; }

static size_t lossless_fixed(size_t count, size_t side) {
    return side + 32 + 8 * KVC_HUF_STREAMS + mant_bytes(count) + count;
}

size_t kvc_lossless_bound(size_t count) {
    if (count > (SIZE_MAX - 4096) / 16) return 0;  // keeps count * KVC_HUF_MAX_BITS and the sum below in range
    // side <= count; codes take at most KVC_HUF_MAX_BITS bits each, plus a partial byte per stream.
    return LMC_KV_HEADER_SIZE + lossless_fixed(count, count) + (count * KVC_HUF_MAX_BITS + 7) / 8 + KVC_HUF_STREAMS;
}

// --- Code lengths -------------------------------------------------------------------------------------

// Huffman code lengths for `freq` (64 symbols), none longer than KVC_HUF_MAX_BITS; absent symbols get 0.
static void huf_lengths(const uint64_t *freq, uint8_t *len) {
    int order[KVC_HUF_SYMBOLS], n = 0;
    memset(len, 0, KVC_HUF_SYMBOLS);
    for (int s = 0; s < KVC_HUF_SYMBOLS; s++)
        if (freq[s]) order[n++] = s;
    if (n == 0) return;
    if (n == 1) { len[order[0]] = 1; return; }
    // Ascending frequency (insertion sort: 64 symbols at most).
    for (int i = 1; i < n; i++) {
        int s = order[i], j = i;
        while (j > 0 && freq[order[j - 1]] > freq[s]) { order[j] = order[j - 1]; j--; }
        order[j] = s;
    }
    // Two-queue Huffman: leaves 0..n-1 in order, internal nodes n..2n-2 created in ascending weight.
    uint64_t weight[2 * KVC_HUF_SYMBOLS];
    int parent[2 * KVC_HUF_SYMBOLS];
    for (int i = 0; i < n; i++) weight[i] = freq[order[i]];
    int leaf = 0, node = n, next = n;
    for (; next < 2 * n - 1; next++) {
        int pick[2];
        for (int k = 0; k < 2; k++) {
            if (leaf < n && (node >= next || weight[leaf] <= weight[node])) pick[k] = leaf++;
            else pick[k] = node++;
        }
        weight[next] = weight[pick[0]] + weight[pick[1]];
        parent[pick[0]] = parent[pick[1]] = next;
    }
    int depth[2 * KVC_HUF_SYMBOLS];
    depth[2 * n - 2] = 0;
    for (int i = 2 * n - 3; i >= 0; i--) depth[i] = depth[parent[i]] + 1;
    // Clamp, then lengthen the least frequent codes shorter than the limit until the Kraft sum fits.
    const int64_t full = (int64_t)1 << KVC_HUF_MAX_BITS;
    int64_t kraft = 0;
    for (int i = 0; i < n; i++) {
        int d = depth[i] > KVC_HUF_MAX_BITS ? KVC_HUF_MAX_BITS : depth[i];
        len[order[i]] = (uint8_t)d;
        kraft += full >> d;
    }
    while (kraft > full) {
        int best = -1;
        for (int i = 0; i < n; i++) {  // the least frequent (first) of the longest codes below the limit
            int l = len[order[i]];
            if (l < KVC_HUF_MAX_BITS && (best < 0 || l > len[order[best]])) best = i;
        }
        kraft -= full >> (len[order[best]] + 1);
        len[order[best]]++;
    }
    // Spend what is left on the most frequent symbols.
    for (int i = n - 1; i >= 0; i--) {
        uint8_t *l = &len[order[i]];
        while (*l > 1 && kraft + (full >> *l) <= full) { kraft += full >> *l; (*l)--; }
    }
}

static inline uint32_t huf_reverse(uint32_t code, int bits) {
    uint32_t r = 0;
    for (int i = 0; i < bits; i++) r |= ((code >> i) & 1u) << (bits - 1 - i);
    return r;
}

// Canonical codes (shorter first, then by symbol), bit-reversed for LSB-first packing. 0 when the
// lengths are not a prefix code (over-subscribed, or a length above the limit).
static int huf_codes(const uint8_t *len, uint32_t *code) {
    uint32_t count[KVC_HUF_MAX_BITS + 1] = {0}, next[KVC_HUF_MAX_BITS + 2];
    int64_t kraft = 0;
    for (int s = 0; s < KVC_HUF_SYMBOLS; s++) {
        if (len[s] > KVC_HUF_MAX_BITS) return 0;
        if (len[s]) { count[len[s]]++; kraft += (int64_t)1 << (KVC_HUF_MAX_BITS - len[s]); }
    }
    if (kraft > ((int64_t)1 << KVC_HUF_MAX_BITS)) return 0;
    uint32_t c = 0;
    for (int l = 1; l <= KVC_HUF_MAX_BITS; l++) {
        c = (c + count[l - 1]) << 1;
        next[l] = c;
    }
    for (int s = 0; s < KVC_HUF_SYMBOLS; s++)
        code[s] = len[s] ? huf_reverse(next[len[s]]++, len[s]) : 0;
    return 1;
}

// --- Encoder -------------------------------------------------------------------------------------------

typedef struct {
    uint8_t *p, *end;
    uint64_t acc;
    unsigned bits;
    int overflow;
} huf_writer;

static inline void huf_put(huf_writer *w, uint32_t code, unsigned bits) {
    w->acc |= (uint64_t)code << w->bits;
    w->bits += bits;
    if (w->bits >= 32) {
        if (w->end - w->p >= 4) kvc_put32(w->p, (uint32_t)w->acc), w->p += 4;
        else w->overflow = 1;
        w->acc >>= 32;
        w->bits -= 32;
    }
}

static inline void huf_flush(huf_writer *w) {
    while (w->bits > 0) {
        if (w->p < w->end) *w->p++ = (uint8_t)w->acc;
        else w->overflow = 1;
        w->acc >>= 8;
        w->bits = w->bits > 8 ? w->bits - 8 : 0;
    }
}

size_t kvc_lossless_encode(const uint16_t *src, const kvc_dims *d, uint8_t *dst, size_t cap) {
    const size_t C = d->channels, T = d->tokens, P = (size_t)d->layers * 2u, N = (size_t)d->count;
    const size_t side = P * C;
    if (cap < lossless_fixed(N, side)) return 0;
    uint8_t *sym = malloc(N);
    uint32_t *signs = malloc(C * sizeof(uint32_t));
    if (!sym || !signs) { free(sym); free(signs); return 0; }
    uint64_t counts[4][KVC_HUF_SYMBOLS] = {{0}};  // four histograms: fewer stalls on a repeated symbol
    for (size_t p = 0; p < P; p++) {
        const uint16_t *x = src + p * T * C;
        uint8_t *sp = dst + p * C;
        memset(signs, 0, C * sizeof(uint32_t));
        memset(sp, 0, C);
        for (size_t t = 0; t < T; t++)
            for (size_t c = 0; c < C; c++) {
                uint8_t e = (uint8_t)((x[t * C + c] >> 10) & 31u);
                sp[c] = e > sp[c] ? e : sp[c];
                signs[c] += x[t * C + c] >> 15;
            }
        for (size_t c = 0; c < C; c++) sp[c] |= (uint8_t)((2u * signs[c] > T) << 5);
        uint8_t *sy = sym + p * T * C;
        for (size_t t = 0; t < T; t++)
            for (size_t c = 0; c < C; c++) {
                uint32_t v = x[t * C + c];
                uint32_t s = (((uint32_t)(sp[c] & 31u) - ((v >> 10) & 31u)) << 1) | ((v >> 15) ^ (sp[c] >> 5));
                sy[t * C + c] = (uint8_t)s;
            }
    }
    size_t i = 0;
    for (; i + 4 <= N; i += 4) {
        counts[0][sym[i]]++; counts[1][sym[i + 1]]++; counts[2][sym[i + 2]]++; counts[3][sym[i + 3]]++;
    }
    for (; i < N; i++) counts[0][sym[i]]++;
    free(signs);
    uint64_t freq[KVC_HUF_SYMBOLS];
    for (int s = 0; s < KVC_HUF_SYMBOLS; s++)
        freq[s] = counts[0][s] + counts[1][s] + counts[2][s] + counts[3][s];
    uint8_t len[KVC_HUF_SYMBOLS];
    uint32_t code[KVC_HUF_SYMBOLS];
    huf_lengths(freq, len);
    if (!huf_codes(len, code)) { free(sym); return 0; }
    uint8_t *o = dst + side;
    for (int k = 0; k < KVC_HUF_SYMBOLS / 2; k++) o[k] = (uint8_t)(len[2 * k] | (len[2 * k + 1] << 4));
    uint8_t *sizes = o + 32;
    // The planes after the streams have a known size: reserve them at the end of the capacity.
    const size_t tail = mant_bytes(N) + N;
    huf_writer w = {sizes + 8 * KVC_HUF_STREAMS, dst + cap - tail, 0, 0, 0};
    for (int k = 0; k < KVC_HUF_STREAMS; k++) {
        uint8_t *start = w.p;
        const size_t a = N * (size_t)k / KVC_HUF_STREAMS, b = N * (size_t)(k + 1) / KVC_HUF_STREAMS;
        for (i = a; i < b; i++) huf_put(&w, code[sym[i]], len[sym[i]]);
        huf_flush(&w);
        kvc_put64(sizes + 8 * k, (uint64_t)(w.p - start));
    }
    free(sym);
    if (w.overflow) return 0;
    uint8_t *mant = w.p, *low = mant + mant_bytes(N);
    for (i = 0; i + 32 <= N; i += 32)
        for (size_t k = 0; k < 8; k++)
            mant[i / 4 + k] = (uint8_t)(((src[i + k] >> 8) & 3u) | ((src[i + 8 + k] >> 6) & 12u) |
                                        ((src[i + 16 + k] >> 4) & 48u) | ((src[i + 24 + k] >> 2) & 192u));
    if (i < N) memset(mant + i / 4, 0, 8);  // the last, partial group
    for (; i < N; i++) mant[(i >> 5) * 8 + (i & 7)] |= (uint8_t)(((src[i] >> 8) & 3u) << (2 * ((i >> 3) & 3)));
    for (i = 0; i < N; i++) low[i] = (uint8_t)src[i];
    return (size_t)(low + N - dst);
}

// --- Decoder -------------------------------------------------------------------------------------------

// The decoding tables for `len`: `one` (symbol | length << 8 per window) and `table` (up to 3 symbols
// in bytes 0-2, bits taken in bits 24-27, count in bits 30-31).
static void huf_table(const uint8_t *len, const uint32_t *code, uint32_t *table, uint16_t *one) {
    for (uint32_t i = 0; i < KVC_HUF_TABLE; i++) one[i] = (uint16_t)(KVC_HUF_BAD | (KVC_HUF_MAX_BITS << 8));
    for (int s = 0; s < KVC_HUF_SYMBOLS; s++) {
        if (!len[s]) continue;
        for (uint32_t i = code[s]; i < KVC_HUF_TABLE; i += 1u << len[s]) one[i] = (uint16_t)(s | (len[s] << 8));
    }
    for (uint32_t i = 0; i < KVC_HUF_TABLE; i++) {
        uint32_t e = one[i] & 0xffu;
        unsigned used = one[i] >> 8, n = 1;
        if ((one[i] & 0xffu) != KVC_HUF_BAD) {
            while (n < 3) {
                uint16_t nx = one[i >> used];
                unsigned l = nx >> 8;
                if ((nx & 0xffu) == KVC_HUF_BAD || used + l > KVC_HUF_MAX_BITS) break;
                e |= (uint32_t)(nx & 0xffu) << (8 * n);
                used += l;
                n++;
            }
        }
        table[i] = e | (used << 24) | (n << 30);
    }
}

typedef struct {
    size_t pos;  // next byte of src to load
    uint64_t buf;
    uint64_t bits;  // valid bits in buf, plus a multiple of 64
} huf_reader;

// Tops the reader up to at least 56 bits; bytes past the end of src read as zeros.
static inline void huf_refill(huf_reader *r, const uint8_t *src, size_t size) {
    uint64_t w = 0;
    const unsigned bits = (unsigned)(r->bits & 63u);
    if (r->pos + 8 <= size) memcpy(&w, src + r->pos, 8);
    else if (r->pos < size) memcpy(&w, src + r->pos, size - r->pos);
    r->buf |= w << bits;  // little-endian hosts (x86-64, arm64)
    r->pos += (63 - bits) >> 3;
    r->bits = bits | 56u;
}

// One lookup of reader `r` writing at out + i (up to 3 symbols; 4 bytes stored). The shift and the
// count take entry >> 24 whole: only its low 6 bits matter to either.
#define HUF_STEP(r, i)                                          \
    do {                                                        \
        uint32_t e_ = table[(r).buf & (KVC_HUF_TABLE - 1)];     \
        memcpy(out + (i), &e_, 4);                              \
        (i) += e_ >> 30;                                        \
        uint32_t used_ = e_ >> 24;                              \
        (r).buf >>= used_ & 63u;                                \
        (r).bits -= used_;                                      \
    } while (0)

// Decodes stream `k` alone from reader state `q` into out[j, end): four lookups a refill while there is
// room for them, then one symbol at a time. 0 when its codes ran past its `bytes`.
static int huf_finish(const uint8_t *src, size_t size, size_t start, size_t bytes, const uint32_t *table,
                      const uint16_t *one, uint8_t *out, huf_reader q, size_t j, size_t end) {
    while (j + 16 <= end) {
        huf_refill(&q, src, size);
        HUF_STEP(q, j); HUF_STEP(q, j); HUF_STEP(q, j); HUF_STEP(q, j);
    }
    while (j < end) {
        if ((q.bits & 63u) < KVC_HUF_MAX_BITS) huf_refill(&q, src, size);
        uint16_t e = one[q.buf & (KVC_HUF_TABLE - 1)];
        out[j++] = (uint8_t)e;
        unsigned used = e >> 8;
        q.buf >>= used;
        q.bits -= used;
    }
    // Bits consumed: everything loaded (pos - start bytes) less what is still in the buffer.
    return (q.pos - start) * 8 - (q.bits & 63u) <= bytes * 8;
}

// Decodes the four streams into out[0, N): in step while each has room for four lookups (their
// lookups are independent, so their latencies overlap), then each alone. 0 when a stream's codes run
// past its end.
static int huf_decode4(const uint8_t *src, size_t size, const size_t *start, const size_t *bytes,
                       const uint32_t *table, const uint16_t *one, uint8_t *out, size_t N) {
    huf_reader r0 = {start[0], 0, 0}, r1 = {start[1], 0, 0}, r2 = {start[2], 0, 0}, r3 = {start[3], 0, 0};
    size_t i0 = 0, i1 = N / 4, i2 = N * 2 / 4, i3 = N * 3 / 4;
    const size_t e0 = i1, e1 = i2, e2 = i3, e3 = N;
    while (i0 + 16 <= e0 && i1 + 16 <= e1 && i2 + 16 <= e2 && i3 + 16 <= e3) {
        huf_refill(&r0, src, size); huf_refill(&r1, src, size);
        huf_refill(&r2, src, size); huf_refill(&r3, src, size);
        for (int step = 0; step < 4; step++) {
            HUF_STEP(r0, i0); HUF_STEP(r1, i1); HUF_STEP(r2, i2); HUF_STEP(r3, i3);
        }
    }
    int ok = huf_finish(src, size, start[0], bytes[0], table, one, out, r0, i0, e0);
    ok &= huf_finish(src, size, start[1], bytes[1], table, one, out, r1, i1, e1);
    ok &= huf_finish(src, size, start[2], bytes[2], table, one, out, r2, i2, e2);
    ok &= huf_finish(src, size, start[3], bytes[3], table, one, out, r3, i3, e3);
    return ok;
}
#undef HUF_STEP

// The 2 top mantissa bits of value i.
static inline unsigned mant_bits(const uint8_t *mant, size_t i) {
    return (mant[(i >> 5) * 8 + (i & 7)] >> (2 * ((i >> 3) & 3))) & 3u;
}

// Rebuilds values [0, n) of one row: symbols `sy` (not overlapping `out`), the mantissa bits of value
// `first` on in `mant`, low bytes `lo`, the channels' (maxexp << 2) in `me` and (majority sign << 7) in
// `mj`. Returns the OR of the symbols (bit 6 set: a bit pattern that starts no code).
static unsigned lossless_row(uint16_t *restrict out, const uint8_t *restrict sy, const uint8_t *restrict mant,
                             size_t first, const uint8_t *restrict lo, const uint8_t *restrict me,
                             const uint8_t *restrict mj, size_t n) {
    unsigned seen = 0;
    for (size_t c = 0; c < n; c++) {
        unsigned v = sy[c];
        seen |= v;
        unsigned hi = ((me[c] - ((v << 1) & 0x7cu)) & 0x7cu) | (((v & 1u) << 7) ^ mj[c]) | mant_bits(mant, first + c);
        out[c] = (uint16_t)((hi << 8) | lo[c]);
    }
    return seen;
}

#if KVC_X86
#include <immintrin.h>
// The same for a row whose first value starts a group of 32 (its mantissa bits start a group): the
// high bytes of 32 values at a time in byte lanes, then interleaved with the low bytes. Returns
// KVC_HUF_BAD when a symbol has it.
__attribute__((target("avx2")))
static unsigned lossless_row_avx2(uint16_t *restrict out, const uint8_t *restrict sy, const uint8_t *restrict mant,
                                  size_t first, const uint8_t *restrict lo, const uint8_t *restrict me,
                                  const uint8_t *restrict mj, size_t n) {
    const __m256i k7c = _mm256_set1_epi8(0x7c), k80 = _mm256_set1_epi8((char)0x80), k3 = _mm256_set1_epi8(3);
    const __m256i shifts = _mm256_setr_epi64x(0, 2, 4, 6);  // values 8q .. 8q+7 at bits 2q of their bytes
    __m256i seen = _mm256_setzero_si256();
    size_t c = 0;
    for (; c + 32 <= n; c += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(sy + c));
        uint64_t m8;
        memcpy(&m8, mant + (first + c) / 32 * 8, 8);
        __m256i m = _mm256_and_si256(_mm256_srlv_epi64(_mm256_set1_epi64x((long long)m8), shifts), k3);
        seen = _mm256_or_si256(seen, v);
        __m256i e = _mm256_and_si256(_mm256_sub_epi8(_mm256_loadu_si256((const __m256i *)(me + c)),
                                                     _mm256_and_si256(_mm256_add_epi8(v, v), k7c)), k7c);
        // Bit 0 of every byte to bit 7 (a 16-bit shift by 7, then only bit 7 of each byte kept).
        __m256i s = _mm256_xor_si256(_mm256_and_si256(_mm256_slli_epi16(v, 7), k80),
                                     _mm256_loadu_si256((const __m256i *)(mj + c)));
        __m256i hi = _mm256_or_si256(_mm256_or_si256(e, s), m);
        __m256i l = _mm256_loadu_si256((const __m256i *)(lo + c));
        __m256i a = _mm256_unpacklo_epi8(l, hi), b = _mm256_unpackhi_epi8(l, hi);  // values 0-7|16-23, 8-15|24-31
        _mm256_storeu_si256((__m256i *)(out + c), _mm256_permute2x128_si256(a, b, 0x20));
        _mm256_storeu_si256((__m256i *)(out + c + 16), _mm256_permute2x128_si256(a, b, 0x31));
    }
    // Bit 6 of any byte (symbols have bit 7 clear): shifted to bit 7 of its byte, where movemask reads it.
    unsigned any = _mm256_movemask_epi8(_mm256_slli_epi16(seen, 1)) ? KVC_HUF_BAD : 0u;
    if (c < n) any |= lossless_row(out + c, sy + c, mant, first + c, lo + c, me + c, mj + c, n - c);
    return any;
}
#endif

static int lossless_decode_v2(const uint8_t *src, size_t size, const kvc_dims *d, uint16_t *dst);

// A plane's side bytes as the rebuild passes use them: maximum exponent << 2, majority sign << 7.
static void side_bases(const uint8_t *side, size_t C, uint8_t *me, uint8_t *mj) {
    for (size_t c = 0; c < C; c++) {
        me[c] = (uint8_t)((side[c] & 31u) << 2);
        mj[c] = (uint8_t)((side[c] & 32u) << 2);
    }
}


int kvc_lossless_decode_impl(int version, const uint8_t *src, size_t size, const kvc_dims *d, uint16_t *dst,
                             int allow_simd) {
    const int simd = kvc_use_avx2(allow_simd, 0);
    if (version == KVC_VERSION_EARLIER) return lossless_decode_v2(src, size, d, dst);
    const size_t C = d->channels, T = d->tokens, P = (size_t)d->layers * 2u, N = (size_t)d->count;
    const size_t side = P * C;
    if (size < side + 32 + 8 * KVC_HUF_STREAMS) return LMC_KV_ERR_TRUNCATED;
    for (size_t k = 0; k < side; k++)
        if (src[k] & 0xc0u) return LMC_KV_ERR_CORRUPT;
    uint8_t len[KVC_HUF_SYMBOLS];
    uint32_t code[KVC_HUF_SYMBOLS];
    for (int k = 0; k < KVC_HUF_SYMBOLS / 2; k++) {
        len[2 * k] = src[side + k] & 15u;
        len[2 * k + 1] = src[side + k] >> 4;
    }
    if (!huf_codes(len, code)) return LMC_KV_ERR_CORRUPT;
    size_t start[KVC_HUF_STREAMS], bytes[KVC_HUF_STREAMS];
    size_t at = side + 32 + 8 * KVC_HUF_STREAMS;
    for (int k = 0; k < KVC_HUF_STREAMS; k++) {
        uint64_t b = kvc_get64(src + side + 32 + 8 * k);
        if (b > size - at) return LMC_KV_ERR_TRUNCATED;
        start[k] = at;
        bytes[k] = (size_t)b;
        at += (size_t)b;
    }
    const size_t mbytes = mant_bytes(N);
    if (size - at < mbytes + N) return LMC_KV_ERR_TRUNCATED;
    if (size - at != mbytes + N) return LMC_KV_ERR_CORRUPT;
    const uint8_t *mant = src + at, *lo = mant + mbytes;
    uint32_t *table = malloc(KVC_HUF_TABLE * (sizeof(uint32_t) + sizeof(uint16_t)) + 3 * C);
    if (!table) return LMC_KV_ERR_NOMEM;
    uint16_t *one = (uint16_t *)(table + KVC_HUF_TABLE);
    huf_table(len, code, table, one);
    // Symbols are decoded into the upper half of dst (bytes N .. 2N) and consumed row by row: rebuilding
    // value i writes bytes 2i, 2i+1, always below the unread part (N + i ..).
    uint8_t *sym = (uint8_t *)dst + N;
    int ok = huf_decode4(src, size, start, bytes, table, one, sym, N);
    uint8_t *me = (uint8_t *)(one + KVC_HUF_TABLE), *mj = me + C;
    uint8_t *rowbuf = (uint8_t *)(mj + C);
    unsigned seen = 0;
    size_t i = 0;
    for (size_t p = 0; ok && p < P; p++) {
        side_bases(src + p * C, C, me, mj);
        for (size_t t = 0; t < T; t++, i += C) {
            // Only the last rows' values overlap their own symbols (2i + 2C > N + i): those are copied first.
            const uint8_t *sy = sym + i;
            if (i + 2 * C > N) sy = memcpy(rowbuf, sym + i, C);
#if KVC_X86
            if (simd && (i & 31u) == 0) {
                seen |= lossless_row_avx2(dst + i, sy, mant, i, lo + i, me, mj, C);
                continue;
            }
#endif
            seen |= lossless_row(dst + i, sy, mant, i, lo + i, me, mj, C);
        }
    }
    free(table);
    return ok && !(seen & KVC_HUF_BAD) ? 0 : LMC_KV_ERR_CORRUPT;
}

// --- Version 2 -----------------------------------------------------------------------------------------
// Body: side as above; u64 zstd frame size; one zstd frame holding the transformed high bytes
// h' = (maxexp - exponent) << 3 | (sign ^ majority sign) << 2 | top 2 mantissa bits; the low bytes raw.

static void lossless_row_v2(uint16_t *restrict out, const uint8_t *restrict h, const uint8_t *restrict lo,
                            const uint8_t *restrict me, const uint8_t *restrict mj, size_t C) {
    for (size_t c = 0; c < C; c++) {
        uint16_t v = h[c];
        uint16_t hi = (uint16_t)(((me[c] - ((v >> 1) & 0x7cu)) & 0x7cu) | (((v << 5) & 0x80u) ^ mj[c]) | (v & 3u));
        out[c] = (uint16_t)((hi << 8) | lo[c]);
    }
}

static int lossless_decode_v2(const uint8_t *src, size_t size, const kvc_dims *d, uint16_t *dst) {
    const size_t C = d->channels, T = d->tokens, P = (size_t)d->layers * 2u, N = (size_t)d->count;
    const size_t side = P * C;
    if (size < side + 8) return LMC_KV_ERR_TRUNCATED;
    uint64_t z = kvc_get64(src + side);
    if (z > size - side - 8 || size - side - 8 - z < N) return LMC_KV_ERR_TRUNCATED;
    if (size - side - 8 - z != N) return LMC_KV_ERR_CORRUPT;
    for (size_t k = 0; k < side; k++)
        if (src[k] & 0xc0u) return LMC_KV_ERR_CORRUPT;
    const uint8_t *zs = src + side + 8, *lo = zs + z;
    uint8_t *hb = (uint8_t *)dst + N;  // consumed row by row, as in version 3
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    if (!dc) return LMC_KV_ERR_NOMEM;
    size_t r = ZSTD_decompressDCtx(dc, hb, N, zs, (size_t)z);
    ZSTD_freeDCtx(dc);
    if (ZSTD_isError(r) || r != N) return LMC_KV_ERR_CORRUPT;
    uint8_t *me = malloc(C * 3);
    if (!me) return LMC_KV_ERR_NOMEM;
    uint8_t *mj = me + C, *rowbuf = mj + C;
    size_t i = 0;
    for (size_t p = 0; p < P; p++) {
        side_bases(src + p * C, C, me, mj);
        for (size_t t = 0; t < T; t++, i += C) {
            memcpy(rowbuf, hb + i, C);
            lossless_row_v2(dst + i, rowbuf, lo + i, me, mj, C);
        }
    }
    free(me);
    return 0;
}
