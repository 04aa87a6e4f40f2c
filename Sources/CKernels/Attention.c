// Batch-invariant attention over paged K/V: portable C, AVX2/FMA and AVX-512F variants with the same bits.
//
// Why: the engine must produce the same output for a token whether it is computed inside a long prefill,
// a short tail, a batched decode step or alone, so that cached KV and replayed tokens agree exactly. So
// the arithmetic for one (query, key range) is fixed below and no step of it depends on how many queries
// share a call, how they are grouped into register tiles, where a page or tile starts, or on the ISA.
//
// The fixed arithmetic, for a query q (hd floats, hd % 16 == 0) and keys first...last:
//
//   1. Score. s[t] = dot(q, k_t) · scale, where dot uses 16 logical lanes: lane j (0..<16) starts at +0
//      and accumulates d = j, j+16, j+32, … in increasing d with a fused multiply-add
//      (lane = fmaf(q[d], k_t[d], lane)); then the lanes are summed by the fixed pairwise tree
//      r8[j] = L[j] + L[j+8] (j < 8), r4[j] = r8[j] + r8[j+4] (j < 4), r2[j] = r4[j] + r4[j+2] (j < 2),
//      dot = r2[0] + r2[1]; then one float multiplication by scale.
//   2. Softmax. mx = the largest s[t]; e[t] = lmc_attend_exp(s[t] − mx) (the exponential defined below,
//      not libm's, so that every ISA and every platform computes the same value); S = Σ e[t] summed in
//      double, sequentially in increasing t from 0; inv = (float)(1.0 / S); p[t] = e[t] · inv (float),
//      rounded to the nearest half-precision value (ties to even).
//   3. Values. out[d] starts at +0 and o = fmaf(p[t], v_t[d], o) for t = first...last in increasing t.
//      An empty range (first > last) gives zeros.
//
// lmc_attend_exp(x) (a Cephes-style expf, about 2 ulp; every step one IEEE operation so vector and scalar
// code agree): x < −87 gives 0 (a weight below 2^-125 of the largest cannot change a float sum); else
// n = (x · log2(e) + 1.5·2^23) − 1.5·2^23 (round to nearest integer), r = fmaf(n, −0.693359375, x),
// r = fmaf(n, 2.12194440e-4, r), a degree-5 polynomial P in r by Horner's rule with fmaf,
// y = fmaf(P, r·r, r) + 1, result = y · 2^n (2^n built from its exponent bits).
//
// Speed comes from blocking, which changes only which independent sums run side by side: queries go in
// blocks that share each loaded key/value row; a block's key range is cut into segments where the set of
// queries that see the keys is constant, so a query never touches a key outside its own range (a key
// outside every range may lie in an unmapped page); the score tiles keep several query × key
// accumulators in registers, the value tiles several output rows.

#include "CKernels.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

// Fused multiply-adds happen only where written (fmaf / _fmadd_): a compiler that contracted
// `x · log2e + magic` in the exponential on one ISA and not another would break the identity.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#if defined(__x86_64__) || defined(__i386__)
#define LMC_X86 1
#include <immintrin.h>
#define LMC_AVX2 __attribute__((target("avx2,fma")))
#define LMC_AVX512 __attribute__((target("avx512f,avx2,fma")))
#endif

#define LMC_INLINE static inline __attribute__((always_inline))

// MARK: - Level

// Forcing is per thread (like lmc_force_isa), so a test comparing levels does not change other threads.
static _Thread_local int attend_forced = -1;
static _Atomic int attend_detected = -1;

static int attend_cpu_level(void) {
    int cached = atomic_load_explicit(&attend_detected, memory_order_relaxed);
    if (cached >= 0) return cached;
    int level = LMC_ATTEND_PORTABLE;
#ifdef LMC_X86
    // lmc_cpu_isa() answers AVX2 (with FMA and F16C); AVX-512F is detected here (the builtin also checks
    // that the OS saves the 512-bit state).
    __builtin_cpu_init();
    if (lmc_cpu_isa() >= LMC_ISA_AVX2) level = LMC_ATTEND_AVX2;
    if (level == LMC_ATTEND_AVX2 && __builtin_cpu_supports("avx512f") && lmc_isa_cap() > LMC_ISA_AVX2)
        level = LMC_ATTEND_AVX512;
#endif
    atomic_store_explicit(&attend_detected, level, memory_order_relaxed);
    return level;
}

int lmc_attend_level(void) {
    int level = attend_cpu_level();
    // lmc_force_isa(LMC_ISA_GENERIC) also selects the portable code here.
    if (lmc_active_isa() == LMC_ISA_GENERIC) level = LMC_ATTEND_PORTABLE;
    int forced = attend_forced;
    return (forced >= 0 && forced < level) ? forced : level;
}

void lmc_attend_force_level(int level) { attend_forced = level; }

// MARK: - Exponential and softmax (shared source, compiled per ISA so the loop can vectorize)

LMC_INLINE float bits_to_float(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

LMC_INLINE float exp_fixed(float x) {
    float xc = x < -87.0f ? -87.0f : x;
    float t = xc * 1.44269504088896341f;
    float n = (t + 12582912.0f) - 12582912.0f;
    float r = fmaf(n, -0.693359375f, xc);
    r = fmaf(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    float z = r * r;
    float y = fmaf(p, z, r) + 1.0f;
    float scaled = y * bits_to_float((uint32_t)((int32_t)n + 127) << 23);
    return x < -87.0f ? 0.0f : scaled;
}

float lmc_attend_exp(float x) { return exp_fixed(x); }

// s[0..<n] (scores) becomes p[0..<n] (probabilities), by step 2 above.
LMC_INLINE void softmax_body(float *s, int64_t n) {
    float mx = s[0];
    for (int64_t t = 1; t < n; t++) mx = s[t] > mx ? s[t] : mx;
    for (int64_t t = 0; t < n; t++) s[t] = exp_fixed(s[t] - mx);
    double sum = 0;
    for (int64_t t = 0; t < n; t++) sum += (double)s[t];
    float inv = (float)(1.0 / sum);
    for (int64_t t = 0; t < n; t++) s[t] = s[t] * inv;
    // Probabilities meet the half-precision values as half-precision values, as llama.cpp's product
    // with its F16 value cache rounds them (this keeps near-ties going its way); IEEE rounding to
    // nearest even, the same on every ISA.
    lmc_round_f16(s, n);
}

static void softmax_portable(float *s, int64_t n) { softmax_body(s, n); }
#ifdef LMC_X86
LMC_AVX2 static void softmax_avx2(float *s, int64_t n) { softmax_body(s, n); }
LMC_AVX512 static void softmax_avx512(float *s, int64_t n) { softmax_body(s, n); }
#endif

// MARK: - Tiles
//
// A score tile: nq queries × nk keys (keys at k0 + b·ks), writing sp[a][b] = s of query a, key b.
// A value tile: nq output rows += p[a][t] · v_t over `count` rows (v_t at v0 + t·vs), for one chunk of d.
// Each entry is computed by exactly the fixed arithmetic; the tiles only interleave independent sums.

// Portable: one query, one key: the 16 lanes as an array.
static void score_portable(const float *q, const float *k, int64_t hd, float scale, float *s) {
    float l[16];
    for (int j = 0; j < 16; j++) l[j] = 0.0f;
    for (int64_t d = 0; d < hd; d += 16) {
        for (int j = 0; j < 16; j++) l[j] = fmaf(q[d + j], k[d + j], l[j]);
    }
    float r8[8], r4[4], r2[2];
    for (int j = 0; j < 8; j++) r8[j] = l[j] + l[j + 8];
    for (int j = 0; j < 4; j++) r4[j] = r8[j] + r8[j + 4];
    for (int j = 0; j < 2; j++) r2[j] = r4[j] + r4[j + 2];
    *s = (r2[0] + r2[1]) * scale;
}

static void values_portable(const float *p, const float *v0, int64_t vs, int64_t count, int64_t hd, float *o) {
    for (int64_t t = 0; t < count; t++) {
        const float *v = v0 + t * vs;
        float pt = p[t];
        for (int64_t d = 0; d < hd; d++) o[d] = fmaf(pt, v[d], o[d]);
    }
}

#ifdef LMC_X86
// r8 = a + b lane by lane (the first level of the tree, lanes j and j + 8), then the rest of the tree.
LMC_AVX2 LMC_INLINE float tree8(__m256 r8) {
    __m128 r4 = _mm_add_ps(_mm256_castps256_ps128(r8), _mm256_extractf128_ps(r8, 1));  // r8[j] + r8[j+4]
    __m128 r2 = _mm_add_ps(r4, _mm_movehl_ps(r4, r4));                                // r4[j] + r4[j+2]
    return _mm_cvtss_f32(_mm_add_ss(r2, _mm_movehdup_ps(r2)));                          // r2[0] + r2[1]
}

LMC_AVX512 LMC_INLINE float tree16(__m512 l) {
    __m256 lo = _mm512_castps512_ps256(l);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(l), 1));
    return tree8(_mm256_add_ps(lo, hi));
}

// AVX-512: one zmm holds the 16 lanes; up to 4 queries × 4 keys of accumulators.
LMC_AVX512 LMC_INLINE void score_tile_512(int nq, int nk, const float *const *q, const float *k0, int64_t ks,
                                          int64_t hd, float scale, float *const *sp) {
    __m512 acc[4][4];
    for (int a = 0; a < nq; a++)
        for (int b = 0; b < nk; b++) acc[a][b] = _mm512_setzero_ps();
    for (int64_t d = 0; d < hd; d += 16) {
        __m512 kv[4];
        for (int b = 0; b < nk; b++) kv[b] = _mm512_loadu_ps(k0 + b * ks + d);
        for (int a = 0; a < nq; a++) {
            __m512 qv = _mm512_loadu_ps(q[a] + d);
            for (int b = 0; b < nk; b++) acc[a][b] = _mm512_fmadd_ps(qv, kv[b], acc[a][b]);
        }
    }
    for (int a = 0; a < nq; a++)
        for (int b = 0; b < nk; b++) sp[a][b] = tree16(acc[a][b]) * scale;
}

// All nq (≤ BLOCK) queries against `count` keys: key tiles outside, query tiles inside, so a key tile is
// loaded from memory once and the block's queries (hd · nq floats) stay in L1.
LMC_AVX512 static void scores_512(int nq, const float *const *q, const float *k0, int64_t ks, int64_t count,
                                  int64_t hd, float scale, float *const *sp) {
    int64_t t = 0;
#define LMC_SCORE_CASES(NK)                                                                   \
    for (int a = 0; a < nq; a += 4) {                                                          \
        float *s[4] = {0};                                                                     \
        for (int b = 0; b < 4 && a + b < nq; b++) s[b] = sp[a + b] + t;                        \
        switch (nq - a) {                                                                      \
        case 1: score_tile_512(1, NK, q + a, k0 + t * ks, ks, hd, scale, s); break;            \
        case 2: score_tile_512(2, NK, q + a, k0 + t * ks, ks, hd, scale, s); break;            \
        case 3: score_tile_512(3, NK, q + a, k0 + t * ks, ks, hd, scale, s); break;            \
        default: score_tile_512(4, NK, q + a, k0 + t * ks, ks, hd, scale, s); break;           \
        }                                                                                      \
    }
    for (; t + 4 <= count; t += 4) {
        LMC_SCORE_CASES(4)
    }
    for (; t < count; t++) {
        LMC_SCORE_CASES(1)
    }
#undef LMC_SCORE_CASES
}

// nq output rows × w zmm (16·w floats of d) in registers while `count` value rows stream past.
LMC_AVX512 LMC_INLINE void values_tile_512(int nq, int w, const float *const *p, const float *v0, int64_t vs,
                                           int64_t count, float *const *o, int64_t d0) {
    __m512 acc[4][4];
    for (int a = 0; a < nq; a++)
        for (int c = 0; c < w; c++) acc[a][c] = _mm512_loadu_ps(o[a] + d0 + 16 * c);
    for (int64_t t = 0; t < count; t++) {
        const float *v = v0 + t * vs + d0;
        __m512 vv[4];
        for (int c = 0; c < w; c++) vv[c] = _mm512_loadu_ps(v + 16 * c);
        for (int a = 0; a < nq; a++) {
            __m512 pb = _mm512_set1_ps(p[a][t]);
            for (int c = 0; c < w; c++) acc[a][c] = _mm512_fmadd_ps(pb, vv[c], acc[a][c]);
        }
    }
    for (int a = 0; a < nq; a++)
        for (int c = 0; c < w; c++) _mm512_storeu_ps(o[a] + d0 + 16 * c, acc[a][c]);
}

LMC_AVX512 static void values_512(int nq, const float *const *p, const float *v0, int64_t vs, int64_t count,
                                  int64_t hd, float *const *o) {
    int64_t d0 = 0;
#define LMC_VALUE_CASES(W)                                                                    \
    switch (nq) {                                                                              \
    case 1: values_tile_512(1, W, p, v0, vs, count, o, d0); break;                            \
    case 2: values_tile_512(2, W, p, v0, vs, count, o, d0); break;                            \
    case 3: values_tile_512(3, W, p, v0, vs, count, o, d0); break;                            \
    default: values_tile_512(4, W, p, v0, vs, count, o, d0); break;                           \
    }
    for (; d0 + 64 <= hd; d0 += 64) LMC_VALUE_CASES(4)
    for (; d0 < hd; d0 += 16) LMC_VALUE_CASES(1)
#undef LMC_VALUE_CASES
}

// AVX2: the 16 lanes are two ymm (lanes 0–7, 8–15), so the tree's first level is lo + hi. Up to 2 queries
// × 2 keys (8 accumulators) fit the 16 registers with the loads.
LMC_AVX2 LMC_INLINE void score_tile_avx2(int nq, int nk, const float *const *q, const float *k0, int64_t ks,
                                         int64_t hd, float scale, float *const *sp) {
    __m256 lo[2][2], hi[2][2];
    for (int a = 0; a < nq; a++)
        for (int b = 0; b < nk; b++) lo[a][b] = hi[a][b] = _mm256_setzero_ps();
    for (int64_t d = 0; d < hd; d += 16) {
        __m256 kl[2], kh[2];
        for (int b = 0; b < nk; b++) {
            kl[b] = _mm256_loadu_ps(k0 + b * ks + d);
            kh[b] = _mm256_loadu_ps(k0 + b * ks + d + 8);
        }
        for (int a = 0; a < nq; a++) {
            __m256 ql = _mm256_loadu_ps(q[a] + d), qh = _mm256_loadu_ps(q[a] + d + 8);
            for (int b = 0; b < nk; b++) {
                lo[a][b] = _mm256_fmadd_ps(ql, kl[b], lo[a][b]);
                hi[a][b] = _mm256_fmadd_ps(qh, kh[b], hi[a][b]);
            }
        }
    }
    for (int a = 0; a < nq; a++)
        for (int b = 0; b < nk; b++) sp[a][b] = tree8(_mm256_add_ps(lo[a][b], hi[a][b])) * scale;
}

LMC_AVX2 static void scores_avx2(int nq, const float *const *q, const float *k0, int64_t ks, int64_t count,
                                 int64_t hd, float scale, float *const *sp) {
    int64_t t = 0;
    for (; t + 2 <= count; t += 2) {
        for (int a = 0; a < nq; a += 2) {
            float *s[2] = {sp[a] + t, a + 1 < nq ? sp[a + 1] + t : 0};
            if (a + 1 == nq) score_tile_avx2(1, 2, q + a, k0 + t * ks, ks, hd, scale, s);
            else score_tile_avx2(2, 2, q + a, k0 + t * ks, ks, hd, scale, s);
        }
    }
    for (; t < count; t++) {
        for (int a = 0; a < nq; a += 2) {
            float *s[2] = {sp[a] + t, a + 1 < nq ? sp[a + 1] + t : 0};
            if (a + 1 == nq) score_tile_avx2(1, 1, q + a, k0 + t * ks, ks, hd, scale, s);
            else score_tile_avx2(2, 1, q + a, k0 + t * ks, ks, hd, scale, s);
        }
    }
}

LMC_AVX2 LMC_INLINE void values_tile_avx2(int nq, int w, const float *const *p, const float *v0, int64_t vs,
                                          int64_t count, float *const *o, int64_t d0) {
    __m256 acc[2][4];
    for (int a = 0; a < nq; a++)
        for (int c = 0; c < w; c++) acc[a][c] = _mm256_loadu_ps(o[a] + d0 + 8 * c);
    for (int64_t t = 0; t < count; t++) {
        const float *v = v0 + t * vs + d0;
        __m256 vv[4];
        for (int c = 0; c < w; c++) vv[c] = _mm256_loadu_ps(v + 8 * c);
        for (int a = 0; a < nq; a++) {
            __m256 pb = _mm256_broadcast_ss(p[a] + t);
            for (int c = 0; c < w; c++) acc[a][c] = _mm256_fmadd_ps(pb, vv[c], acc[a][c]);
        }
    }
    for (int a = 0; a < nq; a++)
        for (int c = 0; c < w; c++) _mm256_storeu_ps(o[a] + d0 + 8 * c, acc[a][c]);
}

LMC_AVX2 static void values_avx2(int nq, const float *const *p, const float *v0, int64_t vs, int64_t count,
                                 int64_t hd, float *const *o) {
    int64_t d0 = 0;
    for (; d0 + 32 <= hd; d0 += 32) {
        if (nq == 1) values_tile_avx2(1, 4, p, v0, vs, count, o, d0);
        else values_tile_avx2(2, 4, p, v0, vs, count, o, d0);
    }
    for (; d0 < hd; d0 += 16) {
        if (nq == 1) values_tile_avx2(1, 2, p, v0, vs, count, o, d0);
        else values_tile_avx2(2, 2, p, v0, vs, count, o, d0);
    }
}
#endif

// MARK: - Driver

// Queries per block: each key/value row a block needs is read once per block (from L1 across its
// query tiles). The block's scores take BLOCK rows of scratch.
enum { BLOCK = 16 };

typedef struct {
    int tile;  // queries per value tile (`scores` takes the whole active set)
    void (*scores)(int nq, const float *const *q, const float *k0, int64_t ks, int64_t count, int64_t hd,
                   float scale, float *const *sp);
    void (*values)(int nq, const float *const *p, const float *v0, int64_t vs, int64_t count, int64_t hd,
                   float *const *o);
    void (*softmax)(float *s, int64_t n);
} attend_ops;

static void scores_portable(int nq, const float *const *q, const float *k0, int64_t ks, int64_t count, int64_t hd,
                            float scale, float *const *sp) {
    for (int a = 0; a < nq; a++)
        for (int64_t t = 0; t < count; t++) score_portable(q[a], k0 + t * ks, hd, scale, sp[a] + t);
}

static void values_portable_tile(int nq, const float *const *p, const float *v0, int64_t vs, int64_t count,
                                 int64_t hd, float *const *o) {
    for (int a = 0; a < nq; a++) values_portable(p[a], v0, vs, count, hd, o[a]);
}

static inline const float *kv_row(lmc_kv_view view, int64_t t) {
    return view.pages[t / view.page_size] + (t % view.page_size) * view.row_stride + view.offset;
}

int64_t lmc_attend_scratch_floats(int64_t m, int64_t max_span) {
    int64_t rows = m < BLOCK ? m : BLOCK;
    int64_t span = max_span < 1 ? 1 : max_span;
    return rows * ((span + 15) & ~(int64_t)15);
}

// One block of n ≤ BLOCK queries (slot a = query i0 + a).
static void attend_block(const attend_ops *ops, const float *q, int64_t q_stride, int64_t n, const int64_t *first,
                         const int64_t *last, lmc_kv_view keys, lmc_kv_view values, int64_t hd, float scale,
                         float *out, int64_t out_stride, float *scratch, int64_t row) {
    // Segment boundaries: every first and last + 1, sorted (n ≤ 8: insertion sort).
    int64_t cut[2 * BLOCK];
    int ncut = 0;
    for (int a = 0; a < n; a++) {
        if (first[a] > last[a]) continue;
        int64_t c2[2] = {first[a], last[a] + 1};
        for (int e = 0; e < 2; e++) {
            int pos = ncut++;
            while (pos > 0 && cut[pos - 1] > c2[e]) {
                cut[pos] = cut[pos - 1];
                pos--;
            }
            cut[pos] = c2[e];
        }
    }
    for (int a = 0; a < n; a++) memset(out + a * out_stride, 0, (size_t)hd * sizeof(float));

    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            for (int a = 0; a < n; a++)
                if (first[a] <= last[a]) ops->softmax(scratch + a * row, last[a] - first[a] + 1);
        }
        for (int c = 0; c + 1 < ncut; c++) {
            int64_t t0 = cut[c], t1 = cut[c + 1];
            if (t0 == t1) continue;
            int act[BLOCK], nact = 0;
            for (int a = 0; a < n; a++)
                if (first[a] <= t0 && last[a] >= t1 - 1) act[nact++] = a;
            // Page runs of the segment: consecutive rows are row_stride apart inside a page.
            for (int64_t t = t0; t < t1;) {
                int64_t page_end = (t / keys.page_size + 1) * keys.page_size;
                int64_t vpage_end = (t / values.page_size + 1) * values.page_size;
                int64_t end = t1 < page_end ? t1 : page_end;
                end = end < vpage_end ? end : vpage_end;
                const float *qp[BLOCK];
                float *sp[BLOCK];
                float *op[BLOCK];
                for (int b = 0; b < nact; b++) {
                    int a = act[b];
                    qp[b] = q + a * q_stride;
                    sp[b] = scratch + a * row + (t - first[a]);
                    op[b] = out + a * out_stride;
                }
                if (pass == 0) {
                    ops->scores(nact, qp, kv_row(keys, t), keys.row_stride, end - t, hd, scale, sp);
                } else {
                    for (int a0 = 0; a0 < nact; a0 += ops->tile) {
                        int nq = nact - a0 < ops->tile ? nact - a0 : ops->tile;
                        ops->values(nq, (const float *const *)sp + a0, kv_row(values, t), values.row_stride,
                                    end - t, hd, op + a0);
                    }
                }
                t = end;
            }
        }
    }
}

void lmc_attend(const float *q, int64_t q_stride, int64_t m, const int64_t *first, const int64_t *last,
                lmc_kv_view keys, lmc_kv_view values, int64_t hd, float scale, float *out, int64_t out_stride,
                float *scratch) {
    static const attend_ops portable = {1, scores_portable, values_portable_tile, softmax_portable};
#ifdef LMC_X86
    static const attend_ops avx2 = {2, scores_avx2, values_avx2, softmax_avx2};
    static const attend_ops avx512 = {4, scores_512, values_512, softmax_avx512};
#endif
    const attend_ops *ops = &portable;
#ifdef LMC_X86
    int level = lmc_attend_level();
    if (level == LMC_ATTEND_AVX512) ops = &avx512;
    else if (level == LMC_ATTEND_AVX2) ops = &avx2;
#endif
    int64_t span = 1;
    for (int64_t i = 0; i < m; i++) span = last[i] - first[i] + 1 > span ? last[i] - first[i] + 1 : span;
    int64_t row = (span + 15) & ~(int64_t)15;
    for (int64_t i0 = 0; i0 < m; i0 += BLOCK) {
        int64_t n = m - i0 < BLOCK ? m - i0 : BLOCK;
        attend_block(ops, q + i0 * q_stride, q_stride, n, first + i0, last + i0, keys, values, hd, scale,
                     out + i0 * out_stride, out_stride, scratch, row);
    }
}
