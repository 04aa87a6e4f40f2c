#ifndef LMCACHE_CCHECKSUM_H
#define LMCACHE_CCHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/// The stripe accumulator of the disk tier's block checksum: eight 64-bit lanes updated from each
/// 64-byte stripe of `data` (`length` a multiple of 64), written to `acc[0...7]`, which the caller
/// initialises. Lane i gains the stripe's word i ^ 1 and the product of the low and high halves
/// of (word i XOR key i), where the keys advance by a fixed odd step every stripe: any change to a
/// word changes a lane by a nonzero amount, and moved stripes meet other keys. AVX2 when the
/// CPU has it (checked at run time); a portable loop otherwise, with identical results.
void lmcache_stripe_accumulate(uint64_t acc[8], const void *data, size_t length);

/// The portable loop of `lmcache_stripe_accumulate`, whatever the CPU (for tests).
void lmcache_stripe_accumulate_portable(uint64_t acc[8], const void *data, size_t length);

#endif
