// Codec 3, cachegen-style lossy coding (after CacheGen, Liu et al., SIGCOMM'24; own design and code).
//
// Each value x of plane p = (layer, K/V) and channel c is quantized directly, q = round(x / step[p][c])
// (measured on Gemma 3 KV: coding tokens as deltas to an anchor token or to the previous token costs
// more bits than direct quantization, so there is no delta coding). The step is
//   step[p][c] = s(level, layer) * R_p^(1-beta) * rms[p][c]^beta
// (R_p the plane's RMS, rms the channel's RMS over the chunk's tokens, rounded to float16), i.e. between
// one step per plane (beta 0, least total squared error) and one step per channel relative to its scale
// (beta 1). Earlier layers of a chunk get smaller steps. Channels whose values sit around a nonzero
// mean (many K channels: 45-70% of a K plane's energy is in the channel means) store that mean as a
// whole number of steps o[c] = round(mean / step) and code q - o[c]: the same quantized values, fewer bits.
// q is zigzag-mapped to z and z to a symbol: z < 32 is its own symbol; larger z are coded as
// (bit length, 2 next bits) symbols + raw low bits (like deflate's length codes). Symbols are rANS coded
// (4 interleaved 32-bit states, 16-bit renormalization, 11-bit probabilities) with one frequency table
// per (plane, channel class); a channel's class (0..15) is the half-octave of its mean |q|.
//
// Body after the common header:
//   per plane p (layers*2, K before V within a layer):
//     u8 mode: bit 0 clear: one step for all channels (then u16 f16 step), set: per-channel steps (then
//         C x u16); bit 1 set: channel offsets follow, C x LEB128 of zigzag(o[c]), |o[c]| < 2^19; other
//         bits 0. A value decodes as f16((q + o[c]) * step[c]).
//     class nibbles: ceil(C/2) bytes (channel 2k in the low nibble)
//     u16 used-class bitmap, then per used class (ascending) a table: u8 n (symbols 0..n-1, n <= 100),
//         n LEB128 frequencies summing to 2048
//   u32 extra-bits stream size E, E bytes (LSB-first bit stream of the raw low bits, in value order)
//   u32 rANS stream size A, A bytes: 4 initial states (u32 LE) then 16-bit LE words in reading order
// The decoder checks every table, every size, all reads, and that the rANS states end where they began.
#include <stdlib.h>
#include "kvc_internal.h"

#define CG_PROB_BITS 11
#define CG_PROB_SCALE (1u << CG_PROB_BITS)
#define CG_NSYM 100
#define CG_NCLASS 16
#define CG_RANS_L (1u << 16)
#define CG_MAXZ ((1u << 21) - 1u)

typedef struct { float rel; float beta_k, beta_v; float early; } cg_preset;
// rel: step relative to the (plane/channel) RMS; early: step multiplier for the first third of layers.
#ifdef KVC_CG_LAB
cg_preset cg_presets[LMC_KV_CACHEGEN_LEVELS] = {  // tuning builds only
#else
static const cg_preset cg_presets[LMC_KV_CACHEGEN_LEVELS] = {
#endif
    {0.093f, 0.5f, 0.0f, 0.7071068f},  // ~3.1x on Gemma 3 270M, relRMSE ~1.9%
    {0.220f, 0.5f, 0.0f, 0.7071068f},  // ~4.0x, ~4.5%
    {0.390f, 0.5f, 0.0f, 0.7071068f},  // ~5.1x, ~8.0%
    {0.580f, 0.5f, 0.0f, 0.7071068f},  // ~6.2x, ~12%
};

size_t kvc_cg_bound(size_t count) {
    // worst case per value: 16-bit rANS word + 19 extra bits (< 5 bytes); side info < 4 KiB per channel-plane
    if (count > (SIZE_MAX - 65536) / 8) return 0;
    return LMC_KV_HEADER_SIZE + 8 * count + 65536;
}

static inline uint32_t cg_zigzag(int32_t q) { return q >= 0 ? (uint32_t)q << 1 : (((uint32_t)(-(q + 1))) << 1) | 1u; }
static inline int32_t cg_unzigzag(uint32_t z) { return (int32_t)(z >> 1) ^ -(int32_t)(z & 1u); }
static inline uint32_t cg_bitlen(uint32_t z) { return 32u - (uint32_t)__builtin_clz(z); }  // z > 0
// symbol of z and its number of extra bits
static inline uint32_t cg_sym(uint32_t z, uint32_t *nextra) {
    if (z < 32u) { *nextra = 0; return z; }
    uint32_t nb = cg_bitlen(z) - 1u;  // floor(log2 z) >= 5
    *nextra = nb - 2u;
    return 32u + (nb - 5u) * 4u + ((z >> (nb - 2u)) & 3u);
}

// ---- encoder ----

typedef struct { uint8_t *p, *end; int overflow; } cg_out;
static inline void cg_put(cg_out *o, const void *b, size_t n) {
    if ((size_t)(o->end - o->p) < n) { o->overflow = 1; return; }
    memcpy(o->p, b, n); o->p += n;
}
static inline void cg_put8(cg_out *o, uint8_t v) { cg_put(o, &v, 1); }
static inline void cg_put16(cg_out *o, uint16_t v) { uint8_t b[2]; kvc_put16(b, v); cg_put(o, b, 2); }

// Scales counts to frequencies summing to CG_PROB_SCALE, every used symbol >= 1. Returns n (1 + last used).
static uint32_t cg_normalize(const uint32_t *cnt, uint32_t *freq) {
    uint64_t total = 0; uint32_t n = 0;
    for (uint32_t s = 0; s < CG_NSYM; s++) { total += cnt[s]; if (cnt[s]) n = s + 1; }
    if (!total) { memset(freq, 0, CG_NSYM * sizeof(uint32_t)); return 0; }
    uint32_t sum = 0, best = 0;
    for (uint32_t s = 0; s < CG_NSYM; s++) {
        uint32_t f = 0;
        if (cnt[s]) { f = (uint32_t)(((uint64_t)cnt[s] * CG_PROB_SCALE + total / 2) / total); if (!f) f = 1; }
        freq[s] = f; sum += f;
        if (f > freq[best]) best = s;
    }
    while (sum > CG_PROB_SCALE) {  // take from the largest frequencies (> 1) first
        uint32_t b = 0;
        for (uint32_t s = 0; s < CG_NSYM; s++) if (freq[s] > freq[b]) b = s;
        uint32_t take = sum - CG_PROB_SCALE; if (take > freq[b] - 1) take = freq[b] - 1;
        freq[b] -= take; sum -= take;
    }
    freq[best] += CG_PROB_SCALE - sum;
    return n;
}

static inline void cg_leb(cg_out *o, uint32_t v) {
    while (v >= 128) { cg_put8(o, (uint8_t)(v | 128)); v >>= 7; }
    cg_put8(o, (uint8_t)v);
}

size_t kvc_cg_encode(int level, const uint16_t *src, const kvc_dims *d, uint8_t *dst, size_t cap) {
    kvc_cg_params pr;
    memset(&pr, 0, sizeof pr);
    pr.rel = cg_presets[level].rel; pr.beta_k = cg_presets[level].beta_k; pr.beta_v = cg_presets[level].beta_v;
    pr.early = cg_presets[level].early; pr.kmul = 1.0f; pr.vmul = 1.0f; pr.offsets = 1;
    for (int l = 0; l < KVC_CG_MAXLM; l++) pr.layer_mul[l] = 1.0f;
    return kvc_cg_encode_params(&pr, src, d, dst, cap);
}

size_t kvc_cg_encode_params(const kvc_cg_params *prp, const uint16_t *src, const kvc_dims *d, uint8_t *dst, size_t cap) {
    const kvc_cg_params pr = *prp;
    const size_t C = d->channels, T = d->tokens, L = d->layers, P = L * 2u, N = (size_t)d->count;
    uint8_t *syms = malloc(N);
    uint16_t *wbuf = malloc((N + 16) * sizeof(uint16_t));  // rANS words (<= 1 per symbol), written backwards
    uint64_t *ebuf = malloc((N * 19 + 63) / 64 * 8 + 16);
    double *acc = malloc(C * sizeof(double));
    float *stepf = malloc(C * sizeof(float));
    uint16_t *steph = malloc(C * sizeof(uint16_t));
    uint8_t *cls = malloc(P * C);
    uint32_t *cnt = malloc((size_t)CG_NCLASS * CG_NSYM * sizeof(uint32_t));
    uint32_t *tab = malloc(P * CG_NCLASS * CG_NSYM * sizeof(uint32_t));  // freq << 16 | start per symbol
    uint64_t *qsum = malloc(C * sizeof(uint64_t));
    int32_t *off = malloc(C * sizeof(int32_t));
    double *msum = malloc(C * sizeof(double));
    size_t result = 0;
    if (!syms || !wbuf || !ebuf || !acc || !stepf || !steph || !cls || !cnt || !tab || !qsum || !off || !msum) goto done;
    cg_out o = {dst, dst + cap, 0};
    size_t enb = 0;  // extra bits: ebuf words, bit count
    memset(ebuf, 0, (N * 19 + 63) / 64 * 8 + 16);
    for (size_t p = 0; p < P; p++) {
        const uint16_t *x = src + p * T * C;
        const size_t layer = p / 2;
        // channel and plane RMS (double, fixed order)
        for (size_t c = 0; c < C; c++) { acc[c] = 0.0; msum[c] = 0.0; }
        for (size_t t = 0; t < T; t++)
            for (size_t c = 0; c < C; c++) { double v = kvc_f16_to_f32_finite(x[t * C + c]); acc[c] += v * v; msum[c] += v; }
        double tot = 0.0;
        for (size_t c = 0; c < C; c++) tot += acc[c];
        double R = __builtin_sqrt(tot / (double)(T * C));
        double s = pr.rel;
        if (3 * layer < L) s *= pr.early;
        s *= (p & 1u) ? pr.vmul : pr.kmul;
        if (layer < KVC_CG_MAXLM) s *= pr.layer_mul[layer];
        const float beta = (p & 1u) ? pr.beta_v : pr.beta_k;
        int uniform = beta == 0.0f;
        for (size_t c = 0; c < C; c++) {
            // beta is 0, 0.5 or 1: only sqrt (correctly rounded everywhere), no pow
            double rc = __builtin_sqrt(acc[c] / (double)T), st;
            if (beta == 0.0f) st = s * R;
            else if (beta == 1.0f) st = s * rc;
            else if (beta == 0.5f) st = s * __builtin_sqrt(R * rc);
            else st = s * __builtin_pow(R, 1.0 - beta) * __builtin_pow(rc, beta);  // tuning only
            uint16_t h = kvc_f32_to_f16((float)st);
            if ((h & 0x7c00u) == 0x7c00u) h = 0x7bffu;  // huge: largest finite
            if (h == 0) h = 0x0001u;                      // all-zero channel (or tiny): smallest step
            steph[c] = h; stepf[c] = kvc_f16_to_f32(h);
            // channel offset: the mean in whole steps (round half away, |o| < 2^19)
            double m = msum[c] / (double)T / (double)stepf[c];
            m = m > 524287.0 ? 524287.0 : (m < -524287.0 ? -524287.0 : m);
            int32_t oi = (int32_t)m; double fr = m - (double)oi;
            oi += (fr >= 0.5) - (fr <= -0.5);
            off[c] = pr.offsets ? oi : 0;
        }
        int has_off = 0;
        for (size_t c = 0; c < C; c++) has_off |= off[c] != 0;
        // quantize, zigzag, classes
        for (size_t c = 0; c < C; c++) qsum[c] = 0;
        uint8_t *sp = syms + p * T * C;
        for (size_t t = 0; t < T; t++)
            for (size_t c = 0; c < C; c++) {
                float v = kvc_f16_to_f32_finite(x[t * C + c]) / stepf[c];
                const float lim = 524287.0f;  // |q| < 2^19, |q - o| < 2^20: z < 2^21
                v = v > lim ? lim : (v < -lim ? -lim : v);
                int32_t q = (int32_t)v; float fr = v - (float)q;
                q += (fr >= 0.5f) - (fr <= -0.5f);
                q -= off[c];
                uint32_t z = cg_zigzag(q);
                qsum[c] += (uint32_t)(q < 0 ? -q : q);
                uint32_t ne, sy = cg_sym(z, &ne);
                sp[t * C + c] = (uint8_t)sy;
                if (ne) {  // append ne low bits of z
                    uint64_t bits = z & ((1u << ne) - 1u);
                    ebuf[enb >> 6] |= bits << (enb & 63);
                    if ((enb & 63) + ne > 64) ebuf[(enb >> 6) + 1] |= bits >> (64 - (enb & 63));
                    enb += ne;
                }
            }
        uint8_t *cp = cls + p * C;
        for (size_t c = 0; c < C; c++) {
            uint64_t a64 = (qsum[c] * 4u) / T;  // mean |q| in quarters -> half-octave class
            uint32_t a = (uint32_t)(a64 > 0xffffffu ? 0xffffffu : a64), k = 0;
            if (a) { uint32_t nb = cg_bitlen(a); k = 2u * nb - 1u + (nb >= 2u ? (a >> (nb - 2u)) & 1u : 0u); }
            cp[c] = (uint8_t)(k > CG_NCLASS - 1 ? CG_NCLASS - 1 : k);
        }
        // histograms per class, tables
        memset(cnt, 0, (size_t)CG_NCLASS * CG_NSYM * sizeof(uint32_t));
        for (size_t t = 0; t < T; t++)
            for (size_t c = 0; c < C; c++) cnt[cp[c] * CG_NSYM + sp[t * C + c]]++;
        for (size_t c = 1; c < C && uniform; c++) if (steph[c] != steph[0]) uniform = 0;
        cg_put8(&o, (uint8_t)((uniform ? 0 : 1) | (has_off ? 2 : 0)));
        if (uniform) cg_put16(&o, steph[0]);
        else for (size_t c = 0; c < C; c++) cg_put16(&o, steph[c]);
        if (has_off) for (size_t c = 0; c < C; c++) cg_leb(&o, cg_zigzag(off[c]));
        for (size_t c = 0; c < C; c += 2) cg_put8(&o, (uint8_t)(cp[c] | (c + 1 < C ? cp[c + 1] << 4 : 0)));
        uint16_t used = 0;
        for (uint32_t k = 0; k < CG_NCLASS; k++)
            for (uint32_t s2 = 0; s2 < CG_NSYM; s2++) if (cnt[k * CG_NSYM + s2]) { used |= (uint16_t)(1u << k); break; }
        cg_put16(&o, used);
        for (uint32_t k = 0; k < CG_NCLASS; k++) {
            if (!(used & (1u << k))) continue;
            uint32_t freq[CG_NSYM];
            uint32_t n = cg_normalize(cnt + k * CG_NSYM, freq);
            cg_put8(&o, (uint8_t)n);
            uint32_t start = 0;
            for (uint32_t s2 = 0; s2 < n; s2++) cg_leb(&o, freq[s2]);
            uint32_t *tb = tab + (p * CG_NCLASS + k) * CG_NSYM;
            for (uint32_t s2 = 0; s2 < CG_NSYM; s2++) { tb[s2] = (freq[s2] << 16) | start; start += freq[s2]; }
        }
    }
    // extra bits
    size_t ebytes = (enb + 7) / 8;
    uint8_t hdr[4]; kvc_put32(hdr, (uint32_t)ebytes);
    if (ebytes > 0xffffffffu) goto done;
    cg_put(&o, hdr, 4);
    if (!o.overflow && (size_t)(o.end - o.p) >= ebytes) {
        for (size_t i = 0; i < ebytes; i++) o.p[i] = (uint8_t)(ebuf[i >> 3] >> ((i & 7) * 8));
        o.p += ebytes;
    } else o.overflow = 1;
    // rANS, encoded backwards
    {
        uint32_t st[4] = {CG_RANS_L, CG_RANS_L, CG_RANS_L, CG_RANS_L};
        uint16_t *w = wbuf + N + 16;
        size_t i = N;
        for (size_t p = P; p-- > 0;) {
            const uint8_t *cp = cls + p * C;
            const uint32_t *tb0 = tab + p * CG_NCLASS * CG_NSYM;
            for (size_t t = T; t-- > 0;)
                for (size_t c = C; c-- > 0;) {
                    i--;
                    uint32_t e = tb0[cp[c] * CG_NSYM + syms[i]];
                    uint32_t f = e >> 16, start = e & 0xffffu;
                    uint32_t x = st[i & 3];
                    uint64_t xmax = (uint64_t)((CG_RANS_L >> CG_PROB_BITS) << 16) * f;
                    if (x >= xmax) { *--w = (uint16_t)x; x >>= 16; }
                    st[i & 3] = ((x / f) << CG_PROB_BITS) + (x % f) + start;
                }
        }
        size_t nw = (size_t)(wbuf + N + 16 - w);
        size_t abytes = 16 + 2 * nw;
        if (abytes > 0xffffffffu) goto done;
        kvc_put32(hdr, (uint32_t)abytes); cg_put(&o, hdr, 4);
        for (int k = 0; k < 4; k++) { kvc_put32(hdr, st[k]); cg_put(&o, hdr, 4); }
        if (!o.overflow && (size_t)(o.end - o.p) >= 2 * nw) {
            for (size_t k = 0; k < nw; k++) kvc_put16(o.p + 2 * k, w[k]);
            o.p += 2 * nw;
        } else o.overflow = 1;
    }
    if (!o.overflow) result = (size_t)(o.p - dst);
done:
    free(syms); free(wbuf); free(ebuf); free(acc); free(stepf); free(steph); free(cls); free(cnt); free(tab); free(qsum); free(off); free(msum);
    return result;
}

// ---- decoder ----

typedef struct {
    const uint8_t *steps;  // f16 steps (1 or C of them)
    const uint8_t *offs;   // LEB128 offsets (NULL: none)
    int mode;
    uint16_t used;
    uint16_t freq[CG_NCLASS][CG_NSYM];
} cg_plane;

// Extra-bit reader: LSB-first. Bits of bb above bn may hold (the same) bits of bytes not yet consumed.
typedef struct { uint64_t bb; uint32_t bn; const uint8_t *ep, *eend; } cg_bits;

// z of an escape symbol (>= 32): its top bits from the symbol, its low bits from the extra-bit stream.
static inline uint32_t cg_extra(uint32_t sym, cg_bits *br, int *bad) {
    uint32_t nb = 5u + ((sym - 32u) >> 2), ne = nb - 2u;
    if (br->eend - br->ep >= 8) {  // word refill: bn becomes 56..63
        br->bb |= kvc_get64(br->ep) << br->bn;
        br->ep += (63u - br->bn) >> 3;
        br->bn |= 56u;
    } else
        while (br->bn <= 56 && br->ep < br->eend) { br->bb |= (uint64_t)*br->ep++ << br->bn; br->bn += 8; }
    if (br->bn < ne) { *bad = 1; return 0; }
    uint32_t z = ((4u | ((sym - 32u) & 3u)) << ne) | (uint32_t)(br->bb & ((1u << ne) - 1u));
    br->bb >>= ne; br->bn -= ne;
    return z;
}

// symbols of one row -> f16 values (escapes resolved in value order)
static int cg_row_scalar(uint16_t *restrict out, const uint8_t *restrict sy, const int32_t *restrict off,
                         const float *restrict step, size_t C, cg_bits *br) {
    int bad = 0;
    cg_bits b = *br;
    for (size_t c = 0; c < C; c++) {
        uint32_t z = sy[c];
        if (z >= 32u) z = cg_extra(z, &b, &bad);
        out[c] = kvc_f32_to_f16((float)(cg_unzigzag(z) + off[c]) * step[c]);
    }
    *br = b;
    return bad;
}

#if KVC_X86
#include <immintrin.h>
__attribute__((target("avx2,f16c")))
static int cg_row_avx2(uint16_t *restrict out, const uint8_t *restrict sy, const int32_t *restrict off,
                       const float *restrict step, size_t C, cg_bits *br) {
    int bad = 0;
    cg_bits b = *br;
    size_t c = 0;
    const __m256i one = _mm256_set1_epi32(1);
    for (; c + 8 <= C; c += 8) {
        uint64_t w8;
        memcpy(&w8, sy + c, 8);
        __m256i z;
        if (!(w8 & 0xe0e0e0e0e0e0e0e0ull)) z = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)w8));
        else {
            uint32_t zz[8];
            for (int k = 0; k < 8; k++) { uint32_t v = sy[c + k]; zz[k] = v >= 32u ? cg_extra(v, &b, &bad) : v; }
            z = _mm256_loadu_si256((const __m256i *)zz);
        }
        __m256i qi = _mm256_xor_si256(_mm256_srli_epi32(z, 1), _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_and_si256(z, one)));
        qi = _mm256_add_epi32(qi, _mm256_loadu_si256((const __m256i *)(off + c)));
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(qi), _mm256_loadu_ps(step + c));
        _mm_storeu_si128((__m128i *)(out + c), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; c < C; c++) {
        uint32_t z = sy[c];
        if (z >= 32u) z = cg_extra(z, &b, &bad);
        out[c] = kvc_f32_to_f16((float)(cg_unzigzag(z) + off[c]) * step[c]);
    }
    *br = b;
    return bad;
}
#endif


int kvc_cg_decode_impl(const uint8_t *src, size_t size, const kvc_dims *d, uint16_t *dst, int allow_simd) {
    const size_t C = d->channels, T = d->tokens, P = (size_t)d->layers * 2u;
    const int simd = kvc_use_avx2(allow_simd, 1);
    // Cheap plausibility before allocating: every plane needs >= 1 + 2 + C/2 + 2 bytes.
    if (size / P < 5 + (C + 1) / 2) return LMC_KV_ERR_TRUNCATED;
    int rc = 0;
    cg_plane *pl = malloc(P * sizeof(cg_plane));
    uint8_t *cls = malloc(P * C);
    uint32_t *tabs = malloc((size_t)CG_NCLASS * CG_PROB_SCALE * sizeof(uint32_t));
    uint8_t *rowq = malloc(C + 8);
    float *stepf = malloc(C * sizeof(float));
    int32_t *offc = malloc(C * sizeof(int32_t));
    if (!pl || !cls || !tabs || !rowq || !stepf || !offc) { rc = LMC_KV_ERR_NOMEM; goto done; }
    const uint8_t *r = src, *end = src + size;
#define NEED(n) do { if ((size_t)(end - r) < (size_t)(n)) { rc = LMC_KV_ERR_TRUNCATED; goto done; } } while (0)
    for (size_t p = 0; p < P; p++) {
        cg_plane *q = &pl[p];
        NEED(1);
        q->mode = *r++;
        if (q->mode > 3) { rc = LMC_KV_ERR_CORRUPT; goto done; }
        size_t ns = (q->mode & 1) ? C : 1;
        NEED(2 * ns);
        q->steps = r; r += 2 * ns;
        q->offs = NULL;
        if (q->mode & 2) {  // validate the offsets now, read them again per plane below
            q->offs = r;
            for (size_t c = 0; c < C; c++) {
                uint32_t v = 0;
                for (int k = 0;; k++) {
                    NEED(1);
                    uint32_t b = *r++;
                    v |= (b & 127u) << (7 * k);
                    if (!(b & 128u)) { if (k && !b) { rc = LMC_KV_ERR_CORRUPT; goto done; } break; }
                    if (k == 2) { rc = LMC_KV_ERR_CORRUPT; goto done; }  // <= 3 bytes: < 2^21
                }
                if (v >= (1u << 20)) { rc = LMC_KV_ERR_CORRUPT; goto done; }
            }
        }
        NEED((C + 1) / 2 + 2);
        for (size_t c = 0; c < C; c++) cls[p * C + c] = (uint8_t)((r[c >> 1] >> ((c & 1) * 4)) & 15u);
        r += (C + 1) / 2;
        q->used = kvc_get16(r); r += 2;
        for (size_t c = 0; c < C; c++)
            if (!(q->used & (1u << cls[p * C + c]))) { rc = LMC_KV_ERR_CORRUPT; goto done; }
        for (uint32_t k = 0; k < CG_NCLASS; k++) {
            if (!(q->used & (1u << k))) continue;
            NEED(1);
            uint32_t n = *r++, sum = 0;
            if (n == 0 || n > CG_NSYM) { rc = LMC_KV_ERR_CORRUPT; goto done; }
            for (uint32_t s2 = 0; s2 < CG_NSYM; s2++) {
                uint32_t f = 0;
                if (s2 < n) {
                    NEED(1);
                    f = *r++;
                    if (f & 128u) { NEED(1); uint32_t b = *r++; if (b == 0 || b > 16) { rc = LMC_KV_ERR_CORRUPT; goto done; } f = (f & 127u) | (b << 7); }
                }
                if (f > CG_PROB_SCALE) { rc = LMC_KV_ERR_CORRUPT; goto done; }
                q->freq[k][s2] = (uint16_t)f; sum += f;
            }
            if (sum != CG_PROB_SCALE) { rc = LMC_KV_ERR_CORRUPT; goto done; }
        }
    }
    NEED(4);
    uint32_t eb = kvc_get32(r); r += 4;
    NEED(eb);
    const uint8_t *ep = r, *eend = r + eb; r += eb;
    NEED(4);
    uint32_t ab = kvc_get32(r); r += 4;
    if ((size_t)(end - r) != ab) { rc = (size_t)(end - r) < ab ? LMC_KV_ERR_TRUNCATED : LMC_KV_ERR_CORRUPT; goto done; }
    if (ab < 16 || (ab & 1u)) { rc = LMC_KV_ERR_CORRUPT; goto done; }
    uint32_t st[4];
    for (int k = 0; k < 4; k++) {
        st[k] = kvc_get32(r + 4 * k);
        if (st[k] < CG_RANS_L) { rc = LMC_KV_ERR_CORRUPT; goto done; }
    }
    const uint8_t *wp = r + 16, *wend = end;
    cg_bits br = {0, 0, ep, eend};  // extra-bit reader
    int bad = 0;
    size_t i = 0;
    for (size_t p = 0; p < P && !bad; p++) {
        const cg_plane *q = &pl[p];
        const uint8_t *cp = cls + p * C;
        for (uint32_t k = 0; k < CG_NCLASS; k++) {
            if (!(q->used & (1u << k))) continue;
            uint32_t *tb = tabs + (size_t)k * CG_PROB_SCALE, start = 0;
            for (uint32_t s2 = 0; s2 < CG_NSYM; s2++) {
                uint32_t f = q->freq[k][s2];
                for (uint32_t j = 0; j < f; j++) tb[start + j] = s2 | (f << 7) | (j << 19);
                start += f;
            }
        }
        for (size_t c = 0; c < C; c++) stepf[c] = kvc_f16_to_f32(kvc_get16(q->steps + ((q->mode & 1) ? 2 * c : 0)));
        {   // offsets (validated above: <= 3 bytes each, zigzag value < 2^20)
            const uint8_t *op = q->offs;
            for (size_t c = 0; c < C; c++) {
                uint32_t v = 0;
                if (op) for (int k = 0;; k++) { uint32_t b = *op++; v |= (b & 127u) << (7 * k); if (!(b & 128u)) break; }
                offc[c] = cg_unzigzag(v);
            }
        }
        for (size_t t = 0; t < T && !bad; t++) {
            if ((C & 3u) == 0) {  // i & 3 == c & 3: four states in registers
                uint32_t x0 = st[0], x1 = st[1], x2 = st[2], x3 = st[3];
                static const uint8_t zero2[2] = {0, 0};
#define CG_DEC(X, CC, SAFE)                                                                             \
    do {                                                                                                \
        uint32_t e_ = tabs[(size_t)cp[CC] * CG_PROB_SCALE + (X & (CG_PROB_SCALE - 1u))];               \
        uint32_t s_ = e_ & 127u;                                                                        \
        X = ((e_ >> 7) & 0xfffu) * (X >> CG_PROB_BITS) + (e_ >> 19);                                    \
        {   /* branchless renormalization (the branch would be unpredictable) */                        \
            uint32_t need_ = X < CG_RANS_L;                                                             \
            if (SAFE) {  /* >= 2 bytes left for sure: no bounds check on the serial wp chain */         \
                uint32_t w_ = kvc_get16(wp);                                                            \
                X = need_ ? (X << 16) | w_ : X;                                                         \
                wp += 2u * need_;                                                                       \
            } else {                                                                                    \
                uint32_t ok_ = wend - wp >= 2;                                                          \
                const uint8_t *rp_ = ok_ ? wp : zero2;                                                  \
                uint32_t w_ = kvc_get16(rp_);                                                           \
                X = need_ ? (X << 16) | w_ : X;                                                         \
                wp += 2u * (need_ & ok_);                                                               \
                bad |= (int)(need_ & !ok_);                                                             \
            }                                                                                           \
        }                                                                                               \
        rowq[CC] = (uint8_t)s_;                                                                         \
    } while (0)
                // a symbol takes at most one 16-bit word: with 2C bytes left the row cannot run out
                if ((size_t)(wend - wp) >= 2 * C) {
                    for (size_t c = 0; c < C; c += 4) {
                        CG_DEC(x0, c, 1); CG_DEC(x1, c + 1, 1); CG_DEC(x2, c + 2, 1); CG_DEC(x3, c + 3, 1);
                    }
                } else {
                    for (size_t c = 0; c < C; c += 4) {
                        CG_DEC(x0, c, 0); CG_DEC(x1, c + 1, 0); CG_DEC(x2, c + 2, 0); CG_DEC(x3, c + 3, 0);
                    }
                }
#undef CG_DEC
                st[0] = x0; st[1] = x1; st[2] = x2; st[3] = x3;
                i += C;
            } else
            for (size_t c = 0; c < C; c++, i++) {
                uint32_t x = st[i & 3];
                uint32_t e = tabs[(size_t)cp[c] * CG_PROB_SCALE + (x & (CG_PROB_SCALE - 1u))];
                uint32_t sym = e & 127u;
                x = ((e >> 7) & 0xfffu) * (x >> CG_PROB_BITS) + (e >> 19);
                if (x < CG_RANS_L) {
                    if (wend - wp < 2) { bad = 1; break; }
                    x = (x << 16) | kvc_get16(wp); wp += 2;
                }
                st[i & 3] = x;
                rowq[c] = (uint8_t)sym;
            }
            if (bad) break;
            uint16_t *out = dst + (p * T + t) * C;
#if KVC_X86
            if (simd) { bad |= cg_row_avx2(out, rowq, offc, stepf, C, &br); continue; }
#endif
            bad |= cg_row_scalar(out, rowq, offc, stepf, C, &br);
        }
    }
    if (bad) { rc = LMC_KV_ERR_CORRUPT; goto done; }
    // everything consumed, states back at their start, padding bits zero (read the rest as the byte-wise
    // reader would have: whole bytes while at most 56 bits are buffered)
    while (br.bn <= 56 && br.ep < br.eend) { br.bb |= (uint64_t)*br.ep++ << br.bn; br.bn += 8; }
    if (wp != wend || br.ep != br.eend || br.bn >= 8 || br.bb != 0) { rc = LMC_KV_ERR_CORRUPT; goto done; }
    for (int k = 0; k < 4; k++) if (st[k] != CG_RANS_L) { rc = LMC_KV_ERR_CORRUPT; goto done; }
#undef NEED
done:
    free(pl); free(cls); free(tabs); free(rowq); free(stepf); free(offc);
    return rc;
}
