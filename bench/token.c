/* token.c - JWT signing with libjwt, claims as tools/token makes them. */
#include "token.h"

#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char *token_bearer(const char *private_key_file, const char *subject, bool admin) {
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
    jwt_add_grant(token, "sub", subject);
    jwt_add_grant(token, "iss", "library");
    jwt_add_grant(token, "aud", "library-api");
    jwt_add_grant(token, "role", admin ? "admin" : "user");
    jwt_add_grant_int(token, "iat", now);
    jwt_add_grant_int(token, "nbf", now);
    jwt_add_grant_int(token, "exp", now + 7200);
    char *bearer = NULL;
    if (jwt_set_alg(token, JWT_ALG_RS256, key, (int)key_size) == 0) {
        char *encoded = jwt_encode_str(token);
        if (encoded != NULL) {
            size_t size = strlen(encoded) + 8;
            bearer = malloc(size);
            if (bearer)
                snprintf(bearer, size, "Bearer %s", encoded);
            free(encoded);
        }
    }
    jwt_free(token);
    return bearer;
}
