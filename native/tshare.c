/*
 * tshare.c: GMP arithmetic for Shoup's threshold RSA ("Practical Threshold
 * Signatures", Eurocrypt 2000). The protocol logic (dealing, hashing, proofs,
 * Lagrange coefficients) lives in prime/crypto/threshold.py; this file only does
 * the big-number work it cannot do fast: modular exponentiation and the safe-prime
 * search of the trusted dealer. See tshare.h for the calling conventions.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <gmp.h>

#include "tshare.h"

enum {
    SIEVE_LIMIT = 1 << 16,        /* sieve candidates against every prime below this */
    SAFE_PRIME_BITS_MIN = 64,     /* keeps sieve primes well below the candidates */
    SAFE_PRIME_BITS_MAX = 8192,
    WINDOW_MAX = 1 << 20,         /* 6 * WINDOW_MAX fits an unsigned long */
    PRIME_TEST_REPS = 30          /* mpz_probab_prime_p: BPSW + 6 Miller-Rabin rounds */
};

/* A (pointer, length) pair is unusable when it claims bytes behind NULL. */
static int bad_buffer(const void *buffer, size_t length)
{
    return buffer == NULL && length > 0;
}

static void import_be(mpz_t x, const unsigned char *buffer, size_t length)
{
    if (length == 0)
        mpz_set_ui(x, 0);
    else
        mpz_import(x, length, 1, 1, 1, 0, buffer);
}

/* Writes x (>= 0) big-endian, left-padded with zeros to exactly out_len bytes. */
static int export_be(const mpz_t x, unsigned char *out, size_t out_len)
{
    size_t need;

    if (mpz_sgn(x) < 0)
        return TS_ERR_ARGUMENT;
    if (mpz_sgn(x) == 0) {
        if (out_len > 0)
            memset(out, 0, out_len);
        return TS_OK;
    }
    need = (mpz_sizeinbase(x, 2) + 7) / 8;
    if (need > out_len)
        return TS_ERR_SIZE;
    memset(out, 0, out_len - need);
    mpz_export(out + (out_len - need), NULL, 1, 1, 1, 0, x);
    return TS_OK;
}

static int powm_common(const unsigned char *base, size_t base_len,
                       const unsigned char *exponent, size_t exponent_len,
                       const unsigned char *modulus, size_t modulus_len,
                       unsigned char *out, size_t out_len, int secret)
{
    mpz_t b, e, m, r;
    int status;

    if (bad_buffer(base, base_len) || bad_buffer(exponent, exponent_len)
        || bad_buffer(modulus, modulus_len) || bad_buffer(out, out_len))
        return TS_ERR_ARGUMENT;
    mpz_inits(b, e, m, r, NULL);
    import_be(b, base, base_len);
    import_be(e, exponent, exponent_len);
    import_be(m, modulus, modulus_len);
    if (mpz_cmp_ui(m, 1) <= 0 || (secret && mpz_even_p(m))) {
        status = TS_ERR_ARGUMENT;
    } else {
        mpz_mod(b, b, m);
        /* mpz_powm_sec requires a positive exponent; x^0 = 1 leaks nothing. */
        if (secret && mpz_sgn(e) > 0)
            mpz_powm_sec(r, b, e, m);
        else
            mpz_powm(r, b, e, m);
        status = export_be(r, out, out_len);
    }
    mpz_clears(b, e, m, r, NULL);
    return status;
}

int ts_powm(const unsigned char *base, size_t base_len,
            const unsigned char *exponent, size_t exponent_len,
            const unsigned char *modulus, size_t modulus_len,
            unsigned char *out, size_t out_len)
{
    return powm_common(base, base_len, exponent, exponent_len, modulus, modulus_len,
                       out, out_len, 0);
}

int ts_powm_sec(const unsigned char *base, size_t base_len,
                const unsigned char *exponent, size_t exponent_len,
                const unsigned char *modulus, size_t modulus_len,
                unsigned char *out, size_t out_len)
{
    return powm_common(base, base_len, exponent, exponent_len, modulus, modulus_len,
                       out, out_len, 1);
}

int ts_multi_powm(size_t count,
                  const unsigned char *bases, size_t base_len,
                  const unsigned char *exponents, size_t exponent_len,
                  const int *negative,
                  const unsigned char *modulus, size_t modulus_len,
                  unsigned char *out, size_t out_len)
{
    mpz_t m, acc, b, e;
    int status = TS_OK;
    size_t k;

    if ((base_len != 0 && count > SIZE_MAX / base_len)
        || (exponent_len != 0 && count > SIZE_MAX / exponent_len))
        return TS_ERR_ARGUMENT;
    if (bad_buffer(bases, count * base_len) || bad_buffer(exponents, count * exponent_len)
        || bad_buffer(negative, count) || bad_buffer(modulus, modulus_len)
        || bad_buffer(out, out_len))
        return TS_ERR_ARGUMENT;
    mpz_inits(m, acc, b, e, NULL);
    import_be(m, modulus, modulus_len);
    if (mpz_cmp_ui(m, 1) <= 0)
        status = TS_ERR_ARGUMENT;
    mpz_set_ui(acc, 1);
    for (k = 0; k < count && status == TS_OK; k++) {
        import_be(b, bases + k * base_len, base_len);
        import_be(e, exponents + k * exponent_len, exponent_len);
        mpz_mod(b, b, m);
        if (negative[k] && mpz_invert(b, b, m) == 0) {
            status = TS_ERR_NOT_INVERTIBLE;
            break;
        }
        mpz_powm(b, b, e, m);
        mpz_mul(acc, acc, b);
        mpz_mod(acc, acc, m);
    }
    if (status == TS_OK)
        status = export_be(acc, out, out_len);
    mpz_clears(m, acc, b, e, NULL);
    return status;
}

int ts_invert(const unsigned char *value, size_t value_len,
              const unsigned char *modulus, size_t modulus_len,
              unsigned char *out, size_t out_len)
{
    mpz_t a, m, r;
    int status;

    if (bad_buffer(value, value_len) || bad_buffer(modulus, modulus_len)
        || bad_buffer(out, out_len))
        return TS_ERR_ARGUMENT;
    mpz_inits(a, m, r, NULL);
    import_be(a, value, value_len);
    import_be(m, modulus, modulus_len);
    if (mpz_cmp_ui(m, 1) <= 0)
        status = TS_ERR_ARGUMENT;
    else if (mpz_invert(r, a, m) == 0)
        status = TS_ERR_NOT_INVERTIBLE;
    else
        status = export_be(r, out, out_len);
    mpz_clears(a, m, r, NULL);
    return status;
}

int ts_probable_prime(const unsigned char *value, size_t value_len, int *is_prime)
{
    mpz_t x;

    if (bad_buffer(value, value_len) || is_prime == NULL)
        return TS_ERR_ARGUMENT;
    mpz_init(x);
    import_be(x, value, value_len);
    *is_prime = mpz_probab_prime_p(x, PRIME_TEST_REPS) > 0;
    mpz_clear(x);
    return TS_OK;
}

/* Odd primes 5 <= q < SIEVE_LIMIT (2 and 3 are handled by p' = 5 mod 6).
 * Returns a malloc'ed array and its length, or NULL if memory runs out. */
static unsigned int *sieve_primes(size_t *count)
{
    unsigned char *composite = calloc(SIEVE_LIMIT, 1);
    unsigned int *primes = malloc(sizeof(unsigned int) * (SIEVE_LIMIT / 2));
    size_t i, j, n = 0;

    if (composite == NULL || primes == NULL) {
        free(composite);
        free(primes);
        return NULL;
    }
    for (i = 2; i * i < SIEVE_LIMIT; i++)
        if (!composite[i])
            for (j = i * i; j < SIEVE_LIMIT; j += i)
                composite[j] = 1;
    for (i = 5; i < SIEVE_LIMIT; i++)
        if (!composite[i])
            primes[n++] = (unsigned int)i;
    free(composite);
    *count = n;
    return primes;
}

/* a^-1 mod q for a small prime q not dividing a (extended Euclid). */
static uint64_t inverse_mod_small(uint64_t a, uint64_t q)
{
    int64_t t = 0, new_t = 1, r = (int64_t)q, new_r = (int64_t)(a % q);

    while (new_r != 0) {
        int64_t quotient = r / new_r, tmp;
        tmp = t - quotient * new_t;
        t = new_t;
        new_t = tmp;
        tmp = r - quotient * new_r;
        r = new_r;
        new_r = tmp;
    }
    return (uint64_t)(t < 0 ? t + (int64_t)q : t);
}

/* Marks every offset k < window with first + 6k = target (mod q). */
static void sieve_mark(unsigned char *sieve, size_t window, uint64_t first_mod_q,
                       uint64_t target, uint64_t q, uint64_t inverse_of_6)
{
    uint64_t k = ((target + q - first_mod_q) % q) * inverse_of_6 % q;

    for (; k < window; k += q)
        sieve[k] = 1;
}

/* True if p' and p = 2p'+1 are both probable primes. The two base-2 Fermat tests
 * reject almost every composite cheaply; once p' is prime, 2^(p-1) = 1 (mod p)
 * already proves p prime (Pocklington, since p' > sqrt(p)), and the final BPSW
 * tests are a second line. */
static int is_safe_prime_pair(const mpz_t p_half, const mpz_t p, mpz_t scratch, const mpz_t two)
{
    mpz_sub_ui(scratch, p_half, 1);
    mpz_powm(scratch, two, scratch, p_half);
    if (mpz_cmp_ui(scratch, 1) != 0)
        return 0;
    mpz_mul_2exp(scratch, p_half, 1);
    mpz_powm(scratch, two, scratch, p);
    if (mpz_cmp_ui(scratch, 1) != 0)
        return 0;
    return mpz_probab_prime_p(p_half, PRIME_TEST_REPS) > 0
           && mpz_probab_prime_p(p, PRIME_TEST_REPS) > 0;
}

int ts_safe_prime_step(const unsigned char *start, size_t start_len,
                       unsigned int bits, size_t window,
                       unsigned char *out, size_t out_len,
                       size_t *candidates)
{
    unsigned int *primes;
    unsigned char *sieve;
    size_t prime_count, i, k;
    mpz_t first, p_half, p, scratch, two;
    int status = TS_NOT_FOUND;

    if (candidates == NULL || bad_buffer(start, start_len) || bad_buffer(out, out_len))
        return TS_ERR_ARGUMENT;
    *candidates = 0;
    if (bits < SAFE_PRIME_BITS_MIN || bits > SAFE_PRIME_BITS_MAX || window == 0
        || window > WINDOW_MAX)
        return TS_ERR_ARGUMENT;
    if (out_len < (bits + 7) / 8)
        return TS_ERR_SIZE;
    primes = sieve_primes(&prime_count);
    sieve = calloc(window, 1);
    if (primes == NULL || sieve == NULL) {
        free(primes);
        free(sieve);
        return TS_ERR_NO_MEMORY;
    }
    mpz_inits(first, p_half, p, scratch, two, NULL);
    mpz_set_ui(two, 2);

    /* First candidate p': bits-1 bits with the two top bits set, then p' = 5 mod 6
     * so that neither p' nor 2p'+1 is divisible by 2 or 3. */
    import_be(first, start, start_len);
    mpz_fdiv_r_2exp(first, first, bits - 1);
    mpz_setbit(first, bits - 2);
    mpz_setbit(first, bits - 3);
    mpz_add_ui(first, first, (11 - mpz_fdiv_ui(first, 6)) % 6);

    /* Strike p' = 0 and p' = (q-1)/2 (that is, 2p'+1 = 0) modulo each small q. */
    for (i = 0; i < prime_count; i++) {
        uint64_t q = primes[i];
        uint64_t first_mod_q = mpz_fdiv_ui(first, (unsigned long)q);
        uint64_t inverse_of_6 = inverse_mod_small(6, q);
        sieve_mark(sieve, window, first_mod_q, 0, q, inverse_of_6);
        sieve_mark(sieve, window, first_mod_q, (q - 1) / 2, q, inverse_of_6);
    }

    for (k = 0; k < window; k++) {
        if (sieve[k])
            continue;
        mpz_add_ui(p_half, first, (unsigned long)(6 * k));
        mpz_mul_2exp(p, p_half, 1);
        mpz_add_ui(p, p, 1);
        if (mpz_sizeinbase(p, 2) != bits)
            break; /* ran past 2^bits: the rest of the window is too large as well */
        if (is_safe_prime_pair(p_half, p, scratch, two)) {
            status = export_be(p, out, out_len);
            *candidates = k + 1;
            break;
        }
    }
    if (status == TS_NOT_FOUND)
        *candidates = window;

    mpz_clears(first, p_half, p, scratch, two, NULL);
    free(sieve);
    free(primes);
    return status;
}
