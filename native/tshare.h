/*
 * tshare: the big-number arithmetic behind Shoup's threshold RSA
 * (V. Shoup, "Practical Threshold Signatures", Eurocrypt 2000), using GMP.
 *
 * This file is both the C header and the cffi cdef: prime/crypto/_build.py reads
 * the text between the "cdef-begin" and "cdef-end" markers, so that part holds only
 * plain declarations (no macros, no includes).
 *
 * Conventions, shared by every function:
 *  - Big numbers cross the boundary as unsigned big-endian byte strings
 *    (pointer + length); a length of 0 means the number 0.
 *  - Results are written left-padded with zeros into a caller-owned buffer of
 *    out_len bytes; TS_ERR_SIZE if the result does not fit.
 *  - Functions return a status (enum ts_status): 0 is success, TS_NOT_FOUND means
 *    "no result in this step, call again", negative values are errors. They never
 *    abort and never print. (GMP itself aborts if malloc fails; nothing else does.)
 *  - No global state: every function is reentrant and thread-safe.
 *  - Exponentiations whose exponent is secret (share generation, proof nonces,
 *    verification keys) use mpz_powm_sec; the others use mpz_powm.
 */
#ifndef PRIME_TSHARE_H
#define PRIME_TSHARE_H

#include <stddef.h>

/* cdef-begin */

enum ts_status {
    TS_OK = 0,
    TS_NOT_FOUND = 1,             /* ts_safe_prime_step: no safe prime in this window */
    TS_ERR_ARGUMENT = -1,         /* an argument is out of its documented range */
    TS_ERR_SIZE = -2,             /* the result does not fit into the output buffer */
    TS_ERR_NO_MEMORY = -3,        /* a scratch allocation failed */
    TS_ERR_NOT_INVERTIBLE = -4    /* an element has no inverse modulo the modulus */
};

/* out = base^exponent mod modulus, for a public exponent (mpz_powm). modulus > 1. */
int ts_powm(const unsigned char *base, size_t base_len,
            const unsigned char *exponent, size_t exponent_len,
            const unsigned char *modulus, size_t modulus_len,
            unsigned char *out, size_t out_len);

/* Same as ts_powm for a secret exponent (mpz_powm_sec, whose running time does not
 * depend on the exponent's bits). modulus must be odd and > 1. */
int ts_powm_sec(const unsigned char *base, size_t base_len,
                const unsigned char *exponent, size_t exponent_len,
                const unsigned char *modulus, size_t modulus_len,
                unsigned char *out, size_t out_len);

/* out = prod_k bases[k]^(+-exponents[k]) mod modulus, for public exponents.
 * bases holds count numbers of base_len bytes each, exponents holds count
 * numbers of exponent_len bytes each, and negative[k] != 0 makes the k-th exponent
 * negative (the base is inverted first; TS_ERR_NOT_INVERTIBLE if it cannot be).
 * Used for Shoup's combining step and for checking share proofs. */
int ts_multi_powm(size_t count,
                  const unsigned char *bases, size_t base_len,
                  const unsigned char *exponents, size_t exponent_len,
                  const int *negative,
                  const unsigned char *modulus, size_t modulus_len,
                  unsigned char *out, size_t out_len);

/* out = value^-1 mod modulus; TS_ERR_NOT_INVERTIBLE if gcd(value, modulus) != 1. */
int ts_invert(const unsigned char *value, size_t value_len,
              const unsigned char *modulus, size_t modulus_len,
              unsigned char *out, size_t out_len);

/* *is_prime = 1 if value is a probable prime (BPSW plus Miller-Rabin rounds, GMP's
 * mpz_probab_prime_p with 30 repetitions), else 0. */
int ts_probable_prime(const unsigned char *value, size_t value_len, int *is_prime);

/* One bounded step of the search for a safe prime p = 2p'+1 of exactly `bits` bits
 * (the two top bits set, so a product of two such primes has exactly 2*bits bits).
 * The caller supplies fresh random bytes in `start` for each step; they pick the
 * first candidate p' (p' = 5 mod 6). The step sieves `window` consecutive candidates
 * p', p'+6, ... so that neither p' nor 2p'+1 has a prime factor below 2^16, then runs
 * Fermat tests and finally BPSW/Miller-Rabin on both. Returns TS_OK with p written to
 * out, or TS_NOT_FOUND; either way *candidates is the number of candidates covered.
 * 64 <= bits <= 8192, 1 <= window <= 2^20, out_len >= (bits + 7) / 8. */
int ts_safe_prime_step(const unsigned char *start, size_t start_len,
                       unsigned int bits, size_t window,
                       unsigned char *out, size_t out_len,
                       size_t *candidates);

/* cdef-end */

#endif /* PRIME_TSHARE_H */
