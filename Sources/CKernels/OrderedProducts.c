// Products in a fixed summation order: llama.cpp's CPU order.
//
// Float sums depend on their order. When two tokens are nearly tied, an engine that adds the same
// terms in another order can pick the other one. These kernels add in the order llama.cpp's CPU
// backend uses on x86 (AVX2), so that with the same inputs every product is bit-identical to its own,
// and an engine built on them picks what llama.cpp picks. The integer parts of the quantized products
// are exact whatever their order; only the float steps are pinned here:
//
// - 32-value block formats (Q8_0, Q5_0) and half-precision attention operands: eight float lanes per
//   output. For a 32-value block, lane L holds the integer sum of the products of bytes 4L…4L+3, and
//   each block adds (weight scale · activation scale) · lane with one fused multiply-add, blocks in
//   order. For attention, lane L adds the products at indices ≡ L (mod 8), in order. The lanes are
//   then summed as ((L0+L4) + (L2+L6)) + ((L1+L5) + (L3+L7)).
//
// - One token (a decode step) of float operands (attention, F16/F32 weights): llama.cpp's row dot
//   instead, four accumulators of eight lanes over each 32 values (value i in slot i mod 32), summed
//   as ((A0+A2) + (A1+A3)) lane by lane, then (l0+l4) + (l1+l5) and (l2+l6) + (l3+l7) added in that
//   order; values past the last multiple of 32 are added after, one product at a time (in double
//   for F16 operands). Its quantized row dots add as the batched kernels above.
//
// The portable versions compute the same values with fmaf.

#include "CKernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define LMC_X86 1
#include <immintrin.h>
#define LMC_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

static inline float lanes_sum(const float l[8]) {
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

static inline uint16_t u16_at(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

// MARK: - 32-value blocks

// The 32 weights of block `b` of a Q8_0 or Q5_0 row, as signed integers.
static inline void block_values(int32_t t, const uint8_t *row, int64_t b, int8_t out[32], float *scale) {
    if (t == 8) {
        const uint8_t *blk = row + b * 34;
        *scale = lmc_f16_to_f32(u16_at(blk));
        memcpy(out, blk + 2, 32);
    } else {
        const uint8_t *blk = row + b * 22;
        *scale = lmc_f16_to_f32(u16_at(blk));
        uint32_t qh;
        memcpy(&qh, blk + 2, 4);
        const uint8_t *q = blk + 6;
        for (int i = 0; i < 16; i++) {
            out[i] = (int8_t)(((q[i] & 0x0f) | (((qh >> i) & 1) << 4)) - 16);
            out[i + 16] = (int8_t)(((q[i] >> 4) | (((qh >> (i + 16)) & 1) << 4)) - 16);
        }
    }
}

static float dot32_portable(int32_t t, const uint8_t *row, int64_t nb, const int8_t *qs, const float *d) {
    float lanes[8] = {0};
    int8_t w[32];
    for (int64_t b = 0; b < nb; b++) {
        float ws;
        block_values(t, row, b, w, &ws);
        const float scale = ws * d[b];
        const int8_t *x = qs + b * 32;
        for (int l = 0; l < 8; l++) {
            int s = 0;
            for (int k = 0; k < 4; k++) s += w[4 * l + k] * x[4 * l + k];
            lanes[l] = fmaf((float)s, scale, lanes[l]);
        }
    }
    return lanes_sum(lanes);
}

#ifdef LMC_X86
LMC_AVX2 static inline float lanes_sum_avx2(__m256 v) {
    __m128 x = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

// Lane k: the products of bytes 4k…4k+3, as floats.
LMC_AVX2 static inline __m256 lanes_i8_avx2(__m256i w, __m256i x) {
    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

LMC_AVX2 static inline __m256i q5_0_avx2(const uint8_t *blk) {
    uint32_t bits;
    memcpy(&bits, blk + 2, 4);
    __m256i v = _mm256_set1_epi32((int)bits);
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i pick = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i high = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, spread), pick), pick);
    __m128i q = _mm_loadu_si128((const __m128i *)(blk + 6));
    __m128i m = _mm_set1_epi8(0x0f);
    __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
    // nibble − 16 where the high bit is clear, nibble where it is set.
    return _mm256_or_si256(nib, _mm256_andnot_si256(high, _mm256_set1_epi8((char)0xF0)));
}

LMC_AVX2 static float dot32_avx2(int32_t t, const uint8_t *row, int64_t nb, const int8_t *qs, const float *d) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256i w;
        const uint8_t *blk;
        if (t == 8) {
            blk = row + b * 34;
            w = _mm256_loadu_si256((const __m256i *)(blk + 2));
        } else {
            blk = row + b * 22;
            w = q5_0_avx2(blk);
        }
        const float scale = _mm256_cvtss_f32(_mm256_cvtph_ps(_mm_set1_epi16((short)u16_at(blk)))) * d[b];
        __m256i x = _mm256_loadu_si256((const __m256i *)(qs + b * 32));
        acc = _mm256_fmadd_ps(lanes_i8_avx2(w, x), _mm256_set1_ps(scale), acc);
    }
    return lanes_sum_avx2(acc);
}
#endif

static float dot32(int32_t t, const uint8_t *row, int64_t nb, const int8_t *qs, const float *d) {
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) return dot32_avx2(t, row, nb, qs, d);
#endif
    return dot32_portable(t, row, nb, qs, d);
}

// A row unpacked once for many tokens: its weights as signed bytes and its block scales as floats;
// each token's dot then adds exactly as dot32 does.
static void unpack32(int32_t t, const uint8_t *row, int64_t nb, int8_t *w, float *ws) {
    for (int64_t b = 0; b < nb; b++) block_values(t, row, b, w + 32 * b, &ws[b]);
}

static void dots32_unpacked_portable(const int8_t *w, const float *ws, int64_t nb, int64_t n, int64_t tokens,
                                     const int8_t *qs, const float *d, float *y, int64_t ldy) {
    for (int64_t j = 0; j < tokens; j++) {
        float lanes[8] = {0};
        const int8_t *xj = qs + j * n;
        const float *dj = d + j * nb;
        for (int64_t b = 0; b < nb; b++) {
            const float scale = ws[b] * dj[b];
            for (int l = 0; l < 8; l++) {
                int s = 0;
                for (int k = 0; k < 4; k++) s += w[32 * b + 4 * l + k] * xj[32 * b + 4 * l + k];
                lanes[l] = fmaf((float)s, scale, lanes[l]);
            }
        }
        y[j * ldy] = lanes_sum(lanes);
    }
}

#ifdef LMC_X86
// Four tokens at a time share each weight load; each token keeps its own accumulator.
LMC_AVX2 static void dots32_unpacked_avx2(const int8_t *w, const float *ws, int64_t nb, int64_t n, int64_t tokens,
                                          const int8_t *qs, const float *d, float *y, int64_t ldy) {
    int64_t j = 0;
    for (; j + 4 <= tokens; j += 4) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const int8_t *x0 = qs + j * n, *x1 = x0 + n, *x2 = x1 + n, *x3 = x2 + n;
        const float *d0 = d + j * nb, *d1 = d0 + nb, *d2 = d1 + nb, *d3 = d2 + nb;
        for (int64_t b = 0; b < nb; b++) {
            const __m256i wb = _mm256_loadu_si256((const __m256i *)(w + 32 * b));
            a0 = _mm256_fmadd_ps(lanes_i8_avx2(wb, _mm256_loadu_si256((const __m256i *)(x0 + 32 * b))), _mm256_set1_ps(ws[b] * d0[b]), a0);
            a1 = _mm256_fmadd_ps(lanes_i8_avx2(wb, _mm256_loadu_si256((const __m256i *)(x1 + 32 * b))), _mm256_set1_ps(ws[b] * d1[b]), a1);
            a2 = _mm256_fmadd_ps(lanes_i8_avx2(wb, _mm256_loadu_si256((const __m256i *)(x2 + 32 * b))), _mm256_set1_ps(ws[b] * d2[b]), a2);
            a3 = _mm256_fmadd_ps(lanes_i8_avx2(wb, _mm256_loadu_si256((const __m256i *)(x3 + 32 * b))), _mm256_set1_ps(ws[b] * d3[b]), a3);
        }
        y[j * ldy] = lanes_sum_avx2(a0);
        y[(j + 1) * ldy] = lanes_sum_avx2(a1);
        y[(j + 2) * ldy] = lanes_sum_avx2(a2);
        y[(j + 3) * ldy] = lanes_sum_avx2(a3);
    }
    for (; j < tokens; j++) {
        __m256 a = _mm256_setzero_ps();
        const int8_t *x = qs + j * n;
        const float *dj = d + j * nb;
        for (int64_t b = 0; b < nb; b++) {
            const __m256i wb = _mm256_loadu_si256((const __m256i *)(w + 32 * b));
            a = _mm256_fmadd_ps(lanes_i8_avx2(wb, _mm256_loadu_si256((const __m256i *)(x + 32 * b))), _mm256_set1_ps(ws[b] * dj[b]), a);
        }
        y[j * ldy] = lanes_sum_avx2(a);
    }
}
#endif

// MARK: - Attention and float weights (half-precision operands held in floats)

// The 32 slots of a one-token dot summed in llama.cpp's order.
static inline float slots32_sum(const float *s, int64_t stride) {
    float l[8];
    for (int k = 0; k < 8; k++) l[k] = (s[k * stride] + s[(16 + k) * stride]) + (s[(8 + k) * stride] + s[(24 + k) * stride]);
    return ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
}

// The one-token dot's values past the last multiple of 32 (`whole`), one product at a time.
static inline float add_tail(float r, const float *k, const float *q, int64_t whole, int64_t n, int tail_double) {
    if (whole == n) return r;
    if (tail_double) {
        double sd = r;
        for (int64_t i = whole; i < n; i++) sd += (double)(k[i] * q[i]);
        return (float)sd;
    }
    for (int64_t i = whole; i < n; i++) {
        const float product = k[i] * q[i];
        r += product;
    }
    return r;
}

// One-token dot: 32 slots over the whole multiples of 32, then the rest one product at a time.
static float dot_one_token_portable(const float *k, const float *q, int64_t n, int tail_double) {
    float slots[32] = {0};
    const int64_t whole = n & ~(int64_t)31;
    for (int64_t i = 0; i < whole; i++) slots[i & 31] = fmaf(k[i], q[i], slots[i & 31]);
    float r = slots32_sum(slots, 1);
    return add_tail(r, k, q, whole, n, tail_double);
}

#ifdef LMC_X86
LMC_AVX2 static float dot_one_token_avx2(const float *k, const float *q, int64_t n, int tail_double) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const int64_t whole = n & ~(int64_t)31;
    for (int64_t i = 0; i < whole; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(k + i), _mm256_loadu_ps(q + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(k + i + 8), _mm256_loadu_ps(q + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(k + i + 16), _mm256_loadu_ps(q + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(k + i + 24), _mm256_loadu_ps(q + i + 24), a3);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3));
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    t = _mm_hadd_ps(t, t);
    t = _mm_hadd_ps(t, t);
    float r = _mm_cvtss_f32(t);
    return add_tail(r, k, q, whole, n, tail_double);
}

LMC_AVX2 static void scores_avx2(const float *q, const float *k, int64_t ldk, int64_t n, int64_t hd, float scale,
                                 float *s) {
    int64_t c = 0;
    // Four keys at a time: independent chains hide the fused multiply-add latency.
    for (; c + 4 <= n; c += 4) {
        const float *k0 = k + c * ldk, *k1 = k0 + ldk, *k2 = k1 + ldk, *k3 = k2 + ldk;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t i = 0; i < hd; i += 8) {
            __m256 x = _mm256_loadu_ps(q + i);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(k0 + i), x, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(k1 + i), x, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(k2 + i), x, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(k3 + i), x, a3);
        }
        s[c] = scale * lanes_sum_avx2(a0);
        s[c + 1] = scale * lanes_sum_avx2(a1);
        s[c + 2] = scale * lanes_sum_avx2(a2);
        s[c + 3] = scale * lanes_sum_avx2(a3);
    }
    for (; c < n; c++) {
        const float *kc = k + c * ldk;
        __m256 a = _mm256_setzero_ps();
        for (int64_t i = 0; i < hd; i += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(kc + i), _mm256_loadu_ps(q + i), a);
        s[c] = scale * lanes_sum_avx2(a);
    }
}

LMC_AVX2 static void values_avx2(const float *p, const float *v, int64_t ldv, int64_t n, int64_t first, int64_t hd,
                                 int64_t slots, float *lanes) {
    for (int64_t j = 0; j < n; j++) {
        if (p[j] == 0) continue;  // adds exactly nothing
        float *lane = lanes + ((first + j) % slots) * hd;
        const float *vj = v + j * ldv;
        __m256 pj = _mm256_set1_ps(p[j]);
        for (int64_t i = 0; i < hd; i += 8) {
            _mm256_storeu_ps(lane + i, _mm256_fmadd_ps(_mm256_loadu_ps(vj + i), pj, _mm256_loadu_ps(lane + i)));
        }
    }
}
#endif

static float dot_one_token(const float *k, const float *q, int64_t n, int tail_double) {
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) return dot_one_token_avx2(k, q, n, tail_double);
#endif
    return dot_one_token_portable(k, q, n, tail_double);
}

void lmc_scores_ordered(const float *q, const float *k, int64_t ldk, int64_t n, int64_t hd, float scale, int one_token,
                        float *s) {
    if (one_token) {
        for (int64_t c = 0; c < n; c++) s[c] = scale * dot_one_token(k + c * ldk, q, hd, 1);
        return;
    }
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2 && hd % 8 == 0) {
        scores_avx2(q, k, ldk, n, hd, scale, s);
        return;
    }
#endif
    for (int64_t c = 0; c < n; c++) {
        const float *kc = k + c * ldk;
        float lanes[8] = {0};
        for (int64_t i = 0; i < hd; i++) lanes[i & 7] = fmaf(kc[i], q[i], lanes[i & 7]);
        s[c] = scale * lanes_sum(lanes);
    }
}

void lmc_dot_ordered_f32(const float *w, int64_t ldw, int64_t rows, const float *x, int64_t n, int one_token,
                         int tail_double, float *y) {
    if (!one_token) {
        lmc_scores_ordered(x, w, ldw, rows, n, 1, 0, y);
        return;
    }
    for (int64_t r = 0; r < rows; r++) y[r] = dot_one_token(w + r * ldw, x, n, tail_double);
}

void lmc_values_ordered_accumulate(const float *p, const float *v, int64_t ldv, int64_t n, int64_t first, int64_t hd,
                                   int one_token, float *lanes) {
    const int64_t slots = one_token ? 32 : 8;
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2 && hd % 8 == 0) {
        values_avx2(p, v, ldv, n, first, hd, slots, lanes);
        return;
    }
#endif
    for (int64_t j = 0; j < n; j++) {
        if (p[j] == 0) continue;
        float *lane = lanes + ((first + j) % slots) * hd;
        const float *vj = v + j * ldv;
        for (int64_t i = 0; i < hd; i++) lane[i] = fmaf(vj[i], p[j], lane[i]);
    }
}

void lmc_values_ordered_finish(const float *lanes, int64_t hd, int one_token, float *out) {
    for (int64_t i = 0; i < hd; i++) {
        if (one_token) {
            out[i] = slots32_sum(lanes + i, hd);
        } else {
            float l[8];
            for (int k = 0; k < 8; k++) l[k] = lanes[k * hd + i];
            out[i] = lanes_sum(l);
        }
    }
}

// MARK: - Row loops

int lmc_ordered_supports(int32_t t) {
    // F32, F16 (through lmc_scores_ordered), Q5_0, Q8_0, Q4_K, Q6_K.
    return t == 0 || t == 1 || t == 6 || t == 8 || t == 12 || t == 14;
}

void lmc_matmul_ordered(int32_t t, const void *w, int64_t row_bytes, int64_t row_begin, int64_t row_end, int64_t n,
                        int64_t tokens, const int8_t *qs, const float *d, float *y, int64_t ldy) {
    if (t != 8 && t != 6) return;
    const uint8_t *base = (const uint8_t *)w;
    const int64_t nb = n / 32;
    // A few tokens read the row in place; more share one unpacking of it.
    int8_t *unpacked = tokens >= 4 ? malloc((size_t)n + (size_t)nb * sizeof(float)) : NULL;
    for (int64_t r = row_begin; r < row_end; r++) {
        const uint8_t *row = base + r * row_bytes;
        if (!unpacked) {
            for (int64_t j = 0; j < tokens; j++) y[j * ldy + r] = dot32(t, row, nb, qs + j * n, d + j * nb);
            continue;
        }
        float *scales = (float *)(unpacked + n);
        unpack32(t, row, nb, unpacked, scales);
#ifdef LMC_X86
        if (lmc_active_isa() >= LMC_ISA_AVX2) {
            dots32_unpacked_avx2(unpacked, scales, nb, n, tokens, qs, d, y + r, ldy);
            continue;
        }
#endif
        dots32_unpacked_portable(unpacked, scales, nb, n, tokens, qs, d, y + r, ldy);
    }
    free(unpacked);
}

// MARK: - RoPE

// The angle of pair i is p · step^i, as the running product θ ← θ · step from θ = p (each step
// rounded), divided by the pair's frequency factor when there is one; the rotation is contracted
// into fused multiply-adds: x0' = fma(x0, cos, −x1·sin), x1' = fma(x0, sin, x1·cos).
void lmc_rope_ordered(float *x, int64_t heads, int64_t head_dim, int64_t dims, int64_t position, float step,
                      const float *factors, int neox) {
    const int64_t half = dims / 2;
    float cs[512];
    float *c = cs, *s = cs + 256;
    if (half > 256) return;
    float theta = (float)position;
    for (int64_t i = 0; i < half; i++) {
        const float angle = factors ? theta / factors[i] : theta;
        c[i] = cosf(angle);
        s[i] = sinf(angle);
        theta *= step;
    }
    for (int64_t h = 0; h < heads; h++) {
        float *v = x + h * head_dim;
        for (int64_t i = 0; i < half; i++) {
            float *p0 = neox ? v + i : v + 2 * i;
            float *p1 = neox ? v + i + half : v + 2 * i + 1;
            const float x0 = *p0, x1 = *p1;
            const float x1s = x1 * s[i], x1c = x1 * c[i];
            *p0 = fmaf(x0, c[i], -x1s);
            *p1 = fmaf(x0, s[i], x1c);
        }
    }
}

// MARK: - K-quant blocks (256 values)
//
// llama.cpp's K-quant activations (Q8_K): one float scale d per 256 values, int8 values, and the sums
// of each 16 of them. Its products (x86, AVX2; see the notes at each kernel):
// - Q4_K: rows in groups of four go through its repacked 8×8 gemm, the rest of a call (count mod 4)
//   through its repacked gemv; the two add in different steps.
// - Q6_K: calls of at least 8 tokens go through its tiled kernel, smaller ones through its row dot.

static inline int nearest_even(float v) { return (int)lrintf(v); }

void lmc_quantize_q8_k_ordered(const float *x, int64_t n, int grouped, int8_t *qs, float *d, int16_t *bsums) {
    for (int64_t b = 0; b < n / 256; b++) {
        const float *xb = x + b * 256;
        int8_t *q = qs + b * 256;
        float amax = 0, max = 0;
        int positive_max = 0;
        for (int i = 0; i < 256; i++) {
            const float a = fabsf(xb[i]);
            if (a > amax) {
                amax = a;
                max = xb[i];
            }
        }
        for (int i = 0; i < 256 && grouped; i++) positive_max |= xb[i] == amax;
        if (amax == 0) {
            memset(q, 0, 256);
            d[b] = 0;
        } else {
            // Ungrouped rows (quantize_row_q8_K): the first value of largest magnitude maps to −127.
            // Grouped rows (its 4×8 quantizer): −127 for a positive maximum if there is one, else +127.
            const float iscale = grouped ? (positive_max ? -127.0f / amax : 127.0f / amax) : -127.0f / max;
            for (int i = 0; i < 256; i++) {
                int v = nearest_even(iscale * xb[i]);
                q[i] = (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v));
            }
            d[b] = 1.0f / iscale;
        }
        for (int k = 0; k < 16; k++) {
            int s = 0;
            for (int i = 0; i < 16; i++) s += q[16 * k + i];
            bsums[b * 16 + k] = (int16_t)s;
        }
    }
}

// Σ w[i]·x[i] over each 16 of 256 values, w unsigned (below 64), x signed.
static void sums16_portable(const uint8_t *w, const int8_t *x, int32_t out[16]) {
    for (int k = 0; k < 16; k++) {
        int s = 0;
        for (int i = 0; i < 16; i++) s += w[16 * k + i] * x[16 * k + i];
        out[k] = s;
    }
}

#ifdef LMC_X86
LMC_AVX2 static void sums16_avx2(const uint8_t *w, const int8_t *x, int32_t out[16]) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int v = 0; v < 8; v++) {
        __m256i p = _mm256_madd_epi16(
            _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(w + 32 * v)),
                                 _mm256_loadu_si256((const __m256i *)(x + 32 * v))),
            ones);
        int32_t l[8];
        _mm256_storeu_si256((__m256i *)l, p);
        out[2 * v] = (l[0] + l[1]) + (l[2] + l[3]);
        out[2 * v + 1] = (l[4] + l[5]) + (l[6] + l[7]);
    }
}
#endif

static inline void sums16(const uint8_t *w, const int8_t *x, int32_t out[16]) {
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) {
        sums16_avx2(w, x, out);
        return;
    }
#endif
    sums16_portable(w, x, out);
}

static inline void q4_k_scale_min(int j, const uint8_t *s, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// One Q4_K super-block unpacked: values 0…15 in element order, 6-bit scales and minimums, d, dmin.
typedef struct {
    uint8_t q[256];
    int sc[8], m[8];
    float d, dmin;
} q4k_block;

static void unpack_q4_k(const uint8_t *blk, q4k_block *u) {
    u->d = lmc_f16_to_f32(u16_at(blk));
    u->dmin = lmc_f16_to_f32(u16_at(blk + 2));
    for (int j = 0; j < 8; j++) q4_k_scale_min(j, blk + 4, &u->sc[j], &u->m[j]);
    const uint8_t *qs = blk + 16;
    for (int i = 0; i < 4; i++) {
        for (int l = 0; l < 32; l++) {
            u->q[64 * i + l] = qs[32 * i + l] & 0x0f;
            u->q[64 * i + 32 + l] = qs[32 * i + l] >> 4;
        }
    }
}

// One Q6_K super-block unpacked: unsigned 6-bit codes (value + 32) in element order, scales, d.
typedef struct {
    uint8_t q[256];
    int sc[16];
    float d;
} q6k_block;

static void unpack_q6_k(const uint8_t *blk, q6k_block *u) {
    const uint8_t *ql = blk, *qh = blk + 128;
    const int8_t *sc = (const int8_t *)(blk + 192);
    u->d = lmc_f16_to_f32(u16_at(blk + 208));
    for (int k = 0; k < 16; k++) u->sc[k] = sc[k];
    // Value 128h + 32g + l: a nibble of ql[64h + l + 32(g mod 2)] (low for g < 2), two bits of qh[32h + l].
    for (int h = 0; h < 2; h++) {
        const uint8_t *lo = ql + 64 * h, *hi = qh + 32 * h;
        uint8_t *q = u->q + 128 * h;
        for (int l = 0; l < 32; l++) {
            q[l] = (uint8_t)((lo[l] & 0x0f) | ((hi[l] & 3) << 4));
            q[l + 32] = (uint8_t)((lo[l + 32] & 0x0f) | (((hi[l] >> 2) & 3) << 4));
            q[l + 64] = (uint8_t)((lo[l] >> 4) | (((hi[l] >> 4) & 3) << 4));
            q[l + 96] = (uint8_t)((lo[l + 32] >> 4) | (((hi[l] >> 6) & 3) << 4));
        }
    }
}

// Q4_K, one output. gemm (grouped rows): per super-block, four steps of 64 values, each one fused
// multiply-add of its scaled sums into the value and one of its minimum terms into the offset.
// gemv: one step per super-block. The offset is subtracted at the end.
static float dot_q4_k_ordered(const q4k_block *blocks, int64_t nb, const int8_t *qs, const float *d,
                              const int16_t *bsums, int grouped) {
    float acc = 0, accm = 0;
    for (int64_t b = 0; b < nb; b++) {
        const q4k_block *u = &blocks[b];
        int32_t s16[16];
        sums16(u->q, qs + b * 256, s16);
        const float sd = u->d * d[b], sm = u->dmin * d[b];
        int32_t i1 = 0, i2 = 0;
        for (int j = 0; j < 8; j++) {
            const int32_t dot = s16[2 * j] + s16[2 * j + 1];
            const int32_t bs = bsums[b * 16 + 2 * j] + bsums[b * 16 + 2 * j + 1];
            i1 += u->sc[j] * dot;
            i2 += u->m[j] * bs;
            if (grouped && (j & 1)) {
                acc = fmaf((float)i1, sd, acc);
                accm = fmaf((float)i2, sm, accm);
                i1 = i2 = 0;
            }
        }
        if (!grouped) {
            acc = fmaf((float)i1, sd, acc);
            accm = fmaf((float)i2, sm, accm);
        }
    }
    return acc - accm;
}

// Q6_K, one output. tiled (calls of at least 8 tokens): per super-block, the exact integer sum
// times the weight scale, then one fused multiply-add with the activation scale. Row dot: eight
// integer lanes per super-block (lane L: values 4L…4L+3 of each 32, minus 32 × the scaled sums of
// the activations of values 32L…32L+31), each added with one fused multiply-add of the product of the
// two scales, then the lanes summed.
static float dot_q6_k_ordered(const q6k_block *blocks, int64_t nb, const int8_t *qs, const float *d,
                              const int16_t *bsums, int tiled) {
    if (tiled) {
        float buf = 0;
        for (int64_t b = 0; b < nb; b++) {
            const q6k_block *u = &blocks[b];
            int32_t s16[16];
            sums16(u->q, qs + b * 256, s16);
            int32_t s1 = 0;
            for (int k = 0; k < 16; k++) s1 += u->sc[k] * (s16[k] - 32 * bsums[b * 16 + k]);
            buf = fmaf(u->d * (float)s1, d[b], buf);
        }
        return buf;
    }
    float lanes[8] = {0};
    for (int64_t b = 0; b < nb; b++) {
        const q6k_block *u = &blocks[b];
        const int8_t *x = qs + b * 256;
        const float dd = u->d * d[b];
        for (int l = 0; l < 8; l++) {
            int32_t lane = 0;
            for (int c = 0; c < 8; c++) {
                for (int k = 0; k < 4; k++) {
                    const int e = 32 * c + 4 * l + k;
                    lane += u->sc[e / 16] * u->q[e] * x[e];
                }
            }
            lane -= 32 * (u->sc[2 * l] * bsums[b * 16 + 2 * l] + u->sc[2 * l + 1] * bsums[b * 16 + 2 * l + 1]);
            lanes[l] = fmaf(dd, (float)lane, lanes[l]);
        }
    }
    const float t0 = lanes[4] + lanes[0], t1 = lanes[5] + lanes[1], t2 = lanes[6] + lanes[2],
                t3 = lanes[7] + lanes[3];
    return (t0 + t2) + (t1 + t3);
}

void lmc_matmul_ordered_k(int32_t t, const void *w, int64_t row_bytes, int64_t row_begin, int64_t row_end,
                          int64_t n, int64_t tokens, const int8_t *qs, const float *d, const int16_t *bsums,
                          float *y, int64_t ldy) {
    if (t != 12 && t != 14) return;
    const uint8_t *base = (const uint8_t *)w;
    const int64_t nb = n / 256;
    const int64_t grouped_tokens = tokens - tokens % 4;
    // Each row is unpacked once for all tokens.
    void *scratch = malloc((size_t)nb * (t == 12 ? sizeof(q4k_block) : sizeof(q6k_block)));
    if (!scratch) {
        for (int64_t r = row_begin; r < row_end; r++) {
            for (int64_t j = 0; j < tokens; j++) y[j * ldy + r] = NAN;
        }
        return;
    }
    for (int64_t r = row_begin; r < row_end; r++) {
        const uint8_t *row = base + r * row_bytes;
        if (t == 12) {
            q4k_block *u = (q4k_block *)scratch;
            for (int64_t b = 0; b < nb; b++) unpack_q4_k(row + b * 144, &u[b]);
            for (int64_t j = 0; j < tokens; j++) {
                y[j * ldy + r] = dot_q4_k_ordered(u, nb, qs + j * n, d + j * nb, bsums + j * (n / 16), j < grouped_tokens);
            }
        } else {
            q6k_block *u = (q6k_block *)scratch;
            for (int64_t b = 0; b < nb; b++) unpack_q6_k(row + b * 210, &u[b]);
            for (int64_t j = 0; j < tokens; j++) {
                y[j * ldy + r] = dot_q6_k_ordered(u, nb, qs + j * n, d + j * nb, bsums + j * (n / 16), tokens >= 8);
            }
        }
    }
    free(scratch);
}

