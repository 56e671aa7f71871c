/* token.h - bearer tokens the services accept: RS256 JWTs signed with the private key the
 * benchmark made for the run (the services verify with its public half). */
#ifndef BENCH_TOKEN_H
#define BENCH_TOKEN_H

#include <stdbool.h>

/* "Bearer <jwt>" for subject, valid for two hours; malloc'd (the caller frees), NULL on
 * failure. private_key_file: PEM RSA private key. */
char *token_bearer(const char *private_key_file, const char *subject, bool admin);

#endif
