/* token.c - JWT signing with libjwt, claims as tools/token makes them. */
#include "token.h"

#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char *token_sign(const char *private_key_file, const token_claims *claims) {
    FILE *file = fopen(private_key_file, "rb");
    if (file == NULL)
        return NULL;
    unsigned char key[16384];
    size_t key_size = fread(key, 1, sizeof key, file);
    fclose(file);
    jwt_t *token = NULL;
    if (key_size == 0 || jwt_new(&token) != 0)
        return NULL;
    time_t now = time(NULL);
    jwt_add_grant(token, "sub", claims->subject);
    jwt_add_grant(token, "iss", claims->issuer ? claims->issuer : "library");
    jwt_add_grant(token, "aud", claims->audience ? claims->audience : "library-api");
    jwt_add_grant(token, "role", claims->admin ? "admin" : "user");
    if (claims->group != NULL)
        jwt_add_grant(token, "group", claims->group);
    jwt_add_grant_int(token, "iat", now);
    jwt_add_grant_int(token, "nbf", now);
    jwt_add_grant_int(token, "exp", now + claims->ttl_seconds);
    char *encoded = NULL;
    if (claims->kid != NULL && jwt_add_header(token, "kid", claims->kid) != 0) {
        jwt_free(token);
        return NULL;
    }
    if (jwt_set_alg(token, JWT_ALG_RS256, key, (int)key_size) == 0)
        encoded = jwt_encode_str(token);
    jwt_free(token);
    return encoded;
}

char *token_bearer(const char *private_key_file, const char *subject, bool admin) {
    return token_bearer_in_group(private_key_file, subject, admin, NULL);
}

char *token_bearer_in_group(const char *private_key_file, const char *subject, bool admin, const char *group) {
    token_claims claims = {.subject = subject, .admin = admin, .ttl_seconds = 7200, .group = group};
    char *encoded = token_sign(private_key_file, &claims);
    if (encoded == NULL)
        return NULL;
    size_t size = strlen(encoded) + 8;
    char *bearer = malloc(size);
    if (bearer)
        snprintf(bearer, size, "Bearer %s", encoded);
    free(encoded);
    return bearer;
}
