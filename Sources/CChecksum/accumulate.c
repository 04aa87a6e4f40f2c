// The stripe accumulator behind the disk tier's payload checksum (see CChecksum.h).

#include "CChecksum.h"

#include <string.h>

static const uint64_t keys[8] = {
    0x9ba8bf11538a8dc9ull, 0x7764d8692a8f5588ull, 0xaa7b8271f1bb6619ull, 0xdd52d1d071017e57ull,
    0x013de955bd86e828ull, 0x41f06fbf1df6e2ffull, 0xaa0caea899685648ull, 0x8a3f6cadb75ea48bull,
};

// Each stripe's keys are the previous stripe's plus `steps` (odd constants), so that the products
// depend on a word's position: stripes swapped with each other change the checksum.
static const uint64_t steps[8] = {
    0x9e3779b97f4a7c15ull, 0xbf58476d1ce4e5b9ull, 0x94d049bb133111ebull, 0xd6e8feb86659fd93ull,
    0xa0761d6478bd642full, 0xe7037ed1a0b428dbull, 0x8ebc6af09c88c6e3ull, 0x589965cc75374cc3ull,
};

static void accumulate_portable(uint64_t acc[8], const unsigned char *p, size_t stripes) {
    uint64_t key[8];
    memcpy(key, keys, sizeof key);
    for (size_t s = 0; s < stripes; s++, p += 64) {
        uint64_t words[8];
        memcpy(words, p, 64);
        for (int i = 0; i < 8; i++) {
            uint64_t mixed = words[i] ^ key[i];
            key[i] += steps[i];
            acc[i] += (mixed & 0xFFFFFFFFull) * (mixed >> 32);
            acc[i] += words[i ^ 1];
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2")))
static void accumulate_avx2(uint64_t acc[8], const unsigned char *p, size_t stripes) {
    __m256i a0 = _mm256_loadu_si256((const __m256i *)acc);
    __m256i a1 = _mm256_loadu_si256((const __m256i *)(acc + 4));
    __m256i k0 = _mm256_loadu_si256((const __m256i *)keys);
    __m256i k1 = _mm256_loadu_si256((const __m256i *)(keys + 4));
    const __m256i s0 = _mm256_loadu_si256((const __m256i *)steps);
    const __m256i s1 = _mm256_loadu_si256((const __m256i *)(steps + 4));
    for (size_t s = 0; s < stripes; s++, p += 64) {
        __m256i d0 = _mm256_loadu_si256((const __m256i *)p);
        __m256i d1 = _mm256_loadu_si256((const __m256i *)(p + 32));
        __m256i m0 = _mm256_xor_si256(d0, k0);
        __m256i m1 = _mm256_xor_si256(d1, k1);
        k0 = _mm256_add_epi64(k0, s0);
        k1 = _mm256_add_epi64(k1, s1);
        // low 32 bits × high 32 bits of each 64-bit lane
        a0 = _mm256_add_epi64(a0, _mm256_mul_epu32(m0, _mm256_srli_epi64(m0, 32)));
        a1 = _mm256_add_epi64(a1, _mm256_mul_epu32(m1, _mm256_srli_epi64(m1, 32)));
        // word i ^ 1: swap neighbouring 64-bit lanes
        a0 = _mm256_add_epi64(a0, _mm256_shuffle_epi32(d0, _MM_SHUFFLE(1, 0, 3, 2)));
        a1 = _mm256_add_epi64(a1, _mm256_shuffle_epi32(d1, _MM_SHUFFLE(1, 0, 3, 2)));
    }
    _mm256_storeu_si256((__m256i *)acc, a0);
    _mm256_storeu_si256((__m256i *)(acc + 4), a1);
}

static int has_avx2(void) {
    static int cached = -1;
    int value = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (value < 0) {
        __builtin_cpu_init();
        value = __builtin_cpu_supports("avx2") ? 1 : 0;
        __atomic_store_n(&cached, value, __ATOMIC_RELAXED);
    }
    return value;
}
#endif

void lmcache_stripe_accumulate(uint64_t acc[8], const void *data, size_t length) {
    const unsigned char *p = (const unsigned char *)data;
    size_t stripes = length / 64;
#if defined(__x86_64__)
    if (has_avx2()) {
        accumulate_avx2(acc, p, stripes);
        return;
    }
#endif
    accumulate_portable(acc, p, stripes);
}

/// For tests: the portable loop regardless of the CPU.
void lmcache_stripe_accumulate_portable(uint64_t acc[8], const void *data, size_t length) {
    accumulate_portable(acc, (const unsigned char *)data, length / 64);
}
