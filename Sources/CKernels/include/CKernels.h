// Quantized dot-product kernels for the Kernels module.
//
// Swift has no per-function target attributes, so the AVX2/FMA variants of the innermost loops
// live here, next to portable versions, and are chosen at run time from CPUID. Everything else
// (threading, dequantization, attention, norms) is Swift in the Kernels module.
//
// Activation format ("Q8 activations"): a row of n floats (n a multiple of 32) is stored as
// n int8 values `qs`, one float scale `d` per 32 values (x ≈ d · q), and one float `ds` per 32
// values equal to d · Σq (used by formats whose blocks carry a minimum).
#ifndef LMCACHE_CKERNELS_H
#define LMCACHE_CKERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Instruction-set levels the kernels know.
enum {
    LMC_ISA_GENERIC = 0,
    LMC_ISA_AVX2 = 1,
    /// AVX2 plus AVX-512 F/BW/VL/VNNI: faster batched products with the same results as AVX2.
    LMC_ISA_AVX512_VNNI = 2,
};

/// The most the environment allows: `LMCACHE_ISA=generic` (or `portable`) or `avx2` caps every kernel's
/// level for the whole process (to run the AVX2 code on an AVX-512 machine, e.g. to check that both give
/// the same bits); unset or anything else, no cap.
int lmc_isa_cap(void);

/// The best level this CPU supports (CPUID), capped by `lmc_isa_cap`, whatever is forced.
int lmc_cpu_isa(void);

/// The level the kernels use now.
int lmc_active_isa(void);

/// Forces a level on the calling thread only (for tests); a level the CPU lacks, or a negative value,
/// restores automatic choice.
void lmc_force_isa(int level);

/// Quantizes `n` floats (n % 32 == 0) to Q8 activations.
void lmc_quantize_q8(const float *x, int64_t n, int8_t *qs, float *d, float *ds);

/// Quantizes like ggml's Q8_0 activations: one scale per 32 values, rounded to half precision. The AVX2
/// path writes the portable path's bytes (rounding ties to even either way).
void lmc_quantize_q8_0_like(const float *x, int64_t n, int8_t *qs, float *d, float *ds);

/// Quantizes like ggml's Q8_K activations (n % 256 == 0): one float scale per 256 values, written to
/// all eight 32-value entries of `d`. The AVX2 path writes the portable path's bytes.
void lmc_quantize_q8_k_like(const float *x, int64_t n, int8_t *qs, float *d, float *ds);

/// Rounds `n` floats to the nearest half-precision value, in place.
void lmc_round_f16(float *x, int64_t n);

/// Converts `n` floats to IEEE half-precision bits (round to nearest even).
void lmc_convert_f32_to_f16(const float *x, uint16_t *y, int64_t n);

/// Converts `n` half-precision values to floats.
void lmc_convert_f16_to_f32(const uint16_t *x, float *y, int64_t n);

/// `f` rounded to the nearest half-precision value.
float lmc_round_f16_scalar(float f);

/// Whether `lmc_matvec_q8` supports a GGML type id (Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K).
int lmc_matvec_supports(int32_t ggml_type);

/// y[r - row_begin] = dot(row r of w, x) for r in [row_begin, row_end).
///
/// `w` points at row 0 of a matrix whose rows are `row_bytes` apart; each row holds `n` elements of
/// `ggml_type`. The activation (`qs`, `d`, `ds`) holds `n` elements in Q8 activation form.
void lmc_matvec_q8(int32_t ggml_type, const void *w, int64_t row_bytes, int64_t row_begin, int64_t row_end,
                   int64_t n, const int8_t *qs, const float *d, const float *ds, float *y);

/// Y[j][r] = dot(row r of w, activation j) for rows [row_begin, row_end) and tokens 0..<tokens:
/// the batched form of `lmc_matvec_q8`, with the same arithmetic per element (so a token's result does not
/// depend on the batch it is in). Activation j starts at qs + j·n, d + j·n/32, ds + j·n/32; Y[j][r] is
/// y[j·ldy + r].
void lmc_matmul_q8(int32_t ggml_type, const void *w, int64_t row_bytes, int64_t row_begin, int64_t row_end,
                   int64_t n, int64_t tokens, const int8_t *qs, const float *d, const float *ds, float *y,
                   int64_t ldy);

/// Y = X · Wᵀ for a few tokens: Y[i][j] = Σ_p X[i][p] · W[j][p] for i < m, j < n, with X[i] at
/// x + i·ldx, W[j] at w + j·ldw and Y[i][j] at y[i·ldy + j]. Each element is computed in the same order
/// whatever m is, so a token's result does not depend on the other tokens of the call.
void lmc_gemm_nt_small(int64_t m, int64_t n, int64_t k, const float *x, int64_t ldx, const float *w, int64_t ldw,
                       float *y, int64_t ldy);

/// gate[i] = gelu_tanh(gate[i]) · up[i], in Float.
void lmc_geglu_tanh(float *gate, const float *up, int64_t n);

/// x = softmax(x) over n floats (−∞ entries become 0).
void lmc_softmax(float *x, int64_t n);

/// gate[i] = gelu_tanh(gate[i]) · up[i] as llama.cpp's CPU backend computes it: GELU read from a
/// table of half-precision outputs indexed by the half-precision input (inputs beyond ±10 bypass it).
void lmc_geglu_tanh_half_table(float *gate, const float *up, int64_t n);

/// x = softmax(x) over n floats as llama.cpp's CPU backend computes a row: its exponential, sums of
/// 8-lane blocks aligned to the row's start (x[0] is the row's element `phase` mod 8) accumulated in
/// double, and one multiplication by the reciprocal of the sum. −∞ entries become 0.
void lmc_softmax_aligned(float *x, int64_t n, int64_t phase);

/// Whether llama.cpp's order is implemented for a GGML type id: F32 and F16 (with `lmc_scores_ordered`),
/// Q8_0 and Q5_0 (`lmc_matmul_ordered`), Q4_K and Q6_K (`lmc_matmul_ordered_k`).
int lmc_ordered_supports(int32_t ggml_type);

/// `lmc_matmul_q8` in llama.cpp's summation order (OrderedProducts.c) for Q8_0 and Q5_0 rows: Y[j][r] =
/// y[j·ldy + r] for rows [row_begin, row_end) and tokens 0..<tokens; activation j at qs + j·n,
/// d + j·n/32, quantized by `lmc_quantize_q8_0_like`.
void lmc_matmul_ordered(int32_t ggml_type, const void *w, int64_t row_bytes, int64_t row_begin, int64_t row_end,
                        int64_t n, int64_t tokens, const int8_t *qs, const float *d, float *y, int64_t ldy);

/// Quantizes `n` floats (n % 256 == 0) as llama.cpp's K-quant activations: per 256 values a float
/// scale d, int8 values and the sums of each 16 (`bsums`, n/16 of them). `grouped`: as its 4×8
/// quantizer of rows taken four at a time (the largest magnitude maps to −127 when a positive value
/// has it, else to +127); otherwise as its row quantizer (the first value of largest magnitude maps
/// to −127).
void lmc_quantize_q8_k_ordered(const float *x, int64_t n, int grouped, int8_t *qs, float *d, int16_t *bsums);

/// `lmc_matmul_ordered` for Q4_K and Q6_K rows, against activations from `lmc_quantize_q8_k_ordered`
/// (token j at qs + j·n, d + j·n/256, bsums + j·n/16; for Q4_K, tokens below tokens − tokens mod 4
/// quantized `grouped`).
void lmc_matmul_ordered_k(int32_t ggml_type, const void *w, int64_t row_bytes, int64_t row_begin, int64_t row_end,
                          int64_t n, int64_t tokens, const int8_t *qs, const float *d, const int16_t *bsums,
                          float *y, int64_t ldy);

/// s[c] = scale · (q · k_c) for c < n, k_c at k + c·ldk, `hd` values each, in llama.cpp's order for
/// half-precision operands: eight lanes by index mod 8 (a batch), or its one-token row dot
/// (`one_token`: 32 slots by index mod 32, see OrderedProducts.c).
void lmc_scores_ordered(const float *q, const float *k, int64_t ldk, int64_t n, int64_t hd, float scale, int one_token,
                        float *s);

/// y[r] = w_r · x for r < rows (w_r at w + r·ldw, n values) in llama.cpp's order for F32/F16 weights:
/// as `lmc_scores_ordered`, the one-token tail (n mod 32 values) added in double when `tail_double`
/// (F16 operands), else in float.
void lmc_dot_ordered_f32(const float *w, int64_t ldw, int64_t rows, const float *x, int64_t n, int one_token,
                         int tail_double, float *y);

/// Adds p[j] · v_j (v_j at v + j·ldv, `hd` values) to slot (first + j) mod 8 (mod 32 with `one_token`)
/// of `lanes` (8 or 32 slots × hd floats, slot-major), j in order: P·V in llama.cpp's order, one span
/// of cells at a time.
void lmc_values_ordered_accumulate(const float *p, const float *v, int64_t ldv, int64_t n, int64_t first, int64_t hd,
                                   int one_token, float *lanes);

/// out[i] = the slots of element i summed in llama.cpp's order.
void lmc_values_ordered_finish(const float *lanes, int64_t hd, int one_token, float *out);

/// RoPE of `heads` heads of `head_dim` floats (the first `dims` of each rotated, dims ≤ 512) at
/// `position`, as llama.cpp computes it: angles by the running product θ ← θ · step from θ = position,
/// each divided by `factors[i]` when given, and the rotation in fused multiply-adds. `neox`: element i
/// pairs with i + dims/2; otherwise 2i with 2i + 1.
void lmc_rope_ordered(float *x, int64_t heads, int64_t head_dim, int64_t dims, int64_t position, float step,
                      const float *factors, int neox);

/// Pages of one KV head's rows: position t is at pages[t / page_size] + (t % page_size) · row_stride + offset.
typedef struct {
    const float *const *pages;
    int64_t page_size;
    int64_t row_stride;
    int64_t offset;
} lmc_kv_view;

/// Code paths of `lmc_attend` (all give the same bits).
enum {
    LMC_ATTEND_PORTABLE = 0,
    LMC_ATTEND_AVX2 = 1,
    LMC_ATTEND_AVX512 = 2,
};

/// Batch-invariant attention of `m` query vectors of `hd` floats (hd % 16 == 0; query i at q + i·q_stride)
/// that share one KV head. Query i attends keys first[i]...last[i] (absolute positions, inclusive):
/// out_i = Σ_t p_i[t] · v_t with p_i = softmax(scale · q_i · k_t); out_i at out + i·out_stride (hd floats);
/// an empty range (first > last) gives zeros. Only positions inside some query's range are read.
/// `scratch` holds at least lmc_attend_scratch_floats(m, max span) floats, span = last − first + 1.
/// Every output depends only on its own query, its key range and the K/V values: not on m, the other
/// queries or their order, page boundaries, or the code path (the fixed arithmetic is in Attention.c).
/// Fastest when queries with the same range are adjacent (e.g. the heads of one token).
void lmc_attend(const float *q, int64_t q_stride, int64_t m, const int64_t *first, const int64_t *last,
                lmc_kv_view keys, lmc_kv_view values, int64_t hd, float scale, float *out, int64_t out_stride,
                float *scratch);

/// Scratch floats `lmc_attend` needs for `m` queries whose spans are at most `max_span` keys.
int64_t lmc_attend_scratch_floats(int64_t m, int64_t max_span);

/// The code path `lmc_attend` takes on this thread: the best the CPU has (AVX-512F, AVX2+FMA, portable),
/// portable under lmc_force_isa(LMC_ISA_GENERIC), lowered by `lmc_attend_force_level`.
int lmc_attend_level(void);

/// Caps the calling thread's `lmc_attend` path at `level` (for tests); negative restores automatic choice.
void lmc_attend_force_level(int level);

/// The exponential `lmc_attend`'s softmax uses (Attention.c defines it step by step): the same bits on
/// every ISA and platform; 0 below −87.
float lmc_attend_exp(float x);

/// Converts IEEE half-precision bits to float.
float lmc_f16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif

#endif
