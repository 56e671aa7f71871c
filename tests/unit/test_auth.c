/* test_auth.c - JWT verification against the attacks and mistakes that matter: missing and
 * garbage tokens, expiry, nbf, wrong issuer or audience, `alg: none`, HS256 signed with the
 * public key as the secret, a token for another key type, a foreign key, tampering. */
#include <criterion/criterion.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "auth.h"
#include "text.h"

static char dir[256];
static arena *mem;

static void write_pem(const char *name, EVP_PKEY *key, bool private_key) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *file = fopen(path, "w");
    cr_assert_not_null(file);
    if (private_key)
        PEM_write_PrivateKey(file, key, NULL, NULL, 0, NULL, NULL);
    else
        PEM_write_PUBKEY(file, key);
    fclose(file);
}

static void setup(void) {
    snprintf(dir, sizeof dir, "/tmp/auth-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    mem = arena_create(0);
    EVP_PKEY *rsa = EVP_RSA_gen(2048), *other = EVP_RSA_gen(2048);
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    cr_assert(rsa && other && ec);
    write_pem("rsa.pem", rsa, true);
    write_pem("rsa.pub", rsa, false);
    write_pem("other.pem", other, true);
    write_pem("ec.pem", ec, true);
    write_pem("ec.pub", ec, false);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(other);
    EVP_PKEY_free(ec);
}

static void teardown(void) {
    char command[300];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    cr_assert_eq(system(command), 0);
    arena_destroy(mem);
}

TestSuite(auth, .init = setup, .fini = teardown);

static char *file_text(const char *name, size_t *size) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *file = fopen(path, "rb");
    cr_assert_not_null(file, "%s", path);
    char *text = arena_alloc(mem, 16384);
    *size = fread(text, 1, 16383, file);
    fclose(file);
    return text;
}

static auth_verifier *verifier_for(const char *public_name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, public_name);
    auth_verifier *v = NULL;
    status st;
    cr_assert_eq(auth_verifier_create(path, "library", "library-api", 30, &v, &st), STATUS_OK,
                 "%s", st.message);
    return v;
}

typedef struct claims {
    const char *subject, *issuer, *audience, *role;
    long exp_offset, nbf_offset; /* relative to now; 0 leaves the claim out */
    bool audience_array;
    const char *kid; /* the header's key id; NULL: none */
    const char *group_json; /* the group claim as JSON ("\"child\"", "5"); NULL: none */
} claims;

static claims valid_claims(void) {
    return (claims){.subject = "alice", .issuer = "library", .audience = "library-api",
                    .role = "user", .exp_offset = 600};
}

/* Signs with libjwt: alg with the key file's bytes as key (an HMAC secret for HS256). */
static char *sign(jwt_alg_t alg, const char *key_name, claims c) {
    jwt_t *jwt = NULL;
    cr_assert_eq(jwt_new(&jwt), 0);
    time_t now = time(NULL);
    if (c.subject)
        jwt_add_grant(jwt, "sub", c.subject);
    if (c.issuer)
        jwt_add_grant(jwt, "iss", c.issuer);
    if (c.audience_array)
        jwt_add_grants_json(jwt, "{\"aud\":[\"other\",\"library-api\"]}");
    else if (c.audience)
        jwt_add_grant(jwt, "aud", c.audience);
    if (c.role)
        jwt_add_grant(jwt, "role", c.role);
    if (c.exp_offset)
        jwt_add_grant_int(jwt, "exp", now + c.exp_offset);
    if (c.nbf_offset)
        jwt_add_grant_int(jwt, "nbf", now + c.nbf_offset);
    if (c.kid)
        cr_assert_eq(jwt_add_header(jwt, "kid", c.kid), 0);
    if (c.group_json)
        cr_assert_eq(jwt_add_grants_json(jwt, arena_sprintf(mem, "{\"group\":%s}", c.group_json)), 0);
    size_t size = 0;
    char *key = key_name ? file_text(key_name, &size) : NULL;
    cr_assert_eq(jwt_set_alg(jwt, alg, (unsigned char *)key, (int)size), 0);
    char *encoded = jwt_encode_str(jwt);
    cr_assert_not_null(encoded);
    char *token = arena_strdup(mem, encoded);
    free(encoded);
    jwt_free(jwt);
    return token;
}

static status_code verify(auth_verifier *v, const char *token, auth_identity *who, status *st) {
    const char *header = token ? arena_sprintf(mem, "Bearer %s", token) : NULL;
    status_clear(st);
    return auth_verify(v, header, who, st);
}

static void expect_rejected(auth_verifier *v, const char *token, const char *why) {
    auth_identity who;
    status st;
    status_code code = verify(v, token, &who, &st);
    cr_assert_eq(code, STATUS_UNAUTHENTICATED, "%s: accepted (or %s)", why, status_code_name(code));
    cr_assert_str_not_empty(st.reason, "%s", why);
    if (token && strlen(token) > 20)
        cr_assert_null(strstr(st.message, token), "the message must not echo the token");
}

Test(auth, accepts_user_and_admin_tokens) {
    auth_verifier *v = verifier_for("rsa.pub");
    auth_identity who;
    status st;
    cr_assert_eq(verify(v, sign(JWT_ALG_RS256, "rsa.pem", valid_claims()), &who, &st), STATUS_OK,
                 "%s", st.message);
    cr_assert_str_eq(who.subject, "alice");
    cr_assert_not(who.admin);
    claims admin = valid_claims();
    admin.role = "admin";
    cr_assert_eq(verify(v, sign(JWT_ALG_RS256, "rsa.pem", admin), &who, &st), STATUS_OK);
    cr_assert(who.admin);
    claims many = valid_claims();
    many.audience_array = true;
    cr_assert_eq(verify(v, sign(JWT_ALG_RS256, "rsa.pem", many), &who, &st), STATUS_OK, "%s", st.message);
    auth_verifier_destroy(v);
}

Test(auth, accepts_es256_with_an_ec_key) {
    auth_verifier *v = verifier_for("ec.pub");
    auth_identity who;
    status st;
    cr_assert_eq(verify(v, sign(JWT_ALG_ES256, "ec.pem", valid_claims()), &who, &st), STATUS_OK,
                 "%s", st.message);
    expect_rejected(v, sign(JWT_ALG_RS256, "rsa.pem", valid_claims()), "RS256 against an EC key");
    auth_verifier_destroy(v);
}

Test(auth, missing_and_garbage_tokens) {
    auth_verifier *v = verifier_for("rsa.pub");
    auth_identity who;
    status st;
    cr_assert_eq(auth_verify(v, NULL, &who, &st), STATUS_UNAUTHENTICATED);
    cr_assert_str_eq(st.reason, "MISSING_TOKEN");
    cr_assert_eq(auth_verify(v, "", &who, &st), STATUS_UNAUTHENTICATED);
    cr_assert_eq(auth_verify(v, "Basic YWxpY2U6cGFzcw==", &who, &st), STATUS_UNAUTHENTICATED);
    expect_rejected(v, "", "empty bearer");
    expect_rejected(v, "garbage", "no dots");
    expect_rejected(v, "a.b.c", "three garbage parts");
    expect_rejected(v, "....", "dots only");
    char *huge = arena_alloc(mem, 20000);
    memset(huge, 'A', 19999);
    expect_rejected(v, huge, "oversize");
    auth_verifier_destroy(v);
}

Test(auth, time_claims) {
    auth_verifier *v = verifier_for("rsa.pub");
    claims c = valid_claims();
    c.exp_offset = -3600;
    auth_identity who;
    status st;
    cr_assert_eq(verify(v, sign(JWT_ALG_RS256, "rsa.pem", c), &who, &st), STATUS_UNAUTHENTICATED);
    cr_assert_str_eq(st.reason, "TOKEN_EXPIRED");
    c.exp_offset = -10; /* within the 30 s leeway */
    cr_assert_eq(verify(v, sign(JWT_ALG_RS256, "rsa.pem", c), &who, &st), STATUS_OK);
    c = valid_claims();
    c.nbf_offset = 3600;
    expect_rejected(v, sign(JWT_ALG_RS256, "rsa.pem", c), "nbf in the future");
    c.exp_offset = 0;
    c.nbf_offset = 0;
    expect_rejected(v, sign(JWT_ALG_RS256, "rsa.pem", c), "no exp");
    auth_verifier_destroy(v);
}

Test(auth, issuer_audience_and_subject) {
    auth_verifier *v = verifier_for("rsa.pub");
    claims c = valid_claims();
    c.audience = "someone-else";
    expect_rejected(v, sign(JWT_ALG_RS256, "rsa.pem", c), "wrong aud");
    c = valid_claims();
    c.issuer = "evil";
    expect_rejected(v, sign(JWT_ALG_RS256, "rsa.pem", c), "wrong iss");
    c = valid_claims();
    c.subject = NULL;
    expect_rejected(v, sign(JWT_ALG_RS256, "rsa.pem", c), "no sub");
    c = valid_claims();
    c.audience = NULL;
    expect_rejected(v, sign(JWT_ALG_RS256, "rsa.pem", c), "no aud");
    auth_verifier_destroy(v);
}

static char *b64(const char *text) {
    return text_base64url_encode(mem, (const uint8_t *)text, strlen(text));
}

Test(auth, algorithm_confusion_is_refused) {
    auth_verifier *v = verifier_for("rsa.pub");
    /* HS256 with the public key PEM as the HMAC secret */
    expect_rejected(v, sign(JWT_ALG_HS256, "rsa.pub", valid_claims()), "HS256 with the public key");
    /* alg none, with and without a trailing signature */
    char payload[256];
    snprintf(payload, sizeof payload,
             "{\"sub\":\"alice\",\"iss\":\"library\",\"aud\":\"library-api\",\"role\":\"admin\","
             "\"exp\":%ld}", (long)time(NULL) + 600);
    const char *none = arena_sprintf(mem, "%s.%s.", b64("{\"alg\":\"none\",\"typ\":\"JWT\"}"), b64(payload));
    expect_rejected(v, none, "alg none");
    const char *none_upper = arena_sprintf(mem, "%s.%s.", b64("{\"alg\":\"NONE\"}"), b64(payload));
    expect_rejected(v, none_upper, "alg NONE");
    /* two alg members: a parser that takes the first or the last must not be fooled */
    const char *twice = arena_sprintf(mem, "%s.%s.sig",
                                      b64("{\"alg\":\"RS256\",\"alg\":\"none\"}"), b64(payload));
    expect_rejected(v, twice, "duplicate alg");
    auth_verifier_destroy(v);
}

Test(auth, foreign_key_and_tampering) {
    auth_verifier *v = verifier_for("rsa.pub");
    expect_rejected(v, sign(JWT_ALG_RS256, "other.pem", valid_claims()), "signed by another key");
    char *token = sign(JWT_ALG_RS256, "rsa.pem", valid_claims());
    char *first_dot = strchr(token, '.');
    char *second_dot = strchr(first_dot + 1, '.');
    char payload[256];
    snprintf(payload, sizeof payload,
             "{\"sub\":\"alice\",\"iss\":\"library\",\"aud\":\"library-api\",\"role\":\"admin\","
             "\"exp\":%ld}", (long)time(NULL) + 600);
    const char *tampered = arena_sprintf(mem, "%.*s.%s%s", (int)(first_dot - token), token,
                                         b64(payload), second_dot);
    expect_rejected(v, tampered, "payload changed after signing");
    auth_verifier_destroy(v);
}

Test(auth, bad_key_files_are_refused_with_a_message) {
    auth_verifier *v = NULL;
    status st;
    cr_assert_eq(auth_verifier_create("/nonexistent/key.pem", "i", "a", 0, &v, &st), STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(st.message, "/nonexistent/key.pem") != NULL);
    char path[512];
    snprintf(path, sizeof path, "%s/not-a-key.pem", dir);
    FILE *file = fopen(path, "w");
    fputs("hello\n", file);
    fclose(file);
    cr_assert_eq(auth_verifier_create(path, "i", "a", 0, &v, &st), STATUS_INVALID_ARGUMENT);
    snprintf(path, sizeof path, "%s/rsa.pem", dir); /* a private key is not a public key */
    cr_assert_eq(auth_verifier_create(path, "i", "a", 0, &v, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_null(v);
    auth_verifier_destroy(NULL);
}

Test(auth, tools_token_issues_tokens_the_services_accept) {
    const char *root = getenv("LIBRARY_SOURCE_ROOT");
    cr_assert_not_null(root, "LIBRARY_SOURCE_ROOT is not set");
    char command[1024];
    snprintf(command, sizeof command, "cd '%s' && RUN_DIR='%s/run' ./tools/token alice --admin", root, dir);
    FILE *pipe = popen(command, "r");
    char token[4096] = "";
    cr_assert_not_null(fgets(token, sizeof token, pipe));
    cr_assert_eq(pclose(pipe), 0);
    token[strcspn(token, "\n")] = '\0';
    char key[512];
    snprintf(key, sizeof key, "%s/run/keys/jwt-public.pem", dir);
    auth_verifier *v = NULL;
    status st;
    cr_assert_eq(auth_verifier_create(key, "library", "library-api", 0, &v, &st), STATUS_OK, "%s", st.message);
    auth_identity who;
    cr_assert_eq(verify(v, token, &who, &st), STATUS_OK, "%s", st.message);
    cr_assert_str_eq(who.subject, "alice");
    cr_assert(who.admin);
    snprintf(command, sizeof command, "cd '%s' && RUN_DIR='%s/run' ./tools/token bob", root, dir);
    pipe = popen(command, "r");
    cr_assert_not_null(fgets(token, sizeof token, pipe));
    pclose(pipe);
    token[strcspn(token, "\n")] = '\0';
    cr_assert_eq(verify(v, token, &who, &st), STATUS_OK);
    cr_assert_str_eq(who.subject, "bob");
    cr_assert_not(who.admin);
    auth_verifier_destroy(v);
}

Test(auth, a_remembered_token_is_still_checked_for_expiry_and_tampering) {
    auth_verifier *v = verifier_for("rsa.pub");
    claims short_lived = valid_claims();
    short_lived.exp_offset = 1;
    char *token = sign(JWT_ALG_RS256, "rsa.pem", short_lived);
    auth_identity who;
    status st;
    for (int i = 0; i < 3; i++) /* the second and third come from the cache */
        cr_assert_eq(verify(v, token, &who, &st), STATUS_OK, "%s", st.message);
    cr_assert_str_eq(who.subject, "alice");
    /* one character of the signature changed: another token, verified afresh */
    char *forged = arena_strdup(mem, token);
    char *last = forged + strlen(forged) - 2;
    *last = *last == 'A' ? 'B' : 'A';
    expect_rejected(v, forged, "a cached token's signature changed");
    /* past exp + leeway (30 s in verifier_for) the cached entry no longer answers: use a
     * verifier without leeway */
    char path[512];
    snprintf(path, sizeof path, "%s/rsa.pub", dir);
    auth_verifier *strict = NULL;
    cr_assert_eq(auth_verifier_create(path, "library", "library-api", 0, &strict, &st), STATUS_OK);
    cr_assert_eq(verify(strict, token, &who, &st), STATUS_OK, "%s", st.message);
    sleep(2);
    cr_assert_eq(verify(strict, token, &who, &st), STATUS_UNAUTHENTICATED, "an expired cached token");
    cr_assert_str_eq(st.reason, "TOKEN_EXPIRED");
    auth_verifier_destroy(strict);
    auth_verifier_destroy(v);
}

/* Many users at once: each token is checked once and then remembered, however the tokens'
 * hashes fall (a direct-mapped cache of 1,024 slots evicted ~40 of 200 on the second round). */
Test(auth, many_users_tokens_are_each_checked_once) {
    enum { USERS = 200 };
    auth_verifier *v = verifier_for("rsa.pub");
    char *tokens[USERS];
    for (int i = 0; i < USERS; i++) {
        claims c = valid_claims();
        c.subject = arena_sprintf(mem, "reader-%d", i);
        tokens[i] = sign(JWT_ALG_RS256, "rsa.pem", c);
    }
    auth_identity who;
    status st;
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < USERS; i++) {
            cr_assert_eq(verify(v, tokens[i], &who, &st), STATUS_OK, "%s", st.message);
            cr_assert_str_eq(who.subject, arena_sprintf(mem, "reader-%d", i));
        }
    uint64_t checks = auth_verifier_signature_checks(v);
    cr_assert_geq(checks, USERS);
    cr_assert_leq(checks, USERS + 8, "%llu signature checks for %d tokens used 3 times each",
                  (unsigned long long)checks, USERS);
    auth_verifier_destroy(v);
}

/* --- keys by kid: a directory of <kid>.pem --------------------------------------------- */

/* Copies a public key of dir to dir/keys/<kid>.pem the way a rotation should: written under a
 * name the verifier ignores, then renamed, so it never reads half a file. */
static void key_add(const char *public_name, const char *kid) {
    char from[512], temporary[512], to[512];
    snprintf(from, sizeof from, "%s/%s", dir, public_name);
    snprintf(temporary, sizeof temporary, "%s/keys/.%s.tmp", dir, kid);
    snprintf(to, sizeof to, "%s/keys/%s.pem", dir, kid);
    char command[2048];
    snprintf(command, sizeof command, "mkdir -p '%s/keys' && cp '%s' '%s'", dir, from, temporary);
    cr_assert_eq(system(command), 0);
    cr_assert_eq(rename(temporary, to), 0);
}

static void key_remove(const char *kid) {
    char path[512];
    snprintf(path, sizeof path, "%s/keys/%s.pem", dir, kid);
    cr_assert_eq(unlink(path), 0, "%s", path);
}

static auth_verifier *directory_verifier(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/keys", dir);
    auth_verifier *v = NULL;
    status st;
    cr_assert_eq(auth_verifier_create(path, "library", "library-api", 0, &v, &st), STATUS_OK,
                 "%s", st.message);
    return v;
}

static char *sign_with_kid(jwt_alg_t alg, const char *key_name, const char *kid) {
    claims c = valid_claims();
    c.kid = kid;
    return sign(alg, key_name, c);
}

static void expect_refused_saying(auth_verifier *v, const char *token, const char *words) {
    auth_identity who;
    status st;
    status_code code = verify(v, token, &who, &st);
    cr_assert_eq(code, STATUS_UNAUTHENTICATED, "accepted (or %s); expected a refusal saying \"%s\"",
                 status_code_name(code), words);
    cr_assert(strstr(st.message, words) != NULL, "\"%s\" does not say \"%s\"", st.message, words);
}

static void expect_accepted(auth_verifier *v, const char *token, const char *what) {
    auth_identity who;
    status st;
    status_code code = verify(v, token, &who, &st);
    cr_assert_eq(code, STATUS_OK, "%s: %s %s", what, status_code_name(code), st.message);
}

Test(auth, in_a_key_directory_the_kid_picks_the_one_key_that_checks_the_token) {
    key_add("rsa.pub", "2026-06");
    key_add("ec.pub", "2026-12");
    auth_verifier *v = directory_verifier();
    expect_accepted(v, sign_with_kid(JWT_ALG_RS256, "rsa.pem", "2026-06"), "RS256 with its kid");
    expect_accepted(v, sign_with_kid(JWT_ALG_ES256, "ec.pem", "2026-12"), "ES256 with its kid");
    /* the algorithm check stays: the kid's key decides which algorithm is expected */
    expect_refused_saying(v, sign_with_kid(JWT_ALG_RS256, "rsa.pem", "2026-12"), "expected ES256");
    /* a kid naming another RSA key: only that key is tried */
    key_add("rsa.pub", "copy");
    expect_refused_saying(v, sign_with_kid(JWT_ALG_RS256, "other.pem", "2026-06"), "signature");
    expect_refused_saying(v, sign_with_kid(JWT_ALG_RS256, "rsa.pem", "2027-01"), "\"2027-01\"");
    expect_refused_saying(v, sign_with_kid(JWT_ALG_RS256, "rsa.pem", "../rsa"), "kid");
    /* no kid: which of three keys? none is tried */
    expect_refused_saying(v, sign(JWT_ALG_RS256, "rsa.pem", valid_claims()), "names no key id");
    auth_verifier_destroy(v);
}

Test(auth, a_token_without_kid_is_checked_only_while_the_directory_holds_one_key) {
    key_add("rsa.pub", "only");
    auth_verifier *v = directory_verifier();
    char *no_kid = sign(JWT_ALG_RS256, "rsa.pem", valid_claims());
    expect_accepted(v, no_kid, "no kid, one key");
    key_add("ec.pub", "second");
    status st;
    cr_assert_eq(auth_verifier_reload(v, &st), STATUS_OK, "%s", st.message);
    expect_refused_saying(v, no_kid, "2 keys");
    auth_verifier_destroy(v);
}

Test(auth, a_single_key_file_ignores_the_kid_as_before) {
    auth_verifier *v = verifier_for("rsa.pub");
    expect_accepted(v, sign_with_kid(JWT_ALG_RS256, "rsa.pem", "anything"), "a kid, one key file");
    expect_accepted(v, sign_with_kid(JWT_ALG_RS256, "rsa.pem", "not/a file name"), "any kid");
    auth_verifier_destroy(v);
}

Test(auth, a_new_key_works_at_once_and_a_removed_one_stops_within_a_second) {
    key_add("rsa.pub", "old");
    auth_verifier *v = directory_verifier();
    char *old_token = sign_with_kid(JWT_ALG_RS256, "rsa.pem", "old");
    char *new_token = sign_with_kid(JWT_ALG_ES256, "ec.pem", "new");
    expect_refused_saying(v, new_token, "\"new\"");
    key_add("ec.pub", "new");
    expect_accepted(v, new_token, "the new kid, right after its file was added");
    expect_accepted(v, old_token, "the old kid, its file still there");
    expect_accepted(v, old_token, "the old kid again (remembered)");
    key_remove("old");
    /* looked at once a second: refused within two, remembered or not */
    int64_t removed = (int64_t)time(NULL);
    auth_identity who;
    status st;
    while (verify(v, old_token, &who, &st) == STATUS_OK && (int64_t)time(NULL) - removed <= 3)
        usleep(50 * 1000);
    cr_assert_eq(verify(v, old_token, &who, &st), STATUS_UNAUTHENTICATED,
                 "the removed key still verifies its tokens");
    cr_assert(strstr(st.message, "\"old\"") != NULL, "%s", st.message);
    expect_accepted(v, new_token, "the new kid after the old one went");
    auth_verifier_destroy(v);
}

Test(auth, a_reload_forgets_remembered_tokens_of_a_removed_key_and_keeps_keys_on_a_bad_file) {
    key_add("rsa.pub", "old");
    key_add("ec.pub", "new");
    auth_verifier *v = directory_verifier();
    char *old_token = sign_with_kid(JWT_ALG_RS256, "rsa.pem", "old");
    expect_accepted(v, old_token, "the old kid");
    key_remove("old");
    status st;
    cr_assert_eq(auth_verifier_reload(v, &st), STATUS_OK, "%s", st.message);
    expect_refused_saying(v, old_token, "\"old\""); /* at once: it was remembered */
    /* a file that is no key: the reload says so and the keys in use stay */
    char path[512];
    snprintf(path, sizeof path, "%s/keys/broken.pem", dir);
    FILE *file = fopen(path, "w");
    fputs("not a key\n", file);
    fclose(file);
    cr_assert_eq(auth_verifier_reload(v, &st), STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(st.message, "broken.pem") != NULL, "%s", st.message);
    expect_accepted(v, sign_with_kid(JWT_ALG_ES256, "ec.pem", "new"), "a key in use, after a failed reload");
    auth_verifier_destroy(v);
}

Test(auth, a_key_directory_must_hold_keys_at_start) {
    char path[512];
    snprintf(path, sizeof path, "%s/keys", dir);
    cr_assert_eq(mkdir(path, 0700), 0);
    auth_verifier *v = NULL;
    status st;
    cr_assert_eq(auth_verifier_create(path, "i", "a", 0, &v, &st), STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(st.message, "no <kid>.pem") != NULL, "%s", st.message);
    key_add("rsa.pem", "private"); /* a private key where a public one belongs */
    cr_assert_eq(auth_verifier_create(path, "i", "a", 0, &v, &st), STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(st.message, "private.pem") != NULL, "%s", st.message);
    cr_assert_null(v);
}

Test(auth, the_identity_says_when_the_token_expires) {
    auth_verifier *v = verifier_for("rsa.pub"); /* leeway 30 s */
    claims c = valid_claims();
    int64_t before = (int64_t)time(NULL);
    char *token = sign(JWT_ALG_RS256, "rsa.pem", c);
    int64_t after = (int64_t)time(NULL);
    auth_identity who;
    status st;
    for (int i = 0; i < 2; i++) { /* verified, then remembered */
        cr_assert_eq(verify(v, token, &who, &st), STATUS_OK, "%s", st.message);
        cr_assert(who.expires_at >= before + 600 + 30 && who.expires_at <= after + 600 + 30,
                  "expires_at %lld is not exp + leeway", (long long)who.expires_at);
    }
    auth_verifier_destroy(v);
}

Test(auth, the_group_claim_names_the_patron_group_and_defaults_to_patron) {
    auth_verifier *v = verifier_for("rsa.pub");
    auth_identity who;
    status st;
    cr_assert_eq(verify(v, sign(JWT_ALG_RS256, "rsa.pem", valid_claims()), &who, &st), STATUS_OK);
    cr_assert_str_eq(who.group, "patron");
    const char *good[] = {"\"child\"", "\"staff.ft-2_B\"",
                          "\"g23456789012345678901234567890123456789012345678901234567890123\""};
    const char *expected[] = {"child", "staff.ft-2_B",
                              "g23456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        claims c = valid_claims();
        c.group_json = good[i];
        for (int pass = 0; pass < 2; pass++) { /* verified, then remembered */
            cr_assert_eq(verify(v, sign(JWT_ALG_RS256, "rsa.pem", c), &who, &st), STATUS_OK,
                         "%s: %s", good[i], st.message);
            cr_assert_str_eq(who.group, expected[i]);
        }
    }
    auth_verifier_destroy(v);
}

Test(auth, a_group_that_is_no_group_name_refuses_the_token) {
    auth_verifier *v = verifier_for("rsa.pub");
    const char *bad[] = {"5", "true", "null", "[\"child\"]", "{\"name\":\"child\"}", "\"\"",
                         "\"child care\"", "\"kind/child\"", "\"chïld\"", "\"child\\\"x\"",
                         "\"g234567890123456789012345678901234567890123456789012345678901234\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        claims c = valid_claims();
        c.group_json = bad[i];
        auth_identity who;
        status st;
        cr_assert_eq(verify(v, sign(JWT_ALG_RS256, "rsa.pem", c), &who, &st), STATUS_UNAUTHENTICATED,
                     "group %s was accepted", bad[i]);
        cr_assert_str_eq(st.reason, "INVALID_TOKEN");
        cr_assert_not_null(strstr(st.message, "group"), "%s: %s", bad[i], st.message);
    }
    auth_verifier_destroy(v);
}

Test(auth, tools_token_sets_the_group_claim) {
    const char *root = getenv("LIBRARY_SOURCE_ROOT");
    cr_assert_not_null(root, "LIBRARY_SOURCE_ROOT is not set");
    char command[1024], token[4096] = "";
    snprintf(command, sizeof command, "cd '%s' && RUN_DIR='%s/run' ./tools/token dora --group child", root,
             dir);
    FILE *pipe = popen(command, "r");
    cr_assert_not_null(fgets(token, sizeof token, pipe));
    cr_assert_eq(pclose(pipe), 0);
    token[strcspn(token, "\n")] = '\0';
    char key[512];
    snprintf(key, sizeof key, "%s/run/keys/jwt-public.pem", dir);
    auth_verifier *v = NULL;
    status st;
    cr_assert_eq(auth_verifier_create(key, "library", "library-api", 0, &v, &st), STATUS_OK, "%s", st.message);
    auth_identity who;
    cr_assert_eq(verify(v, token, &who, &st), STATUS_OK, "%s", st.message);
    cr_assert_str_eq(who.group, "child");
    auth_verifier_destroy(v);
    snprintf(command, sizeof command, "cd '%s' && RUN_DIR='%s/run' ./tools/token dora --group 'a b' 2>/dev/null",
             root, dir);
    cr_assert_neq(system(command), 0, "tools/token must refuse a group the services refuse");
}

Test(auth, tools_token_signs_with_the_key_and_kid_it_is_given) {
    const char *root = getenv("LIBRARY_SOURCE_ROOT");
    cr_assert_not_null(root, "LIBRARY_SOURCE_ROOT is not set");
    key_add("rsa.pub", "2026-12");
    key_add("ec.pub", "2026-06");
    auth_verifier *v = directory_verifier();
    char command[1024], token[4096] = "";
    snprintf(command, sizeof command,
             "cd '%s' && RUN_DIR='%s/run' ./tools/token carol --kid 2026-12 --key '%s/rsa.pem'", root,
             dir, dir);
    FILE *pipe = popen(command, "r");
    cr_assert_not_null(fgets(token, sizeof token, pipe));
    cr_assert_eq(pclose(pipe), 0);
    token[strcspn(token, "\n")] = '\0';
    auth_identity who;
    status st;
    cr_assert_eq(verify(v, token, &who, &st), STATUS_OK, "%s", st.message);
    cr_assert_str_eq(who.subject, "carol");
    auth_verifier_destroy(v);
}
