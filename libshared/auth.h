/* auth.h - verification of the bearer JWTs that callers present in the `authorization`
 * metadata. Only RS256 and ES256 are accepted, and only the algorithm that matches the key
 * that checks the token (checked on the raw header before any signature work, so `alg: none`
 * and HS256-with-the-public-key-as-secret never reach libjwt). exp, nbf, iss and aud are
 * checked; `sub` is the user id, the claim `role: admin` makes an administrator and the claim
 * `group` names the reader's patron group (the row of lending's loan policy; "patron" without it).
 *
 * The keys: one PEM file (every token is checked with it; a `kid` in the header is ignored),
 * or a directory of PEM files named <kid>.pem. Then a token's header `kid` picks the one key
 * that checks it; a token without `kid` is accepted only while the directory holds exactly
 * one key. The verifier notices added, replaced and removed files by itself (docs/decisions.md:
 * "Signing keys by kid"). */
#ifndef LIBSHARED_AUTH_H
#define LIBSHARED_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

#define AUTH_SUBJECT_MAX 128
#define AUTH_GROUP_MAX 64
#define AUTH_DEFAULT_GROUP "patron"

typedef struct auth_identity {
    char subject[AUTH_SUBJECT_MAX]; /* the user id; non-empty after a successful verify */
    bool admin;
    char group[AUTH_GROUP_MAX]; /* the `group` claim, AUTH_DEFAULT_GROUP when absent */
    int64_t expires_at; /* unix seconds (exp + leeway): from then on the token is expired */
} auth_identity;

typedef struct auth_verifier auth_verifier;

/* Loads the PEM public keys (RSA -> RS256, EC P-256 -> ES256) from public_key_file, a file or
 * a directory of <kid>.pem files (at least one; a file that is not such a key is an error).
 * issuer and audience are copied. Clock skew allowance for exp/nbf is leeway_seconds.
 * On success *out is set and owned by the caller (auth_verifier_destroy). */
status_code auth_verifier_create(const char *public_key_file, const char *issuer,
                                 const char *audience, int64_t leeway_seconds,
                                 auth_verifier **out, status *st);
void auth_verifier_destroy(auth_verifier *verifier); /* NULL is a no-op */

/* Verifies the value of an `authorization` header ("Bearer <jwt>"; the scheme is matched
 * case-insensitively). NULL or empty -> UNAUTHENTICATED "missing bearer token".
 * Any failure -> STATUS_UNAUTHENTICATED with reason "INVALID_TOKEN" or "TOKEN_EXPIRED" and a
 * message saying what was wrong (never echoing the token). A `group` claim that is not a
 * string of 1..AUTH_GROUP_MAX-1 letters, digits and ._- is INVALID_TOKEN too (auth_group_valid):
 * a group naming no policy row would silently lend by the defaults. Thread-safe. */
status_code auth_verify(const auth_verifier *verifier, const char *authorization,
                        auth_identity *out, status *st);

/* True when group is a patron group name a token may carry: 1..AUTH_GROUP_MAX-1 characters of
 * [A-Za-z0-9._-]. Policy files name their groups by the same rule. */
bool auth_group_valid(const char *group);

/* Reads the keys again now (SIGHUP). On an error (a file that is not a key) the keys in use
 * stay and st says why. Without it the verifier still looks at the files at most once a
 * second, and at once when a token names a kid it does not know. Thread-safe. */
status_code auth_verifier_reload(auth_verifier *verifier, status *st);

/* How many signatures the verifier has checked: the tokens it did not remember. */
uint64_t auth_verifier_signature_checks(const auth_verifier *verifier);

#endif
