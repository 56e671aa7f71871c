/* auth.c - bearer JWT verification with OpenSSL (signature) and libjwt (claims).
 *
 * The algorithm is checked on the raw header first, then the signature is verified here with
 * the public key parsed once at start, for the key's own algorithm only: an HS256 token
 * "signed" with our public key as the HMAC secret, or `alg: none`, never verifies. Only then
 * does libjwt parse the claims (without a key: it would otherwise parse the PEM again on
 * every call, under an OpenSSL lock, which capped a service at about 4k calls/s).
 *
 * Tokens that verified are remembered (a small direct-mapped cache keyed by the whole token)
 * until they expire, so a client reusing its token pays for the signature once. */
#include "auth.h"

#include <ctype.h>
#include <jwt.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "arena.h"
#include "text.h"

enum {
    TOKEN_MAX = 8192,
    KEY_MAX = 16384,
    CACHE_SETS = 1024,        /* verified tokens remembered: CACHE_SETS x CACHE_WAYS */
    CACHE_WAYS = 4,           /* a token may sit in any of the 4 slots of its set */
    CACHE_SLOTS = CACHE_SETS * CACHE_WAYS,
    CACHE_TOKEN_MAX = 2048,   /* longer tokens are verified every time */
    CACHE_LOCKS = 16,
};

/* A token that verified, and what it says. */
typedef struct cached_token {
    char *token;
    uint64_t hash;
    auth_identity identity;
    int64_t expires;     /* exp + leeway */
    int64_t not_before;  /* nbf - leeway */
} cached_token;

struct auth_verifier {
    jwt_alg_t algorithm;
    const char *algorithm_name;
    EVP_PKEY *key;
    char *issuer;
    char *audience;
    int64_t leeway_seconds;
    atomic_uint_fast64_t signature_checks;
    pthread_rwlock_t cache_locks[CACHE_LOCKS]; /* readers share: a hit only reads */
    cached_token cache[CACHE_SLOTS];
};

/* Reads the whole key file; NULL when missing, unreadable or too large. */
static unsigned char *read_file(const char *path, size_t *size) {
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return NULL;
    unsigned char *data = malloc(KEY_MAX + 1);
    size_t n = data ? fread(data, 1, KEY_MAX + 1, file) : 0;
    fclose(file);
    if (data == NULL || n == 0 || n > KEY_MAX) {
        free(data);
        return NULL;
    }
    data[n] = '\0';
    *size = n;
    return data;
}

/* Parses the key: RSA -> RS256, EC on P-256 -> ES256; anything else is refused. */
static EVP_PKEY *key_algorithm(const unsigned char *pem, size_t size, jwt_alg_t *algorithm,
                               const char **name) {
    BIO *bio = BIO_new_mem_buf(pem, (int)size);
    EVP_PKEY *key = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (key == NULL)
        return NULL;
    bool ok = false;
    if (EVP_PKEY_base_id(key) == EVP_PKEY_RSA) {
        *algorithm = JWT_ALG_RS256;
        *name = "RS256";
        ok = EVP_PKEY_get_bits(key) >= 2048;
    } else if (EVP_PKEY_base_id(key) == EVP_PKEY_EC) {
        char group[64] = "";
        size_t group_size = 0;
        EVP_PKEY_get_group_name(key, group, sizeof group, &group_size);
        *algorithm = JWT_ALG_ES256;
        *name = "ES256";
        ok = strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
    }
    if (!ok) {
        EVP_PKEY_free(key);
        return NULL;
    }
    return key;
}

status_code auth_verifier_create(const char *public_key_file, const char *issuer,
                                 const char *audience, int64_t leeway_seconds,
                                 auth_verifier **out, status *st) {
    if (public_key_file == NULL || public_key_file[0] == '\0')
        return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_PUBLIC_KEY", "no public key file given");
    auth_verifier *v = calloc(1, sizeof *v);
    if (v == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    for (int i = 0; i < CACHE_LOCKS; i++)
        pthread_rwlock_init(&v->cache_locks[i], NULL);
    size_t pem_size = 0;
    unsigned char *pem = read_file(public_key_file, &pem_size);
    if (pem == NULL) {
        auth_verifier_destroy(v);
        return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_PUBLIC_KEY",
                          "cannot read the public key file %s", public_key_file);
    }
    v->key = key_algorithm(pem, pem_size, &v->algorithm, &v->algorithm_name);
    free(pem);
    if (v->key == NULL) {
        auth_verifier_destroy(v);
        return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_PUBLIC_KEY",
                          "%s is not a PEM public key for RS256 (RSA, 2048 bits or more) or "
                          "ES256 (EC P-256)", public_key_file);
    }
    v->issuer = strdup(issuer ? issuer : "");
    v->audience = strdup(audience ? audience : "");
    v->leeway_seconds = leeway_seconds < 0 ? 0 : leeway_seconds;
    if (v->issuer == NULL || v->audience == NULL) {
        auth_verifier_destroy(v);
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    }
    *out = v;
    return STATUS_OK;
}

void auth_verifier_destroy(auth_verifier *v) {
    if (v == NULL)
        return;
    EVP_PKEY_free(v->key);
    for (int i = 0; i < CACHE_SLOTS; i++)
        free(v->cache[i].token);
    for (int i = 0; i < CACHE_LOCKS; i++)
        pthread_rwlock_destroy(&v->cache_locks[i]);
    free(v->issuer);
    free(v->audience);
    free(v);
}

static status_code invalid(status *st, const char *message) {
    return status_set(st, STATUS_UNAUTHENTICATED, "INVALID_TOKEN", "%s", message);
}

/* Finds "alg" in the decoded header JSON and copies its string value. */
static bool header_algorithm(const char *json, char *out, size_t size) {
    const char *key = strstr(json, "\"alg\"");
    if (key == NULL)
        return false;
    const char *p = key + 5;
    while (isspace((unsigned char)*p))
        p++;
    if (*p++ != ':')
        return false;
    while (isspace((unsigned char)*p))
        p++;
    if (*p++ != '"')
        return false;
    size_t n = 0;
    while (*p && *p != '"' && n + 1 < size)
        out[n++] = *p++;
    out[n] = '\0';
    return *p == '"' && strstr(p, "\"alg\"") == NULL; /* one alg, not two */
}

static status_code check_algorithm(const auth_verifier *v, const char *token, status *st) {
    const char *dot = strchr(token, '.');
    if (dot == NULL || strchr(dot + 1, '.') == NULL || dot == token)
        return invalid(st, "the token is not a JWT (header.payload.signature)");
    arena *a = arena_create(1024);
    if (a == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    char *encoded = arena_strndup(a, token, (size_t)(dot - token));
    uint8_t *decoded = NULL;
    size_t size = 0;
    char algorithm[32] = "";
    bool parsed = encoded && text_base64url_decode(a, encoded, &decoded, &size);
    char *json = parsed ? arena_strndup(a, (const char *)decoded, size) : NULL;
    bool found = json && header_algorithm(json, algorithm, sizeof algorithm);
    arena_destroy(a);
    if (!found)
        return invalid(st, "the token header does not name one algorithm");
    if (strcmp(algorithm, v->algorithm_name) != 0)
        return status_set(st, STATUS_UNAUTHENTICATED, "INVALID_TOKEN",
                          "token algorithm %.16s is not accepted; expected %s", algorithm,
                          v->algorithm_name);
    return STATUS_OK;
}

/* True when the JSON array text has a top-level string element equal to wanted. Elements
 * are compared whole, as libjwt wrote them: a substring search for "\"wanted\"" would also
 * accept ["\\"wanted"] or [{"wanted": 1}]. An element with escapes never equals a wanted
 * value without them, and a configured audience has none. */
static bool json_array_has_string(const char *json, const char *wanted) {
    if (json[0] != '[')
        return false;
    size_t wanted_length = strlen(wanted);
    int depth = 0;
    for (const char *p = json; *p != '\0'; p++) {
        if (*p == '[' || *p == '{') {
            depth++;
        } else if (*p == ']' || *p == '}') {
            depth--;
        } else if (*p == '"') {
            const char *start = ++p;
            while (*p != '\0' && *p != '"')
                p += p[0] == '\\' && p[1] != '\0' ? 2 : 1;
            if (*p == '\0')
                return false;
            if (depth == 1 && (size_t)(p - start) == wanted_length &&
                memcmp(start, wanted, wanted_length) == 0)
                return true;
        }
    }
    return false;
}

/* aud may be one string or an array of strings; any match is enough. */
static bool audience_matches(jwt_t *jwt, const char *audience) {
    const char *single = jwt_get_grant(jwt, "aud");
    if (single != NULL)
        return strcmp(single, audience) == 0;
    char *json = jwt_get_grants_json(jwt, "aud");
    if (json == NULL)
        return false;
    bool found = json_array_has_string(json, audience);
    free(json);
    return found;
}

static status_code check_claims(const auth_verifier *v, jwt_t *jwt, auth_identity *out,
                                status *st) {
    time_t now = time(NULL);
    long exp = jwt_get_grant_int(jwt, "exp");
    if (exp == 0)
        return invalid(st, "the token has no expiry (exp)");
    if (now > exp + v->leeway_seconds)
        return status_set(st, STATUS_UNAUTHENTICATED, "TOKEN_EXPIRED", "the token has expired");
    long nbf = jwt_get_grant_int(jwt, "nbf");
    if (nbf != 0 && now + v->leeway_seconds < nbf)
        return invalid(st, "the token is not valid yet (nbf)");
    const char *issuer = jwt_get_grant(jwt, "iss");
    if (issuer == NULL || strcmp(issuer, v->issuer) != 0)
        return invalid(st, "the token issuer does not match");
    if (!audience_matches(jwt, v->audience))
        return invalid(st, "the token audience does not match");
    const char *subject = jwt_get_grant(jwt, "sub");
    if (subject == NULL || subject[0] == '\0')
        return invalid(st, "the token has no subject (sub)");
    if (strlen(subject) >= AUTH_SUBJECT_MAX || !text_is_valid_utf8(subject, strlen(subject), false))
        return invalid(st, "the token subject is not a valid user id");
    const char *role = jwt_get_grant(jwt, "role");
    snprintf(out->subject, sizeof out->subject, "%s", subject);
    out->admin = role != NULL && strcmp(role, "admin") == 0;
    return STATUS_OK;
}

/* Verifies the JWS signature over "header.payload" with the key, for its algorithm. */
static bool signature_verifies(const auth_verifier *v, const char *token) {
    const char *last_dot = strrchr(token, '.');
    arena *a = arena_create(1024);
    if (a == NULL || last_dot == NULL) {
        arena_destroy(a);
        return false;
    }
    uint8_t *signature = NULL;
    size_t signature_size = 0;
    bool ok = text_base64url_decode(a, last_dot + 1, &signature, &signature_size) && signature_size > 0;
    unsigned char *der = NULL;
    if (ok && v->algorithm == JWT_ALG_ES256) {
        /* JWS carries r || s (32 bytes each); OpenSSL wants a DER ECDSA-Sig-Value */
        ECDSA_SIG *sig = signature_size == 64 ? ECDSA_SIG_new() : NULL;
        BIGNUM *r = sig ? BN_bin2bn(signature, 32, NULL) : NULL;
        BIGNUM *s_value = sig ? BN_bin2bn(signature + 32, 32, NULL) : NULL;
        ok = sig && r && s_value && ECDSA_SIG_set0(sig, r, s_value) == 1;
        if (!ok) {
            BN_free(r);
            BN_free(s_value);
        }
        int der_size = ok ? i2d_ECDSA_SIG(sig, &der) : -1;
        ECDSA_SIG_free(sig);
        ok = der_size > 0;
        signature = der;
        signature_size = ok ? (size_t)der_size : 0;
    }
    EVP_MD_CTX *context = ok ? EVP_MD_CTX_new() : NULL;
    ok = context != NULL &&
         EVP_DigestVerifyInit(context, NULL, EVP_sha256(), NULL, v->key) == 1 &&
         EVP_DigestVerify(context, signature, signature_size, (const unsigned char *)token,
                          (size_t)(last_dot - token)) == 1;
    EVP_MD_CTX_free(context);
    OPENSSL_free(der);
    arena_destroy(a);
    return ok;
}

/* The first of the CACHE_WAYS slots a token may sit in; the set's lock. Four ways, not one:
 * with one slot per token, two busy users whose tokens share a slot evict each other on every
 * call and pay a signature check each time (seen in the GetBook benchmark: 256 readers in
 * 1,024 direct-mapped slots). */
static cached_token *cache_set(auth_verifier *v, uint64_t hash, pthread_rwlock_t **lock) {
    size_t set = hash % CACHE_SETS;
    *lock = &v->cache_locks[set % CACHE_LOCKS];
    return &v->cache[set * CACHE_WAYS];
}

/* A remembered verification that still holds at `now`. */
static bool cache_lookup(auth_verifier *v, const char *token, uint64_t hash, int64_t now,
                         auth_identity *out) {
    pthread_rwlock_t *lock;
    const cached_token *set = cache_set(v, hash, &lock);
    bool hit = false;
    pthread_rwlock_rdlock(lock);
    for (int way = 0; way < CACHE_WAYS && !hit; way++) {
        const cached_token *entry = &set[way];
        hit = entry->token != NULL && entry->hash == hash && strcmp(entry->token, token) == 0 &&
              now <= entry->expires && now >= entry->not_before;
        if (hit)
            *out = entry->identity;
    }
    pthread_rwlock_unlock(lock);
    return hit;
}

/* Remembers a verified token in its set, in place of the entry that expires first (an empty
 * slot counts as expired long ago). */
static void cache_store(auth_verifier *v, const char *token, uint64_t hash,
                        const auth_identity *identity, int64_t expires, int64_t not_before) {
    if (strlen(token) > CACHE_TOKEN_MAX)
        return;
    char *copy = strdup(token);
    if (copy == NULL)
        return;
    pthread_rwlock_t *lock;
    cached_token *set = cache_set(v, hash, &lock);
    pthread_rwlock_wrlock(lock);
    cached_token *victim = &set[0];
    for (int way = 0; way < CACHE_WAYS; way++) {
        cached_token *entry = &set[way];
        if (entry->token != NULL && entry->hash == hash && strcmp(entry->token, token) == 0) {
            victim = entry; /* another thread verified the same token meanwhile */
            break;
        }
        if (entry->token == NULL || (victim->token != NULL && entry->expires < victim->expires))
            victim = entry;
    }
    char *old = victim->token;
    *victim = (cached_token){.token = copy, .hash = hash, .identity = *identity,
                             .expires = expires, .not_before = not_before};
    pthread_rwlock_unlock(lock);
    free(old);
}

status_code auth_verify(const auth_verifier *verifier, const char *authorization, auth_identity *out,
                        status *st) {
    auth_verifier *v = (auth_verifier *)verifier; /* the cache changes; what it answers does not */
    if (authorization == NULL || authorization[0] == '\0')
        return status_set(st, STATUS_UNAUTHENTICATED, "MISSING_TOKEN", "missing bearer token");
    if (strncasecmp(authorization, "Bearer ", 7) != 0)
        return status_set(st, STATUS_UNAUTHENTICATED, "MISSING_TOKEN",
                          "the authorization header must be \"Bearer <token>\"");
    const char *token = authorization + 7;
    while (*token == ' ')
        token++;
    if (strlen(token) > TOKEN_MAX)
        return invalid(st, "the token is too long");
    uint64_t hash = text_hash(token); /* the whole token is compared on a hit */
    if (cache_lookup(v, token, hash, (int64_t)time(NULL), out))
        return STATUS_OK;
    if (check_algorithm(v, token, st) != STATUS_OK)
        return st->code;
    atomic_fetch_add_explicit(&v->signature_checks, 1, memory_order_relaxed);
    if (!signature_verifies(v, token))
        return invalid(st, "the token signature does not verify");
    jwt_t *jwt = NULL;
    /* no key: the signature is verified above; libjwt only parses the claims */
    if (jwt_decode(&jwt, token, NULL, 0) != 0 || jwt == NULL)
        return invalid(st, "the token is not valid JSON");
    auth_identity identity;
    memset(&identity, 0, sizeof identity);
    status_code code = check_claims(v, jwt, &identity, st);
    int64_t expires = (int64_t)jwt_get_grant_int(jwt, "exp") + v->leeway_seconds;
    int64_t not_before = (int64_t)jwt_get_grant_int(jwt, "nbf") - v->leeway_seconds;
    jwt_free(jwt);
    if (code != STATUS_OK)
        return code;
    cache_store(v, token, hash, &identity, expires, not_before);
    *out = identity;
    return STATUS_OK;
}

uint64_t auth_verifier_signature_checks(const auth_verifier *verifier) {
    return atomic_load_explicit(&((auth_verifier *)verifier)->signature_checks, memory_order_relaxed);
}
