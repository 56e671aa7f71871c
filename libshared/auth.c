/* auth.c - bearer JWT verification with OpenSSL (signature) and libjwt (claims).
 *
 * The algorithm is checked on the raw header first, then the signature is verified here with
 * the public key parsed once at start, for the key's own algorithm only: an HS256 token
 * "signed" with our public key as the HMAC secret, or `alg: none`, never verifies. Only then
 * does libjwt parse the claims (without a key: it would otherwise parse the PEM again on
 * every call, under an OpenSSL lock, which capped a service at about 4k calls/s).
 *
 * Tokens that verified are remembered (a small direct-mapped cache keyed by the whole token)
 * until they expire, so a client reusing its token pays for the signature once.
 *
 * The keys are a set read from one file or a directory of <kid>.pem files. The set in use is
 * replaced whole when the files change: a listing (names, inodes, sizes, times; no key parsed)
 * is compared at most once a second, and at once when a token names an unknown kid, so a new
 * key works as soon as its file is there and a removed one stops within a second. A change
 * of the keys also forgets every remembered token (a generation number), or tokens signed
 * with a withdrawn key would go on verifying from the cache. */
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
#include <sys/stat.h>
#include <dirent.h>
#include <time.h>

#include "arena.h"
#include "log.h"
#include "text.h"

enum {
    TOKEN_MAX = 8192,
    KEY_MAX = 16384,
    CACHE_SETS = 1024,        /* verified tokens remembered: CACHE_SETS x CACHE_WAYS */
    CACHE_WAYS = 4,           /* a token may sit in any of the 4 slots of its set */
    CACHE_SLOTS = CACHE_SETS * CACHE_WAYS,
    CACHE_TOKEN_MAX = 2048,   /* longer tokens are verified every time */
    CACHE_LOCKS = 16,
    KEYS_MAX = 32,            /* keys in a directory */
    KID_MAX = 64,
    LISTING_UNREADABLE = 2,
};

/* A token that verified, and what it says. */
typedef struct cached_token {
    char *token;
    uint64_t hash;
    auth_identity identity;
    int64_t expires;     /* exp + leeway */
    int64_t not_before;  /* nbf - leeway */
    uint64_t generation; /* of the key set that verified it */
} cached_token;

typedef struct verify_key {
    char kid[KID_MAX + 1]; /* the file name without .pem; "" for a single key file */
    EVP_PKEY *key;
    jwt_alg_t algorithm;
    const char *algorithm_name;
} verify_key;

/* Never changed once in use: a reload builds a new set and swaps it in. */
typedef struct key_set {
    size_t count;
    verify_key keys[KEYS_MAX];
} key_set;

struct auth_verifier {
    char *key_path;
    bool key_directory;
    pthread_rwlock_t keys_lock;      /* guards keys (the pointer); held only to pick a key */
    key_set *keys;
    atomic_uint_fast64_t generation; /* moves on when the keys change */
    pthread_mutex_t reload_lock;     /* one look at the files at a time; guards the two below */
    uint64_t loaded_listing;         /* the listing the keys in use were read from */
    uint64_t failed_listing;         /* a listing whose keys could not be read (said once) */
    atomic_int_fast64_t next_look;   /* unix second from which the files are looked at again */
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

static void key_set_free(key_set *set) {
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->count; i++)
        EVP_PKEY_free(set->keys[i].key);
    free(set);
}

/* Parses one key file into the next slot of set. */
static status_code key_set_add(key_set *set, const char *path, const char *kid, status *st) {
    if (set->count == KEYS_MAX)
        return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_PUBLIC_KEY",
                          "more than %d keys; remove the ones no signer uses", KEYS_MAX);
    verify_key *slot = &set->keys[set->count];
    size_t pem_size = 0;
    unsigned char *pem = read_file(path, &pem_size);
    if (pem == NULL)
        return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_PUBLIC_KEY",
                          "cannot read the public key file %s", path);
    slot->key = key_algorithm(pem, pem_size, &slot->algorithm, &slot->algorithm_name);
    free(pem);
    if (slot->key == NULL)
        return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_PUBLIC_KEY",
                          "%s is not a PEM public key for RS256 (RSA, 2048 bits or more) or "
                          "ES256 (EC P-256)", path);
    snprintf(slot->kid, sizeof slot->kid, "%s", kid);
    set->count++;
    return STATUS_OK;
}

/* A kid is what a file name can say and a header carries without escapes. */
static bool kid_valid(const char *kid, size_t length) {
    if (length == 0 || length > KID_MAX || kid[0] == '.')
        return false;
    for (size_t i = 0; i < length; i++)
        if (!isalnum((unsigned char)kid[i]) && !strchr("._-", kid[i]))
            return false;
    return true;
}

/* The kid of a directory entry that is a key file (<kid>.pem, not hidden: Kubernetes keeps
 * its ..data links there), else false. */
static bool entry_kid(const char *name, char kid[KID_MAX + 1]) {
    size_t length = strlen(name);
    if (length <= 4 || strcmp(name + length - 4, ".pem") != 0 || !kid_valid(name, length - 4))
        return false;
    memcpy(kid, name, length - 4);
    kid[length - 4] = '\0';
    return true;
}

static int key_order(const void *a, const void *b) {
    return strcmp(((const verify_key *)a)->kid, ((const verify_key *)b)->kid);
}

/* Reads every key the path holds. A directory may be empty (every key withdrawn). */
static status_code key_set_read(const auth_verifier *v, key_set **out, status *st) {
    key_set *set = calloc(1, sizeof *set);
    if (set == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    status_code code = STATUS_OK;
    if (!v->key_directory) {
        code = key_set_add(set, v->key_path, "", st);
    } else {
        DIR *dir = opendir(v->key_path);
        if (dir == NULL)
            code = status_set(st, STATUS_INVALID_ARGUMENT, "BAD_PUBLIC_KEY",
                              "cannot read the key directory %s", v->key_path);
        for (struct dirent *entry; code == STATUS_OK && dir && (entry = readdir(dir)) != NULL;) {
            char kid[KID_MAX + 1], path[4096];
            if (!entry_kid(entry->d_name, kid))
                continue;
            snprintf(path, sizeof path, "%s/%s", v->key_path, entry->d_name);
            code = key_set_add(set, path, kid, st);
        }
        if (dir)
            closedir(dir);
        qsort(set->keys, set->count, sizeof set->keys[0], key_order);
    }
    if (code != STATUS_OK) {
        key_set_free(set);
        return code;
    }
    *out = set;
    return STATUS_OK;
}

/* What the key files look like now, without reading them: a hash of each key file's name,
 * inode, size and times (after symlinks, as Kubernetes mounts Secrets), summed so that the
 * directory's order does not matter. Odd; LISTING_UNREADABLE when nothing can be seen (never
 * 0, the listing of nothing read yet). */
static uint64_t key_listing(const auth_verifier *v) {
    struct stat info;
    if (!v->key_directory) {
        if (stat(v->key_path, &info) != 0)
            return LISTING_UNREADABLE;
        char text[128];
        snprintf(text, sizeof text, "%llu %lld %lld.%ld %lld.%ld", (unsigned long long)info.st_ino,
                 (long long)info.st_size, (long long)info.st_mtim.tv_sec, info.st_mtim.tv_nsec,
                 (long long)info.st_ctim.tv_sec, info.st_ctim.tv_nsec);
        return text_hash(text) | 1;
    }
    DIR *dir = opendir(v->key_path);
    if (dir == NULL)
        return LISTING_UNREADABLE;
    uint64_t sum = 0;
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;) {
        char kid[KID_MAX + 1], path[4096], text[4200];
        if (!entry_kid(entry->d_name, kid))
            continue;
        snprintf(path, sizeof path, "%s/%s", v->key_path, entry->d_name);
        if (stat(path, &info) != 0)
            continue;
        snprintf(text, sizeof text, "%s %llu %lld %lld.%ld %lld.%ld", entry->d_name,
                 (unsigned long long)info.st_ino, (long long)info.st_size,
                 (long long)info.st_mtim.tv_sec, info.st_mtim.tv_nsec,
                 (long long)info.st_ctim.tv_sec, info.st_ctim.tv_nsec);
        sum += text_hash(text);
    }
    closedir(dir);
    return sum | 1;
}

static const verify_key *key_named(const key_set *set, const char *kid) {
    for (size_t i = 0; i < set->count; i++)
        if (strcmp(set->keys[i].kid, kid) == 0)
            return &set->keys[i];
    return NULL;
}

/* True when a key was added, removed or replaced. Then remembered tokens are checked again:
 * one of a removed key must fail, and one without kid fails once a second key is there. */
static bool key_sets_differ(const key_set *old, const key_set *new) {
    if (old == NULL || old->count != new->count)
        return true;
    for (size_t i = 0; i < old->count; i++) {
        const verify_key *same = key_named(new, old->keys[i].kid);
        if (same == NULL || EVP_PKEY_eq(same->key, old->keys[i].key) != 1)
            return true;
    }
    return false;
}

static void key_set_describe(const key_set *set, char *out, size_t size) {
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < set->count && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s", i ? ", " : "", set->keys[i].kid);
    if (set->count == 0)
        snprintf(out, size, "none: every token is refused");
}

/* Reads the keys and puts them in use. Called with reload_lock held. */
static status_code keys_load(auth_verifier *v, uint64_t listing, status *st) {
    key_set *set = NULL;
    if (key_set_read(v, &set, st) != STATUS_OK) {
        if (v->keys != NULL && listing != v->failed_listing)
            LOG_ERROR("keeping the JWT keys in use: %s", st->message);
        v->failed_listing = listing;
        return st->code;
    }
    pthread_rwlock_wrlock(&v->keys_lock);
    key_set *old = v->keys;
    bool changed = key_sets_differ(old, set);
    v->keys = set;
    if (changed)
        atomic_fetch_add(&v->generation, 1);
    pthread_rwlock_unlock(&v->keys_lock);
    v->loaded_listing = listing;
    v->failed_listing = 0;
    if (old != NULL) {
        char kids[512];
        key_set_describe(set, kids, sizeof kids);
        log_write(set->count ? LOG_LEVEL_INFO : LOG_LEVEL_ERROR, "JWT keys from %s are now: %s",
                  v->key_path, kids);
    }
    key_set_free(old); /* a verification still using one of them holds a reference */
    return STATUS_OK;
}

/* Reads the keys again if their files changed since they were read. */
static void keys_refresh(auth_verifier *v) {
    pthread_mutex_lock(&v->reload_lock);
    uint64_t listing = key_listing(v);
    if (listing != v->loaded_listing && listing != v->failed_listing) {
        status st;
        keys_load(v, listing, &st);
    }
    pthread_mutex_unlock(&v->reload_lock);
}

/* At most once a second, from any call: how a removed key stops being accepted. */
static void keys_look_now_and_then(auth_verifier *v, int64_t now) {
    int_fast64_t due = atomic_load_explicit(&v->next_look, memory_order_relaxed);
    if (now >= due && atomic_compare_exchange_strong(&v->next_look, &due, now + 1))
        keys_refresh(v);
}

status_code auth_verifier_reload(auth_verifier *v, status *st) {
    pthread_mutex_lock(&v->reload_lock);
    v->failed_listing = 0; /* asked for: say it again if it still fails */
    status_code code = keys_load(v, key_listing(v), st);
    pthread_mutex_unlock(&v->reload_lock);
    return code;
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
    pthread_rwlock_init(&v->keys_lock, NULL);
    pthread_mutex_init(&v->reload_lock, NULL);
    struct stat info;
    v->key_directory = stat(public_key_file, &info) == 0 && S_ISDIR(info.st_mode);
    v->key_path = strdup(public_key_file);
    v->issuer = strdup(issuer ? issuer : "");
    v->audience = strdup(audience ? audience : "");
    v->leeway_seconds = leeway_seconds < 0 ? 0 : leeway_seconds;
    if (v->key_path == NULL || v->issuer == NULL || v->audience == NULL) {
        auth_verifier_destroy(v);
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    }
    atomic_init(&v->next_look, (int_fast64_t)time(NULL) + 1);
    if (keys_load(v, key_listing(v), st) != STATUS_OK) {
        auth_verifier_destroy(v);
        return st->code;
    }
    if (v->keys->count == 0) {
        auth_verifier_destroy(v);
        return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_PUBLIC_KEY",
                          "the key directory %s holds no <kid>.pem public key", public_key_file);
    }
    *out = v;
    return STATUS_OK;
}

void auth_verifier_destroy(auth_verifier *v) {
    if (v == NULL)
        return;
    key_set_free(v->keys);
    for (int i = 0; i < CACHE_SLOTS; i++)
        free(v->cache[i].token);
    for (int i = 0; i < CACHE_LOCKS; i++)
        pthread_rwlock_destroy(&v->cache_locks[i]);
    pthread_rwlock_destroy(&v->keys_lock);
    pthread_mutex_destroy(&v->reload_lock);
    free(v->key_path);
    free(v->issuer);
    free(v->audience);
    free(v);
}

static status_code invalid(status *st, const char *message) {
    return status_set(st, STATUS_UNAUTHENTICATED, "INVALID_TOKEN", "%s", message);
}

typedef enum header_field { FIELD_ABSENT, FIELD_FOUND, FIELD_MALFORMED } header_field;

/* Finds "name" in the decoded header JSON and copies its string value: it must be there once. */
static header_field header_string(const char *json, const char *name, char *out, size_t size) {
    char quoted[16];
    snprintf(quoted, sizeof quoted, "\"%s\"", name);
    const char *key = strstr(json, quoted);
    if (key == NULL)
        return FIELD_ABSENT;
    const char *p = key + strlen(quoted);
    while (isspace((unsigned char)*p))
        p++;
    if (*p++ != ':')
        return FIELD_MALFORMED;
    while (isspace((unsigned char)*p))
        p++;
    if (*p++ != '"')
        return FIELD_MALFORMED;
    size_t n = 0;
    while (*p && *p != '"' && n + 1 < size)
        out[n++] = *p++;
    out[n] = '\0';
    return *p == '"' && strstr(p, quoted) == NULL ? FIELD_FOUND : FIELD_MALFORMED; /* one, not two */
}

/* What the token's header says about how to check it. */
typedef struct token_header {
    char algorithm[32];
    char kid[KID_MAX + 1];
    header_field kid_field; /* FIELD_MALFORMED also for a kid no file could be named */
} token_header;

static status_code header_read(const char *token, token_header *out, status *st) {
    const char *dot = strchr(token, '.');
    if (dot == NULL || strchr(dot + 1, '.') == NULL || dot == token)
        return invalid(st, "the token is not a JWT (header.payload.signature)");
    arena *a = arena_create(1024);
    if (a == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    char *encoded = arena_strndup(a, token, (size_t)(dot - token));
    uint8_t *decoded = NULL;
    size_t size = 0;
    bool parsed = encoded && text_base64url_decode(a, encoded, &decoded, &size);
    char *json = parsed ? arena_strndup(a, (const char *)decoded, size) : NULL;
    bool found = json && header_string(json, "alg", out->algorithm, sizeof out->algorithm) == FIELD_FOUND;
    out->kid_field = json ? header_string(json, "kid", out->kid, sizeof out->kid) : FIELD_ABSENT;
    if (out->kid_field == FIELD_FOUND && !kid_valid(out->kid, strlen(out->kid)))
        out->kid_field = FIELD_MALFORMED;
    arena_destroy(a);
    if (!found)
        return invalid(st, "the token header does not name one algorithm");
    return STATUS_OK;
}

/* The key that checks the token, with a reference of its own (EVP_PKEY_free it), and the
 * generation of the set it came from. */
static status_code key_pick(auth_verifier *v, const token_header *header, verify_key *out,
                            uint64_t *generation, status *st) {
    pthread_rwlock_rdlock(&v->keys_lock);
    const key_set *set = v->keys;
    const verify_key *key = NULL;
    if (!v->key_directory)
        key = &set->keys[0]; /* one key file: any kid is ignored, as before kids */
    else if (header->kid_field == FIELD_FOUND)
        key = key_named(set, header->kid);
    else if (header->kid_field == FIELD_ABSENT && set->count == 1)
        key = &set->keys[0];
    if (key != NULL) {
        *out = *key;
        EVP_PKEY_up_ref(out->key);
        *generation = atomic_load(&v->generation);
    }
    size_t count = set->count;
    pthread_rwlock_unlock(&v->keys_lock);
    if (key != NULL)
        return STATUS_OK;
    if (header->kid_field == FIELD_FOUND)
        return status_set(st, STATUS_UNAUTHENTICATED, "INVALID_TOKEN",
                          "no key has the token's key id (kid) \"%s\"", header->kid);
    if (header->kid_field == FIELD_MALFORMED)
        return invalid(st, "the token's key id (kid) is not one string of letters, digits and ._-");
    return status_set(st, STATUS_UNAUTHENTICATED, "INVALID_TOKEN",
                      "the token names no key id (kid), and %zu keys could check it", count);
}

static status_code check_algorithm(const token_header *header, const verify_key *key, status *st) {
    if (strcmp(header->algorithm, key->algorithm_name) != 0)
        return status_set(st, STATUS_UNAUTHENTICATED, "INVALID_TOKEN",
                          "token algorithm %.16s is not accepted; expected %s", header->algorithm,
                          key->algorithm_name);
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

bool auth_group_valid(const char *group) {
    size_t length = strlen(group);
    if (length == 0 || length >= AUTH_GROUP_MAX)
        return false;
    for (size_t i = 0; i < length; i++)
        if (!isalnum((unsigned char)group[i]) && !strchr("._-", group[i]))
            return false;
    return true;
}

/* The patron group: absent is the default group; anything but a valid name refuses the token. */
static status_code check_group(jwt_t *jwt, auth_identity *out, status *st) {
    char *json = jwt_get_grants_json(jwt, "group"); /* any type, as JSON text; NULL: absent */
    if (json == NULL) {
        snprintf(out->group, sizeof out->group, "%s", AUTH_DEFAULT_GROUP);
        return STATUS_OK;
    }
    bool is_string = json[0] == '"';
    free(json);
    const char *group = is_string ? jwt_get_grant(jwt, "group") : NULL;
    if (group == NULL || !auth_group_valid(group))
        return invalid(st, "the token's group claim is not a patron group name (1 to 63 letters, "
                           "digits and ._-)");
    snprintf(out->group, sizeof out->group, "%s", group);
    return STATUS_OK;
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
    return check_group(jwt, out, st);
}

/* Verifies the JWS signature over "header.payload" with the key, for its algorithm. */
static bool signature_verifies(const verify_key *v, const char *token) {
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
              now <= entry->expires && now >= entry->not_before &&
              entry->generation == atomic_load(&v->generation);
        if (hit)
            *out = entry->identity;
    }
    pthread_rwlock_unlock(lock);
    return hit;
}

/* Remembers a verified token in its set, in place of the entry that expires first (an empty
 * slot counts as expired long ago). */
static void cache_store(auth_verifier *v, const char *token, uint64_t hash,
                        const auth_identity *identity, int64_t expires, int64_t not_before,
                        uint64_t generation) {
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
                             .expires = expires, .not_before = not_before,
                             .generation = generation};
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
    int64_t now = (int64_t)time(NULL);
    keys_look_now_and_then(v, now);
    uint64_t hash = text_hash(token); /* the whole token is compared on a hit */
    if (cache_lookup(v, token, hash, now, out))
        return STATUS_OK;
    token_header header;
    verify_key key;
    uint64_t generation = 0;
    if (header_read(token, &header, st) != STATUS_OK)
        return st->code;
    if (key_pick(v, &header, &key, &generation, st) != STATUS_OK) {
        if (!v->key_directory || header.kid_field != FIELD_FOUND)
            return st->code;
        keys_refresh(v); /* its file may have just been added */
        if (key_pick(v, &header, &key, &generation, st) != STATUS_OK)
            return st->code;
    }
    status_code code = check_algorithm(&header, &key, st);
    if (code == STATUS_OK) {
        atomic_fetch_add_explicit(&v->signature_checks, 1, memory_order_relaxed);
        if (!signature_verifies(&key, token))
            code = invalid(st, "the token signature does not verify");
    }
    EVP_PKEY_free(key.key);
    if (code != STATUS_OK)
        return code;
    jwt_t *jwt = NULL;
    /* no key: the signature is verified above; libjwt only parses the claims */
    if (jwt_decode(&jwt, token, NULL, 0) != 0 || jwt == NULL)
        return invalid(st, "the token is not valid JSON");
    auth_identity identity;
    memset(&identity, 0, sizeof identity);
    code = check_claims(v, jwt, &identity, st);
    int64_t expires = (int64_t)jwt_get_grant_int(jwt, "exp") + v->leeway_seconds;
    int64_t not_before = (int64_t)jwt_get_grant_int(jwt, "nbf") - v->leeway_seconds;
    jwt_free(jwt);
    if (code != STATUS_OK)
        return code;
    identity.expires_at = expires;
    cache_store(v, token, hash, &identity, expires, not_before, generation);
    *out = identity;
    return STATUS_OK;
}

uint64_t auth_verifier_signature_checks(const auth_verifier *verifier) {
    return atomic_load_explicit(&((auth_verifier *)verifier)->signature_checks, memory_order_relaxed);
}
