// Tiles of rows × tokens for lmc_matmul_q8 (and the row pairs of lmc_matvec_q8), included by QuantDot.c
// once per instruction-set level. The including file defines:
//   LMC_TILE_TARGET        the function attributes of the level,
//   LMC_TILE(name)         the name of a function at this level,
//   LMC_TILE_DOT_ABS(a, w, x)  the int32 sums of four products of the AVX2 row dots (dot_i8_avx2 with
//                          a = |w| precomputed), as 8 floats,
//   LMC_TILE_DOT_U8(u, x)  the same for unsigned weights below 64 (dot_u8i8_avx2),
//   LMC_TILE_Q5_0_VALUES(blk)  the bytes of q5_0_values_avx2,
//   LMC_TILE_HAS_ZP, LMC_TILE_ZP_INIT(w), LMC_TILE_ZP_DOT(c, u, w)  the shorter form of the 32-value dots
//                          for activations without −128 (QuantDot.c, zp_init_vnni), where the level has it,
//   LMC_TILE_SPLIT_32      1 to run the 32-value tiles' even blocks and odd blocks as two passes (tile32),
//   LMC_TILE_BROADCAST_ONE(p)  the float at p in 8 lanes, broadcast from memory.
//
// Every (row, token) element goes through exactly the float operations of the AVX2 row dot of its type, in
// the same order: per block the same 8-lane integer sums, converted, multiplied by the same scale and added
// into the same accumulator (even and odd blocks apart where the row dot keeps them apart), then the same
// horizontal sum. What a tile shares across its rows and tokens is weight unpacking, half-precision scales,
// activation loads, and factors of a scale that the row dot rounds on their own (Q4_K's dd · s, formed
// for all sub-blocks at once with the same single rounding each). Lanes may be kept in another order
// (Q6_K) when every lane sees its own operations and the order is restored before the horizontal sum.
// So a token's products do not depend on the batch or the tile it falls in.
//
// R (rows) and T (tokens) are compile-time constants at every call, so the accumulator arrays live in
// registers.

// One 32-value block b of rows r0..r0+R into the accumulators acc[r][t] of tokens t0..t0+T. The block's
// scale for (r, t) is ws[r] · d[t], formed per element (pre = 0) or, with pre = 1, for 8 tokens at once
// from the tokens' scales transposed (dT[b · ldt + t], 8 readable from each row) and broadcast from
// memory: the same products, one multiplication for the tile's tokens instead of one per element.
LMC_TILE_TARGET static inline __attribute__((always_inline)) void
LMC_TILE(block32)(int q5, int zp, int pre, int R, int T, const uint8_t *w, int64_t row_bytes, int64_t b, int64_t nb,
                  const int8_t *qs, int64_t n, const float *d, const float *dT, int64_t ldt, __m256 acc[4][8]) {
    const int64_t bs = q5 ? 22 : 34;
    __m256i wv[4], wa[4];
    __m256 ws[4];
    float sc[4][8] __attribute__((aligned(32)));
    for (int r = 0; r < R; r++) {
        const uint8_t *blk = w + r * row_bytes + b * bs;
        wv[r] = q5 ? LMC_TILE_Q5_0_VALUES(blk) : _mm256_loadu_si256((const __m256i *)(blk + 2));
        wa[r] = zp ? LMC_TILE_ZP_INIT(wv[r]) : _mm256_sign_epi8(wv[r], wv[r]);
        ws[r] = f16x8_avx2(blk);
        if (pre) _mm256_store_ps(sc[r], _mm256_mul_ps(ws[r], _mm256_loadu_ps(dT + b * ldt)));
    }
    for (int t = 0; t < T; t++) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(qs + t * n + b * 32));
        if (zp) x = _mm256_xor_si256(x, _mm256_set1_epi8((char)0x80));
        __m256 dx = pre ? _mm256_setzero_ps() : _mm256_broadcast_ss(d + t * nb + b);
        for (int r = 0; r < R; r++) {
            __m256 p = zp ? LMC_TILE_ZP_DOT(wa[r], x, wv[r]) : LMC_TILE_DOT_ABS(wa[r], wv[r], x);
            acc[r][t] = _mm256_fmadd_ps(p, pre ? LMC_TILE_BROADCAST_ONE(&sc[r][t]) : _mm256_mul_ps(ws[r], dx), acc[r][t]);
        }
    }
}

// Q8_0 (34-byte blocks) and Q5_0 (22-byte blocks) rows r0..r0+R against tokens t0..t0+T:
// y[t·ldy + r] for the R × T pairs. `w` points at row r0, `qs`/`d` at token t0, `dT` (read where
// LMC_TILE_SPLIT_32) at the tile's first token in the transposed scales.
//
// The row dots add even blocks into one accumulator and odd ones into another (a last block of an odd
// count into the even one), then hsum(even + odd). The tile does the same, either block by block with
// both sets of accumulators live, or (LMC_TILE_SPLIT_32) all even blocks and then all odd ones, which
// halves the registers the accumulators hold so that a tile can span more tokens: each accumulator
// receives the same blocks in the same order either way.
LMC_TILE_TARGET static inline __attribute__((always_inline)) void
LMC_TILE(tile32)(int q5, int zp, int R, int T, const uint8_t *w, int64_t row_bytes, int64_t nb, const int8_t *qs, int64_t n,
                 const float *d, const float *dT, int64_t ldt, float *y, int64_t ldy) {
#if LMC_TILE_SPLIT_32
    __m256 acc[4][8], even[4][8];
    for (int e = 0; e < 2; e++) {
        for (int r = 0; r < R; r++)
            for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
        for (int64_t b = e; b < nb; b += 2) LMC_TILE(block32)(q5, zp, 1, R, T, w, row_bytes, b, nb, qs, n, d, dT, ldt, acc);
        if (e == 0)
            for (int r = 0; r < R; r++)
                for (int t = 0; t < T; t++) even[r][t] = acc[r][t];
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[t * ldy + r] = hsum_avx2(_mm256_add_ps(even[r][t], acc[r][t]));
#else
    (void)dT, (void)ldt;
    __m256 acc[2][4][8];
    for (int e = 0; e < 2; e++)
        for (int r = 0; r < R; r++)
            for (int t = 0; t < T; t++) acc[e][r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b += 2) {
        LMC_TILE(block32)(q5, zp, 0, R, T, w, row_bytes, b, nb, qs, n, d, 0, 0, acc[0]);
        if (b + 1 < nb) LMC_TILE(block32)(q5, zp, 0, R, T, w, row_bytes, b + 1, nb, qs, n, d, 0, 0, acc[1]);
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[t * ldy + r] = hsum_avx2(_mm256_add_ps(acc[0][r][t], acc[1][r][t]));
#endif
}

// Q4_K rows (144-byte super-blocks), as dot_q4_k_avx2: one accumulator per element, and the minimums'
// term summed in float beside it with the same expression. The products dd · s · d[k] are (dd · s) · d[k]
// as in the row dot: dd · s once per row and super-block for its 8 sub-blocks, then · d[k] for a token's
// 8 at once. With T a multiple of 4, the minimums' terms of the T tokens are lanes of vectors (the same
// statement on vector types, so the same contraction into fused multiply-adds per lane), reading the
// tokens' ds transposed: dsT[k · ldt + t].
LMC_TILE_TARGET static inline __attribute__((always_inline)) void
LMC_TILE(tile_q4_k)(int R, int T, const uint8_t *w, int64_t row_bytes, int64_t nb, const int8_t *qs, int64_t n,
                    const float *d, const float *ds, const float *dst_t, int64_t ldt, float *y, int64_t ldy) {
    __m256 acc[4][8];
    float mins[4][8];
    lmc_v8f mins8[4];
    lmc_v4f mins4[4];
    const int vec = T == 8 ? 8 : T == 4 ? 4 : 0;
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < T; t++) {
            acc[r][t] = _mm256_setzero_ps();
            mins[r][t] = 0;
        }
        mins8[r] = (lmc_v8f){0};
        mins4[r] = (lmc_v4f){0};
    }
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const int64_t nd = n / 32;
    for (int64_t b = 0; b < nb; b++) {
        const int64_t k0 = b * 8;
        float f[4][8][8] __attribute__((aligned(32)));
        uint8_t mb[4][8];
        float dmin[4];
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + r * row_bytes + b * 144;
            float dd = f16_avx2(blk);
            dmin[r] = f16_avx2(blk + 2);
            uint32_t u[4];
            unpack_q4_k_scales(blk + 4, u);
            __m256 ds8 = _mm256_mul_ps(_mm256_set1_ps(dd),
                                       _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)u))));
            for (int t = 0; t < T; t++) _mm256_store_ps(f[r][t], _mm256_mul_ps(ds8, _mm256_loadu_ps(d + t * nd + k0)));
            memcpy(mb[r], u + 2, 8);
        }
        for (int j = 0; j < 4; j++) {
            __m256i lo[4], hi[4];
            for (int r = 0; r < R; r++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(w + r * row_bytes + b * 144 + 16 + 32 * j));
                lo[r] = _mm256_and_si256(v, m4);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            }
            for (int t = 0; t < T; t++) {
                const int8_t *x1 = qs + t * n + (k0 + 2 * j) * 32;
                __m256i xa = _mm256_loadu_si256((const __m256i *)x1);
                __m256i xb = _mm256_loadu_si256((const __m256i *)(x1 + 32));
                for (int r = 0; r < R; r++) {
                    acc[r][t] = _mm256_fmadd_ps(LMC_TILE_DOT_U8(lo[r], xa), _mm256_broadcast_ss(&f[r][t][2 * j]), acc[r][t]);
                    acc[r][t] = _mm256_fmadd_ps(LMC_TILE_DOT_U8(hi[r], xb), _mm256_broadcast_ss(&f[r][t][2 * j + 1]), acc[r][t]);
                }
            }
            const int64_t k = k0 + 2 * j;
            for (int r = 0; r < R; r++) {
                const float m1 = (float)mb[r][2 * j], m2 = (float)mb[r][2 * j + 1];
                // The statement of dot_q4_k_avx2 (the same contraction into fused multiply-adds).
                if (vec == 8) {
                    lmc_v8f ds1, ds2;
                    memcpy(&ds1, dst_t + k * ldt, 32);
                    memcpy(&ds2, dst_t + (k + 1) * ldt, 32);
                    const lmc_v8f dmin8 = {dmin[r], dmin[r], dmin[r], dmin[r], dmin[r], dmin[r], dmin[r], dmin[r]};
                    const lmc_v8f m18 = {m1, m1, m1, m1, m1, m1, m1, m1}, m28 = {m2, m2, m2, m2, m2, m2, m2, m2};
                    mins8[r] += dmin8 * (m18 * ds1 + m28 * ds2);
                } else if (vec == 4) {
                    lmc_v4f ds1, ds2;
                    memcpy(&ds1, dst_t + k * ldt, 16);
                    memcpy(&ds2, dst_t + (k + 1) * ldt, 16);
                    const lmc_v4f dmin4 = {dmin[r], dmin[r], dmin[r], dmin[r]};
                    const lmc_v4f m14 = {m1, m1, m1, m1}, m24 = {m2, m2, m2, m2};
                    mins4[r] += dmin4 * (m14 * ds1 + m24 * ds2);
                } else {
                    for (int t = 0; t < T; t++) {
                        const float *dst = ds + t * nd + k;
                        mins[r][t] += dmin[r] * (m1 * dst[0] + m2 * dst[1]);
                    }
                }
            }
        }
    }
    for (int r = 0; r < R; r++) {
        if (vec == 8) memcpy(mins[r], &mins8[r], 32);
        if (vec == 4) memcpy(mins[r], &mins4[r], 16);
        for (int t = 0; t < T; t++) y[t * ldy + r] = hsum_avx2(acc[r][t]) - mins[r][t];
    }
}

// Q6_K rows (210-byte super-blocks), as dot_q6_k_avx2. The lanes are kept in the order
// 0, 4, 1, 5, 2, 6, 3, 7 of the row dot's (LMC_Q6_K_LANES), so that the scale of a group of 32 values,
// (dd · d[k]) · s[2g] for the row dot's lanes 0-3 and (dd · d[k]) · s[2g + 1] for 4-7, alternates and
// comes from memory with one broadcast of its two values; the activations arrive in that order (`xs`,
// see lmc_tile_aux), the weights are put in it as they are loaded, and the accumulators are put back in
// the row dot's order before its horizontal sum. Every lane sees the row dot's operations for its lane.
// With zp, `xs` holds the activations with the top bit flipped (x + 128 unsigned, the shorter form).
LMC_TILE_TARGET static inline __attribute__((always_inline)) void
LMC_TILE(tile_q6_k)(int zp, int R, int T, const uint8_t *w, int64_t row_bytes, int64_t nb, const uint8_t *xs,
                    int64_t n, const float *d, float *y, int64_t ldy) {
    __m256 acc[4][8];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
    const __m256i lanes = LMC_Q6_K_LANES;
    const int64_t nd = n / 32;
    for (int64_t b = 0; b < nb; b++) {
        __m256 dd[4];
        for (int r = 0; r < R; r++) dd[r] = f16x8_avx2(w + r * row_bytes + b * 210 + 208);
        for (int half = 0; half < 2; half++) {
            // sp[r][t][2g], sp[r][t][2g + 1]: the two scales of group g (f · s[2g], f · s[2g + 1]).
            float sp[4][8][8] __attribute__((aligned(32)));
            const __m256i dup = half ? _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7) : _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
            __m256i l0[4], l1[4], h[4];
            for (int r = 0; r < R; r++) {
                const uint8_t *blk = w + r * row_bytes + b * 210;
                const __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 192 + 8 * half))));
                for (int t = 0; t < T; t++) {
                    const __m256 f = _mm256_mul_ps(dd[r], _mm256_permutevar8x32_ps(_mm256_loadu_ps(d + t * nd + b * 8), dup));
                    _mm256_store_ps(sp[r][t], _mm256_mul_ps(f, sc));
                }
                l0[r] = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(blk + 64 * half)), lanes);
                l1[r] = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(blk + 64 * half + 32)), lanes);
                h[r] = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * half)), lanes);
            }
            for (int g = 0; g < 4; g++) {
                __m256i v[4], va[4];
                for (int r = 0; r < R; r++) {
                    const __m256i lv = g & 1 ? l1[r] : l0[r];
                    __m256i low = g < 2 ? _mm256_and_si256(lv, m4) : _mm256_and_si256(_mm256_srli_epi16(lv, 4), m4);
                    __m256i hb = _mm256_and_si256(_mm256_srl_epi16(h[r], _mm_cvtsi32_si128(2 * g)), m2);
                    v[r] = _mm256_sub_epi8(_mm256_or_si256(low, _mm256_slli_epi16(hb, 4)), off);
                    va[r] = zp ? LMC_TILE_ZP_INIT(v[r]) : _mm256_sign_epi8(v[r], v[r]);
                }
                const int64_t k = b * 8 + half * 4 + g;
                for (int t = 0; t < T; t++) {
                    const __m256i x = _mm256_loadu_si256((const __m256i *)(xs + t * n + k * 32));
                    for (int r = 0; r < R; r++) {
                        const __m256 scale = LMC_TILE_BROADCAST_PAIR(&sp[r][t][2 * g]);
                        __m256 p = zp ? LMC_TILE_ZP_DOT(va[r], x, v[r]) : LMC_TILE_DOT_ABS(va[r], v[r], x);
                        acc[r][t] = _mm256_fmadd_ps(p, scale, acc[r][t]);
                    }
                }
            }
        }
    }
    const __m256i back = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[t * ldy + r] = hsum_avx2(_mm256_permutevar8x32_ps(acc[r][t], back));
}

// One tile of `type` (6, 8, 12 or 14); R and T constants.
LMC_TILE_TARGET static inline __attribute__((always_inline)) void
LMC_TILE(tile)(int32_t type, int zp, int R, int T, const uint8_t *w, int64_t row_bytes, int64_t n, const int8_t *qs,
               const float *d, const float *ds, const lmc_tile_aux *aux, int64_t t0, float *y, int64_t ldy) {
    switch (type) {
    // The transposed scales exist only where LMC_TILE_SPLIT_32 reads them.
    case 6: LMC_TILE(tile32)(1, zp, R, T, w, row_bytes, n / 32, qs, n, d, aux->dst ? aux->dst + t0 : 0, aux->ldt, y, ldy); break;
    case 8: LMC_TILE(tile32)(0, zp, R, T, w, row_bytes, n / 32, qs, n, d, aux->dst ? aux->dst + t0 : 0, aux->ldt, y, ldy); break;
    case 12: LMC_TILE(tile_q4_k)(R, T, w, row_bytes, n / 256, qs, n, d, ds, aux->dst + t0, aux->ldt, y, ldy); break;
    case 14: LMC_TILE(tile_q6_k)(zp, R, T, w, row_bytes, n / 256, aux->xs + t0 * n, n, d, y, ldy); break;
    }
}

// Rows r0..<r0 + rows (rows ≤ R) against tokens 0..<tokens in tiles of R × T, then narrower ones;
// `w` at row r0, `y` at (token 0, row r0).
LMC_TILE_TARGET static inline __attribute__((always_inline)) void
LMC_TILE(rows_tokens_of)(int32_t type, int zp, int R, int T, int rows, const uint8_t *w, int64_t row_bytes, int64_t n,
                         int64_t tokens, const int8_t *qs, const float *d, const float *ds, const lmc_tile_aux *aux,
                         float *y, int64_t ldy) {
    const int64_t nd = n / 32;
    if (rows == R) {
        int64_t t = 0;
        for (; t + T <= tokens; t += T)
            LMC_TILE(tile)(type, zp, R, T, w, row_bytes, n, qs + t * n, d + t * nd, ds + t * nd, aux, t, y + t * ldy, ldy);
        // The 32-value formats' tiles of 8 tokens leave up to 7: half a tile, then one at a time.
        if (T == 8 && (type == 6 || type == 8))
            for (; t + 4 <= tokens; t += 4)
                LMC_TILE(tile)(type, zp, R, 4, w, row_bytes, n, qs + t * n, d + t * nd, ds + t * nd, aux, t, y + t * ldy, ldy);
        for (; t < tokens; t++)
            LMC_TILE(tile)(type, zp, R, 1, w, row_bytes, n, qs + t * n, d + t * nd, ds + t * nd, aux, t, y + t * ldy, ldy);
        return;
    }
    for (int r = 0; r < rows; r++) {
        const uint8_t *wr = w + r * row_bytes;
        int64_t t = 0;
        for (; t + T <= tokens; t += T)
            LMC_TILE(tile)(type, zp, 1, T, wr, row_bytes, n, qs + t * n, d + t * nd, ds + t * nd, aux, t, y + t * ldy + r, ldy);
        if (T == 8 && (type == 6 || type == 8))
            for (; t + 4 <= tokens; t += 4)
                LMC_TILE(tile)(type, zp, 1, 4, wr, row_bytes, n, qs + t * n, d + t * nd, ds + t * nd, aux, t, y + t * ldy + r, ldy);
        for (; t < tokens; t++)
            LMC_TILE(tile)(type, zp, 1, 1, wr, row_bytes, n, qs + t * n, d + t * nd, ds + t * nd, aux, t, y + t * ldy + r, ldy);
    }
}

// The rows of a full tile of `type` at this level.
static inline int LMC_TILE(tile_rows)(int32_t type) {
    return type == 12 ? LMC_TILE_ROWS_K : type == 14 ? LMC_TILE_ROWS_Q6_K : LMC_TILE_ROWS_32;
}

LMC_TILE_TARGET static void LMC_TILE(rows_tokens)(int32_t type, int zp, int rows, const uint8_t *w, int64_t row_bytes,
                                                 int64_t n, int64_t tokens, const int8_t *qs, const float *d,
                                                 const float *ds, const lmc_tile_aux *aux, float *y, int64_t ldy) {
#define LMC_TILE_ROWS_TOKENS(z) \
    switch (type) { \
    case 6: LMC_TILE(rows_tokens_of)(6, z, LMC_TILE_ROWS_32, LMC_TILE_TOKENS_32, rows, w, row_bytes, n, tokens, qs, d, ds, aux, y, ldy); break; \
    case 8: LMC_TILE(rows_tokens_of)(8, z, LMC_TILE_ROWS_32, LMC_TILE_TOKENS_32, rows, w, row_bytes, n, tokens, qs, d, ds, aux, y, ldy); break; \
    case 12: LMC_TILE(rows_tokens_of)(12, z, LMC_TILE_ROWS_K, LMC_TILE_TOKENS_K, rows, w, row_bytes, n, tokens, qs, d, ds, aux, y, ldy); break; \
    case 14: LMC_TILE(rows_tokens_of)(14, z, LMC_TILE_ROWS_Q6_K, LMC_TILE_TOKENS_Q6_K, rows, w, row_bytes, n, tokens, qs, d, ds, aux, y, ldy); break; \
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
