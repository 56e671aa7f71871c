/* token.h - RS256 JWTs with the claims tools/token gives (iss, aud, sub, role, group, iat, nbf,
 * exp), signed with a PEM private key file: the tokens of the tests and the benchmark.
 * Nothing that serves links this; the services only verify. */
#ifndef TESTS_TOKEN_H
#define TESTS_TOKEN_H

#include <stdbool.h>
#include <stdint.h>

typedef struct token_claims {
    const char *subject;
    bool admin;           /* role "admin", else "user" */
    int64_t ttl_seconds;  /* exp - iat; negative for a token that has expired */
    const char *issuer;   /* NULL: "library" */
    const char *audience; /* NULL: "library-api" */
    const char *kid;      /* the header's key id; NULL: none */
    const char *group;    /* the patron group claim, as given (even one the services refuse);
                             NULL: none (the services take "patron") */
} token_claims;

/* The JWT, malloc'd (the caller frees); NULL when the key cannot be read or used. */
char *token_sign(const char *private_key_file, const token_claims *claims);

/* "Bearer <jwt>" for subject, valid for two hours; malloc'd (the caller frees), NULL on
 * failure. */
char *token_bearer(const char *private_key_file, const char *subject, bool admin);

/* token_bearer with the group claim (NULL: none). */
char *token_bearer_in_group(const char *private_key_file, const char *subject, bool admin, const char *group);

#endif
