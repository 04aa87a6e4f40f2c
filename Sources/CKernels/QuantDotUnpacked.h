// Q5_0 rows unpacked once per block of tokens, for lmc_matmul_q8; included by QuantDot.c once per
// instruction-set level. The including file defines:
//   LMC_PRE_TARGET            the function attributes of the level,
//   LMC_PRE(name)             the name of a function at this level,
//   LMC_PRE_ROWS, LMC_PRE_TOKENS  the rows and tokens of a tile,
//   LMC_PRE_VALUES(blk)       the 32 signed values of a Q5_0 block (q5_0_values_avx2's bytes),
//   LMC_PRE_INIT(w)           −128 · Σw per lane of 32 signed values w,
//   LMC_PRE_DOT(init, xu, w)  init + Σ xu · w per lane (xu = activations + 128), as 8 floats,
//   LMC_PRE_BROADCAST(p)      the float at p in 8 lanes, broadcast from memory;
// it undefines them at its end.
//
// A group of rows is unpacked once for up to 64 tokens: each block's values, its −128 · Σw per lane, and
// the products of its scale with every token's scale for that block, all kept in L1 while tiles of
// tokens run over them. With no −128 among the activations, init + Σ (x + 128) · w is the integer sum
// of the AVX2 row dots per lane, so each element takes the row dot's float steps in order: the same
// lane sums, converted, times the same scale products (scale_avx2's f16 scale times the token's), into
// an even and an odd accumulator (a last block of an odd count into the even one), then the same
// horizontal sum. The bits are those of dot_q5_0_avx2.

typedef struct {
    __m256i *wv;   // [r · nb + b]: block b of row r, its 32 signed values
    __m256i *init; // [r · nb + b]: its −128 · Σw per lane
    float *sc;     // [(r · nb + b) · ldt + t]: its scale times token t's scale for that block
} LMC_PRE(unpacked_set);

// Rows r0..r0+R at w for the tokens of a block; their scales at dT[b · ldt + t], readable 8 at a time
// to the end of each block's row of ldt.
LMC_PRE_TARGET static inline __attribute__((always_inline)) void
LMC_PRE(unpacked_fill)(int R, const uint8_t *w, int64_t row_bytes, int64_t nb, const float *dT, int64_t ldt,
                       int64_t tokens, const LMC_PRE(unpacked_set) *p) {
    for (int r = 0; r < R; r++)
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = w + r * row_bytes + b * 22;
            const __m256i v = LMC_PRE_VALUES(blk);
            p->wv[r * nb + b] = v;
            p->init[r * nb + b] = LMC_PRE_INIT(v);
            const __m256 ws = f16x8_avx2(blk);
            float *sc = p->sc + (r * nb + b) * ldt;
            for (int64_t t = 0; t < tokens; t += 8)
                _mm256_storeu_ps(sc + t, _mm256_mul_ps(ws, _mm256_loadu_ps(dT + b * ldt + t)));
        }
}

// Block b of the unpacked rows into acc[r][t] for T tokens at xu (n bytes each), whose scale products
// start at sc.
LMC_PRE_TARGET static inline __attribute__((always_inline)) void
LMC_PRE(unpacked_block)(int R, int T, const LMC_PRE(unpacked_set) *p, const float *sc, int64_t ldt, int64_t nb,
                        const uint8_t *xu, int64_t n, int64_t b, __m256 acc[LMC_PRE_ROWS][LMC_PRE_TOKENS]) {
    for (int t = 0; t < T; t++) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(xu + t * n + b * 32));
        for (int r = 0; r < R; r++) {
            const __m256 prod = LMC_PRE_DOT(p->init[r * nb + b], x, p->wv[r * nb + b]);
            acc[r][t] = _mm256_fmadd_ps(prod, LMC_PRE_BROADCAST(sc + (r * nb + b) * ldt + t), acc[r][t]);
        }
    }
}

// R rows by T tokens into y[t · ldy + r], as dot_q5_0_avx2 orders the blocks. The even and odd
// accumulators are separate arrays, indexed by constants only, so that they stay in registers.
LMC_PRE_TARGET static inline __attribute__((always_inline)) void
LMC_PRE(unpacked_tile)(int R, int T, const LMC_PRE(unpacked_set) *p, const float *sc, int64_t ldt, int64_t nb,
                       const uint8_t *xu, int64_t n, float *y, int64_t ldy) {
    __m256 even[LMC_PRE_ROWS][LMC_PRE_TOKENS], odd[LMC_PRE_ROWS][LMC_PRE_TOKENS];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) even[r][t] = odd[r][t] = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        LMC_PRE(unpacked_block)(R, T, p, sc, ldt, nb, xu, n, b, even);
        LMC_PRE(unpacked_block)(R, T, p, sc, ldt, nb, xu, n, b + 1, odd);
    }
    if (b < nb) LMC_PRE(unpacked_block)(R, T, p, sc, ldt, nb, xu, n, b, even);
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[t * ldy + r] = hsum_avx2(_mm256_add_ps(even[r][t], odd[r][t]));
}

// R rows (a constant where called) against the `tokens` (≤ ldt) of a block.
LMC_PRE_TARGET static inline __attribute__((always_inline)) void
LMC_PRE(unpacked_rows)(int R, const uint8_t *w, int64_t row_bytes, int64_t nb, int64_t tokens, const uint8_t *xu,
                       int64_t n, const float *dT, int64_t ldt, const LMC_PRE(unpacked_set) *p, float *y, int64_t ldy) {
    LMC_PRE(unpacked_fill)(R, w, row_bytes, nb, dT, ldt, tokens, p);
    int64_t t = 0;
    for (; t + LMC_PRE_TOKENS <= tokens; t += LMC_PRE_TOKENS)
        LMC_PRE(unpacked_tile)(R, LMC_PRE_TOKENS, p, p->sc + t, ldt, nb, xu + t * n, n, y + t * ldy, ldy);
    for (; t < tokens; t++) LMC_PRE(unpacked_tile)(R, 1, p, p->sc + t, ldt, nb, xu + t * n, n, y + t * ldy, ldy);
}

// lmc_matmul_q8 for Q5_0 rows against activations without −128, in blocks of 64 tokens; 0 where memory
// for the unpacked rows could not be had (nothing written then).
LMC_PRE_TARGET static int LMC_PRE(matmul_unpacked)(const uint8_t *base, int64_t row_bytes, int64_t row_begin,
                                                    int64_t row_end, int64_t n, int64_t tokens, const int8_t *qs,
                                                    const float *d, float *y, int64_t ldy) {
    const int64_t nb = n / 32, token_block = 64;
    const size_t vectors = (size_t)(LMC_PRE_ROWS * nb) * sizeof(__m256i);
    float *dT = calloc((size_t)(token_block * nb), sizeof(float));
    uint8_t *xu = malloc((size_t)(token_block * n));
    __m256i *wv = aligned_alloc(32, vectors), *init = aligned_alloc(32, vectors);
    float *sc = aligned_alloc(32, (size_t)(LMC_PRE_ROWS * nb * token_block) * sizeof(float));
    const int ok = dT && xu && wv && init && sc;
    if (ok) {
        const LMC_PRE(unpacked_set) p = {wv, init, sc};
        const __m256i top = _mm256_set1_epi8((char)0x80);
        const uint8_t *end = base + row_end * row_bytes;
        for (int64_t j0 = 0; j0 < tokens; j0 += token_block) {
            const int64_t nt = tokens - j0 < token_block ? tokens - j0 : token_block;
            for (int64_t j = 0; j < nt; j++)
                for (int64_t k = 0; k < nb; k++) dT[k * token_block + j] = d[(j0 + j) * nb + k];
            for (int64_t i = 0; i < nt * n; i += 32)
                _mm256_storeu_si256((__m256i *)(xu + i),
                                    _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(qs + j0 * n + i)), top));
            const uint8_t *next = base + row_begin * row_bytes;
            for (int64_t r = row_begin; r < row_end; r += LMC_PRE_ROWS) {
                const int rows = row_end - r < LMC_PRE_ROWS ? (int)(row_end - r) : LMC_PRE_ROWS;
                const uint8_t *row = base + r * row_bytes;
                prefetch_until(&next, row + rows * row_bytes + LMC_PREFETCH_DISTANCE, end);
                float *yr = y + j0 * ldy + r;
                if (rows == LMC_PRE_ROWS)
                    LMC_PRE(unpacked_rows)(LMC_PRE_ROWS, row, row_bytes, nb, nt, xu, n, dT, token_block, &p, yr, ldy);
#if LMC_PRE_ROWS > 2
                else if (rows == 2) LMC_PRE(unpacked_rows)(2, row, row_bytes, nb, nt, xu, n, dT, token_block, &p, yr, ldy);
#endif
                else LMC_PRE(unpacked_rows)(1, row, row_bytes, nb, nt, xu, n, dT, token_block, &p, yr, ldy);
            }
        }
    }
    free(dT);
    free(xu);
    free(wv);
    free(init);
    free(sc);
    return ok;
}

#undef LMC_PRE_TARGET
#undef LMC_PRE
#undef LMC_PRE_ROWS
#undef LMC_PRE_TOKENS
#undef LMC_PRE_VALUES
#undef LMC_PRE_INIT
#undef LMC_PRE_DOT
#undef LMC_PRE_BROADCAST
