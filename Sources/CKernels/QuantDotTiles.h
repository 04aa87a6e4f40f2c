// Tiles of rows × tokens for lmc_matmul_q8 (and the row pairs of lmc_matvec_q8), included by QuantDot.c
// once per instruction-set level. The including file defines:
//   LMC_TILE_TARGET        the function attributes of the level,
//   LMC_TILE(name)         the name of a function at this level,
//   LMC_TILE_DOT_ABS(a, w, x)  the int32 sums of four products of the AVX2 row dots (dot_i8_avx2 with
//                          a = |w| precomputed), as 8 floats,
//   LMC_TILE_DOT_U8(u, x)  the same for unsigned weights below 64 (dot_u8i8_avx2),
//   LMC_TILE_Q5_0_VALUES(blk)  the bytes of q5_0_values_avx2,
//   LMC_TILE_HAS_ZP, LMC_TILE_ZP_INIT(w), LMC_TILE_ZP_DOT(c, u, w)  the shorter form of the 32-value dots
//                          for activations without −128 (QuantDot.c, zp_init_vnni), where the level has it.
//
// Every (row, token) element goes through exactly the float operations of the AVX2 row dot of its type, in
// the same order: per block the same 8-lane integer sums, converted, multiplied by the same scale and added
// into the same accumulator (even and odd blocks apart where the row dot keeps them apart), then the same
// horizontal sum. What a tile shares across its rows and tokens is only work that produces no float result
// of its own: weight unpacking, half-precision scales, activation loads. So a token's products do not
// depend on the batch or the tile it falls in.
//
// R (rows) and T (tokens) are compile-time constants at every call, so the accumulator arrays live in
// registers.

// Q8_0 (34-byte blocks) and Q5_0 (22-byte blocks) rows r0..r0+R against tokens t0..t0+T:
// y[t·ldy + r] for the R × T pairs. `w` points at row r0, `qs`/`d` at token t0.
LMC_TILE_TARGET static inline __attribute__((always_inline)) void
LMC_TILE(tile32)(int q5, int zp, int R, int T, const uint8_t *w, int64_t row_bytes, int64_t nb, const int8_t *qs, int64_t n,
                 const float *d, float *y, int64_t ldy) {
    __m256 acc[4][8][2];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t][0] = acc[r][t][1] = _mm256_setzero_ps();
    const int64_t bs = q5 ? 22 : 34;
    int64_t b = 0;
    // Blocks in pairs: the even one into accumulator 0, the odd one into 1, as the row dots do; a last
    // block of an odd count into accumulator 0.
    for (; b < nb; b += 2) {
        const int e_end = b + 1 < nb ? 2 : 1;
        for (int e = 0; e < e_end; e++) {
            __m256i wv[4], wa[4];
            __m256 ws[4];
            for (int r = 0; r < R; r++) {
                const uint8_t *blk = w + r * row_bytes + (b + e) * bs;
                wv[r] = q5 ? LMC_TILE_Q5_0_VALUES(blk) : _mm256_loadu_si256((const __m256i *)(blk + 2));
                wa[r] = zp ? LMC_TILE_ZP_INIT(wv[r]) : _mm256_sign_epi8(wv[r], wv[r]);
                ws[r] = f16x8_avx2(blk);
            }
            for (int t = 0; t < T; t++) {
                __m256i x = _mm256_loadu_si256((const __m256i *)(qs + t * n + (b + e) * 32));
                if (zp) x = _mm256_xor_si256(x, _mm256_set1_epi8((char)0x80));
                __m256 dx = _mm256_broadcast_ss(d + t * nb + b + e);
                for (int r = 0; r < R; r++) {
                    __m256 p = zp ? LMC_TILE_ZP_DOT(wa[r], x, wv[r]) : LMC_TILE_DOT_ABS(wa[r], wv[r], x);
                    acc[r][t][e] = _mm256_fmadd_ps(p, _mm256_mul_ps(ws[r], dx), acc[r][t][e]);
                }
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[t * ldy + r] = hsum_avx2(_mm256_add_ps(acc[r][t][0], acc[r][t][1]));
}

// Q4_K rows (144-byte super-blocks), as dot_q4_k_avx2: one accumulator per element, and the minimums'
// term summed in float beside it with the same expression.
LMC_TILE_TARGET static inline __attribute__((always_inline)) void
LMC_TILE(tile_q4_k)(int R, int T, const uint8_t *w, int64_t row_bytes, int64_t nb, const int8_t *qs, int64_t n,
                    const float *d, const float *ds, float *y, int64_t ldy) {
    __m256 acc[4][8];
    float mins[4][8];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            acc[r][t] = _mm256_setzero_ps();
            mins[r][t] = 0;
        }
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const int64_t nd = n / 32;
    for (int64_t b = 0; b < nb; b++) {
        float dd[4], dmin[4];
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + r * row_bytes + b * 144;
            dd[r] = f16_avx2(blk);
            dmin[r] = f16_avx2(blk + 2);
        }
        const int64_t k0 = b * 8;
        for (int j = 0; j < 4; j++) {
            __m256i lo[4], hi[4];
            __m256 f1[4], f2[4];
            float mf1[4], mf2[4];
            for (int r = 0; r < R; r++) {
                const uint8_t *blk = w + r * row_bytes + b * 144;
                int s1, m1, s2, m2;
                scale_min_k4(2 * j, blk + 4, &s1, &m1);
                scale_min_k4(2 * j + 1, blk + 4, &s2, &m2);
                __m256i v = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * j));
                lo[r] = _mm256_and_si256(v, m4);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                // dd · s · d[k] is (dd · s) · d[k]: the first product is the row's alone.
                f1[r] = _mm256_set1_ps(dd[r] * (float)s1);
                f2[r] = _mm256_set1_ps(dd[r] * (float)s2);
                mf1[r] = (float)m1;
                mf2[r] = (float)m2;
            }
            for (int t = 0; t < T; t++) {
                const int8_t *x1 = qs + t * n + (k0 + 2 * j) * 32;
                __m256i xa = _mm256_loadu_si256((const __m256i *)x1);
                __m256i xb = _mm256_loadu_si256((const __m256i *)(x1 + 32));
                const float *dt = d + t * nd + k0 + 2 * j, *dst = ds + t * nd + k0 + 2 * j;
                __m256 da = _mm256_broadcast_ss(dt), db = _mm256_broadcast_ss(dt + 1);
                for (int r = 0; r < R; r++) {
                    acc[r][t] = _mm256_fmadd_ps(LMC_TILE_DOT_U8(lo[r], xa), _mm256_mul_ps(f1[r], da), acc[r][t]);
                    acc[r][t] = _mm256_fmadd_ps(LMC_TILE_DOT_U8(hi[r], xb), _mm256_mul_ps(f2[r], db), acc[r][t]);
                    // The statement of dot_q4_k_avx2 (the same contraction into fused multiply-adds).
                    mins[r][t] += dmin[r] * (mf1[r] * dst[0] + mf2[r] * dst[1]);
                }
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[t * ldy + r] = hsum_avx2(acc[r][t]) - mins[r][t];
}

// Q6_K rows (210-byte super-blocks), as dot_q6_k_avx2.
LMC_TILE_TARGET static inline __attribute__((always_inline)) void
LMC_TILE(tile_q6_k)(int R, int T, const uint8_t *w, int64_t row_bytes, int64_t nb, const int8_t *qs, int64_t n,
                    const float *d, float *y, int64_t ldy) {
    __m256 acc[4][8];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
    const int64_t nd = n / 32;
    for (int64_t b = 0; b < nb; b++) {
        __m256 dd[4];
        for (int r = 0; r < R; r++) dd[r] = f16x8_avx2(w + r * row_bytes + b * 210 + 208);
        for (int half = 0; half < 2; half++) {
            for (int g = 0; g < 4; g++) {
                __m256i v[4], va[4];
                __m256 sc[4];
                for (int r = 0; r < R; r++) {
                    const uint8_t *blk = w + r * row_bytes + b * 210;
                    const uint8_t *l = blk + 64 * half + 32 * (g & 1);
                    __m256i lv = _mm256_loadu_si256((const __m256i *)l);
                    __m256i low = g < 2 ? _mm256_and_si256(lv, m4) : _mm256_and_si256(_mm256_srli_epi16(lv, 4), m4);
                    __m256i h = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * half));
                    __m256i hb = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * g)), m2);
                    v[r] = _mm256_sub_epi8(_mm256_or_si256(low, _mm256_slli_epi16(hb, 4)), off);
                    va[r] = _mm256_sign_epi8(v[r], v[r]);
                    const int8_t *s = (const int8_t *)(blk + 192) + 8 * half + 2 * g;
                    sc[r] = _mm256_setr_ps(s[0], s[0], s[0], s[0], s[1], s[1], s[1], s[1]);
                }
                const int64_t k = b * 8 + half * 4 + g;
                for (int t = 0; t < T; t++) {
                    __m256i x = _mm256_loadu_si256((const __m256i *)(qs + t * n + k * 32));
                    __m256 dx = _mm256_broadcast_ss(d + t * nd + k);
                    for (int r = 0; r < R; r++) {
                        // f = dd · d[k], then f · s: the row dot's two roundings.
                        __m256 scale = _mm256_mul_ps(_mm256_mul_ps(dd[r], dx), sc[r]);
                        acc[r][t] = _mm256_fmadd_ps(LMC_TILE_DOT_ABS(va[r], v[r], x), scale, acc[r][t]);
                    }
                }
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[t * ldy + r] = hsum_avx2(acc[r][t]);
}

// One tile of `type` (6, 8, 12 or 14); R and T constants.
LMC_TILE_TARGET static inline __attribute__((always_inline)) void
LMC_TILE(tile)(int32_t type, int zp, int R, int T, const uint8_t *w, int64_t row_bytes, int64_t n, const int8_t *qs,
               const float *d, const float *ds, float *y, int64_t ldy) {
    switch (type) {
    case 6: LMC_TILE(tile32)(1, zp, R, T, w, row_bytes, n / 32, qs, n, d, y, ldy); break;
    case 8: LMC_TILE(tile32)(0, zp, R, T, w, row_bytes, n / 32, qs, n, d, y, ldy); break;
    case 12: LMC_TILE(tile_q4_k)(R, T, w, row_bytes, n / 256, qs, n, d, ds, y, ldy); break;
    case 14: LMC_TILE(tile_q6_k)(R, T, w, row_bytes, n / 256, qs, n, d, y, ldy); break;
    }
}

// Rows r0..<r0 + rows (rows ≤ R) against tokens 0..<tokens in tiles of R × T, then narrower ones;
// `w` at row r0, `y` at (token 0, row r0).
LMC_TILE_TARGET static inline __attribute__((always_inline)) void
LMC_TILE(rows_tokens_of)(int32_t type, int zp, int R, int T, int rows, const uint8_t *w, int64_t row_bytes, int64_t n,
                         int64_t tokens, const int8_t *qs, const float *d, const float *ds, float *y, int64_t ldy) {
    const int64_t nd = n / 32;
    if (rows == R) {
        int64_t t = 0;
        for (; t + T <= tokens; t += T)
            LMC_TILE(tile)(type, zp, R, T, w, row_bytes, n, qs + t * n, d + t * nd, ds + t * nd, y + t * ldy, ldy);
        for (; t < tokens; t++)
            LMC_TILE(tile)(type, zp, R, 1, w, row_bytes, n, qs + t * n, d + t * nd, ds + t * nd, y + t * ldy, ldy);
        return;
    }
    for (int r = 0; r < rows; r++) {
        const uint8_t *wr = w + r * row_bytes;
        int64_t t = 0;
        for (; t + T <= tokens; t += T)
            LMC_TILE(tile)(type, zp, 1, T, wr, row_bytes, n, qs + t * n, d + t * nd, ds + t * nd, y + t * ldy + r, ldy);
        for (; t < tokens; t++)
            LMC_TILE(tile)(type, zp, 1, 1, wr, row_bytes, n, qs + t * n, d + t * nd, ds + t * nd, y + t * ldy + r, ldy);
    }
}

// The rows of a full tile of `type` at this level.
static inline int LMC_TILE(tile_rows)(int32_t type) { return type == 12 || type == 14 ? LMC_TILE_ROWS_K : LMC_TILE_ROWS_32; }

LMC_TILE_TARGET static void LMC_TILE(rows_tokens)(int32_t type, int zp, int rows, const uint8_t *w, int64_t row_bytes,
                                                 int64_t n, int64_t tokens, const int8_t *qs, const float *d,
                                                 const float *ds, float *y, int64_t ldy) {
#define LMC_TILE_ROWS_TOKENS(z) \
    switch (type) { \
    case 6: LMC_TILE(rows_tokens_of)(6, z, LMC_TILE_ROWS_32, LMC_TILE_TOKENS_32, rows, w, row_bytes, n, tokens, qs, d, ds, y, ldy); break; \
    case 8: LMC_TILE(rows_tokens_of)(8, z, LMC_TILE_ROWS_32, LMC_TILE_TOKENS_32, rows, w, row_bytes, n, tokens, qs, d, ds, y, ldy); break; \
    case 12: LMC_TILE(rows_tokens_of)(12, z, LMC_TILE_ROWS_K, LMC_TILE_TOKENS_K, rows, w, row_bytes, n, tokens, qs, d, ds, y, ldy); break; \
    case 14: LMC_TILE(rows_tokens_of)(14, z, LMC_TILE_ROWS_K, LMC_TILE_TOKENS_K, rows, w, row_bytes, n, tokens, qs, d, ds, y, ldy); break; \
    }
#if LMC_TILE_HAS_ZP
    if (zp) {
        LMC_TILE_ROWS_TOKENS(1)
        return;
    }
#endif
    (void)zp;
    LMC_TILE_ROWS_TOKENS(0)
#undef LMC_TILE_ROWS_TOKENS
}
