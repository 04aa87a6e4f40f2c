// Products of a few tokens with Float weights, without packing.
//
// OpenBLAS packs both operands into its own panels on every call. For a block of a few tokens against
// a layer's dequantized weights that copy costs more than the arithmetic: a 16-token prefill spent most
// of its time packing 0.4 GB of weights. These loops read each weight row once, straight from the
// matrix, and dot it with every token of the block.

#include "CKernels.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define LMC_X86 1
#include <immintrin.h>
#endif

// Every element Y[i][j] is computed in the same order whatever the block size and whichever tokens
// share a pass: eight partial sums over k in steps of 8, then a fixed pairwise reduction. So a token's
// result depends only on the kernel in use (AVX2 or portable), not on the other tokens of its block.

static float dot_portable(const float *a, const float *b, int64_t k) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t p = 0;
    for (; p + 8 <= k; p += 8) {
        for (int l = 0; l < 8; l++) s[l] += a[p + l] * b[p + l];
    }
    float r = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
    for (; p < k; p++) r += a[p] * b[p];
    return r;
}

#ifdef LMC_X86
#define LMC_AVX2 __attribute__((target("avx2,fma")))

LMC_AVX2 static inline float reduce8(__m256 v) {
    // ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)), as the portable loop.
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128 a = _mm_add_ps(lo, hi);                  // s0+s4, s1+s5, s2+s6, s3+s7
    __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));  // (s0+s4)+(s2+s6), (s1+s5)+(s3+s7)
    __m128 c = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(c);
}

// Rows j and j+1 against tokens i..i+3: eight independent sums, six loads per eight multiply-adds.
// `ahead`, when not null, is the pair of rows after this one (ldw apart), whose lines are requested
// while this pair is computed: the rows stream from memory once per call, and the hardware prefetcher
// alone left the loads waiting.
LMC_AVX2 static void block_2x4(const float *x, int64_t ldx, const float *w0, const float *w1, int64_t k,
                               float *y, int64_t ldy, const float *ahead, int64_t ldw) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
    __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx;
    int64_t p = 0;
    for (; p + 8 <= k; p += 8) {
        if (ahead && (p & 15) == 0) {
            _mm_prefetch((const char *)(ahead + p), _MM_HINT_T0);
            _mm_prefetch((const char *)(ahead + ldw + p), _MM_HINT_T0);
        }
        __m256 v0 = _mm256_loadu_ps(w0 + p), v1 = _mm256_loadu_ps(w1 + p);
        __m256 t = _mm256_loadu_ps(x0 + p);
        a00 = _mm256_fmadd_ps(t, v0, a00);
        a10 = _mm256_fmadd_ps(t, v1, a10);
        t = _mm256_loadu_ps(x1 + p);
        a01 = _mm256_fmadd_ps(t, v0, a01);
        a11 = _mm256_fmadd_ps(t, v1, a11);
        t = _mm256_loadu_ps(x2 + p);
        a02 = _mm256_fmadd_ps(t, v0, a02);
        a12 = _mm256_fmadd_ps(t, v1, a12);
        t = _mm256_loadu_ps(x3 + p);
        a03 = _mm256_fmadd_ps(t, v0, a03);
        a13 = _mm256_fmadd_ps(t, v1, a13);
    }
    float r[8] = {reduce8(a00), reduce8(a01), reduce8(a02), reduce8(a03),
                  reduce8(a10), reduce8(a11), reduce8(a12), reduce8(a13)};
    for (; p < k; p++) {
        for (int i = 0; i < 4; i++) {
            r[i] += x[i * ldx + p] * w0[p];
            r[4 + i] += x[i * ldx + p] * w1[p];
        }
    }
    for (int i = 0; i < 4; i++) {
        y[i * ldy] = r[i];
        y[i * ldy + 1] = r[4 + i];
    }
}

// One row against one token, in the same order as block_2x4.
LMC_AVX2 static float dot_avx2(const float *a, const float *b, int64_t k) {
    __m256 acc = _mm256_setzero_ps();
    int64_t p = 0;
    for (; p + 8 <= k; p += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + p), _mm256_loadu_ps(b + p), acc);
    float r = reduce8(acc);
    for (; p < k; p++) r += a[p] * b[p];
    return r;
}

LMC_AVX2 static void gemm_nt_avx2(int64_t m, int64_t n, int64_t k, const float *x, int64_t ldx, const float *w,
                                  int64_t ldw, float *y, int64_t ldy) {
    // Rows go in groups that stay in L2 (~128 KiB) while every group of four tokens passes over them;
    // the four tokens' activations stay in L1. Each group is read from memory once, by the first pass.
    int64_t group = (128 * 1024) / (k * (int64_t)sizeof(float));
    group = group < 2 ? 2 : group & ~(int64_t)1;
    int64_t pairs_end = n & ~(int64_t)1;
    for (int64_t j0 = 0; j0 < pairs_end; j0 += group) {
        int64_t j1 = j0 + group < pairs_end ? j0 + group : pairs_end;
        int64_t i = 0;
        for (; i + 4 <= m; i += 4) {
            for (int64_t j = j0; j < j1; j += 2) {
                const float *w0 = w + j * ldw;
                const float *ahead = (i == 0 && j + 4 <= n) ? w0 + 2 * ldw : 0;
                block_2x4(x + i * ldx, ldx, w0, w0 + ldw, k, y + i * ldy + j, ldy, ahead, ldw);
            }
        }
        for (; i < m; i++) {
            for (int64_t j = j0; j < j1; j++) y[i * ldy + j] = dot_avx2(x + i * ldx, w + j * ldw, k);
        }
    }
    for (int64_t j = pairs_end; j < n; j++) {
        for (int64_t i = 0; i < m; i++) y[i * ldy + j] = dot_avx2(x + i * ldx, w + j * ldw, k);
    }
}
#endif

void lmc_gemm_nt_small(int64_t m, int64_t n, int64_t k, const float *x, int64_t ldx, const float *w, int64_t ldw,
                       float *y, int64_t ldy) {
#ifdef LMC_X86
    if (lmc_active_isa() >= LMC_ISA_AVX2) {
        gemm_nt_avx2(m, n, k, x, ldx, w, ldw, y, ldy);
        return;
    }
#endif
    for (int64_t j = 0; j < n; j++) {
        for (int64_t i = 0; i < m; i++) y[i * ldy + j] = dot_portable(x + i * ldx, w + j * ldw, k);
    }
}
