/* fuzz_auth.c - bearer token verification (auth_verify) against a test RS256 and a test
 * ES256 key (tests/fuzz/keys). A fuzzer cannot forge signatures, so besides raw header values
 * the harness signs fuzzed JWT headers and payloads itself: properly (ES256, RS256), to reach
 * the claim checks, and as the classic algorithm confusion (HS256 with the public key as the
 * HMAC secret), which must never verify.
 *
 * Input: one byte choosing the mode, then
 *   0: the authorization header value as is;
 *   1, 2: the JWT header JSON, a newline, the payload JSON; signed ES256 (1) or RS256 (2);
 *   3: the same, "signed" HS256 with the verifier's public key as the secret. */
#include <ctype.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdbool.h>

#include "arena.h"
#include "auth.h"
#include "fuzz.h"
#include "status.h"
#include "text.h"

#define ISSUER "fuzz-issuer"
#define AUDIENCE "fuzz-audience"

typedef struct test_key {
    auth_verifier *verifier;
    EVP_PKEY *private_key;
    unsigned char public_pem[4096];
    size_t public_pem_size;
} test_key;

static test_key ec_key, rsa_key;

static void load_key(test_key *key, const char *name) {
    char path[512];
    status st;
    snprintf(path, sizeof path, "%s/%s-public.pem", FUZZ_KEY_DIR, name);
    if (auth_verifier_create(path, ISSUER, AUDIENCE, 0, &key->verifier, &st) != STATUS_OK) {
        fprintf(stderr, "fuzz_auth: %s\n", st.message);
        abort();
    }
    FILE *file = fopen(path, "rb");
    FUZZ_CHECK(file != NULL);
    key->public_pem_size = fread(key->public_pem, 1, sizeof key->public_pem, file);
    fclose(file);
    snprintf(path, sizeof path, "%s/%s-private.pem", FUZZ_KEY_DIR, name);
    file = fopen(path, "rb");
    FUZZ_CHECK(file != NULL);
    key->private_key = PEM_read_PrivateKey(file, NULL, NULL, NULL);
    fclose(file);
    FUZZ_CHECK(key->private_key != NULL);
}

static void init(void) {
    static bool done;
    if (done)
        return;
    load_key(&ec_key, "ec");
    load_key(&rsa_key, "rsa");
    done = true;
}

/* Signs "header.payload" as the JWS algorithm does; returns the signature's size. */
static size_t sign(int mode, const test_key *key, const char *input, unsigned char *out) {
    size_t input_size = strlen(input);
    if (mode == 3) {
        unsigned int size = 0;
        FUZZ_CHECK(HMAC(EVP_sha256(), key->public_pem, (int)key->public_pem_size,
                        (const unsigned char *)input, input_size, out, &size) != NULL);
        return size;
    }
    EVP_MD_CTX *context = EVP_MD_CTX_new();
    unsigned char der[512];
    size_t der_size = sizeof der;
    FUZZ_CHECK(context != NULL);
    FUZZ_CHECK(EVP_DigestSignInit(context, NULL, EVP_sha256(), NULL, key->private_key) == 1);
    FUZZ_CHECK(EVP_DigestSign(context, der, &der_size, (const unsigned char *)input, input_size) == 1);
    EVP_MD_CTX_free(context);
    if (mode == 2) {
        memcpy(out, der, der_size);
        return der_size;
    }
    /* ES256 signatures are r || s, 32 bytes each, not DER. */
    const unsigned char *p = der;
    ECDSA_SIG *signature = d2i_ECDSA_SIG(NULL, &p, (long)der_size);
    FUZZ_CHECK(signature != NULL);
    const BIGNUM *r = NULL, *s = NULL;
    ECDSA_SIG_get0(signature, &r, &s);
    FUZZ_CHECK(BN_bn2binpad(r, out, 32) == 32 && BN_bn2binpad(s, out + 32, 32) == 32);
    ECDSA_SIG_free(signature);
    return 64;
}

static void check_identity(status_code code, const status *st, const auth_identity *who) {
    if (code != STATUS_OK) {
        FUZZ_CHECK(code == STATUS_UNAUTHENTICATED);
        FUZZ_CHECK(st->reason[0] != '\0' && st->message[0] != '\0');
        return;
    }
    size_t length = strnlen(who->subject, sizeof who->subject);
    FUZZ_CHECK(length > 0 && length < sizeof who->subject);
    FUZZ_CHECK(text_is_valid_utf8(who->subject, length, false));
}

/* An accepted token names the audience whole: as the aud string or an element of the aud
 * array, not inside another string or an object. Checked on the payload text, so not when
 * it has \u escapes (without a JSON parser "\u0066uzz" cannot be told from "fuzz"; the
 * other escapes stand for characters the audience does not have). */
static bool names_audience(const char *payload) {
    static const char quoted[] = "\"" AUDIENCE "\"";
    if (strstr(payload, "\\u") != NULL)
        return true;
    for (const char *p = strstr(payload, quoted); p != NULL; p = strstr(p + 1, quoted)) {
        const char *before = p, *after = p + strlen(quoted);
        while (before > payload && isspace((unsigned char)before[-1]))
            before--;
        while (isspace((unsigned char)*after))
            after++;
        char previous = before > payload ? before[-1] : '\0';
        if ((previous == '[' || previous == ',' || previous == ':') &&
            (*after == ',' || *after == ']' || *after == '}'))
            return true;
    }
    return false;
}

static void verify_raw(const uint8_t *data, size_t size) {
    char *authorization = fuzz_string(data, size);
    const test_key *keys[] = {&ec_key, &rsa_key};
    for (int i = 0; i < 2; i++) {
        status st;
        auth_identity who;
        memset(&who, 0, sizeof who);
        status_code code = auth_verify(keys[i]->verifier, authorization, &who, &st);
        check_identity(code, &st, &who);
    }
    free(authorization);
}

static void verify_signed(int mode, const uint8_t *data, size_t size) {
    const uint8_t *rest = NULL;
    size_t rest_size = 0;
    char *header = fuzz_split(data, size, '\n', &rest, &rest_size);
    char *payload = fuzz_string(rest, rest_size);
    arena *a = arena_create(0);
    FUZZ_CHECK(a != NULL);
    char *signing_input = arena_sprintf(
        a, "%s.%s", text_base64url_encode(a, (const uint8_t *)header, strlen(header)),
        text_base64url_encode(a, (const uint8_t *)payload, strlen(payload)));
    FUZZ_CHECK(signing_input != NULL);
    const test_key *key = mode == 2 ? &rsa_key : &ec_key;
    unsigned char signature[512];
    size_t signature_size = sign(mode, key, signing_input, signature);
    char *authorization = arena_sprintf(a, "Bearer %s.%s", signing_input,
                                        text_base64url_encode(a, signature, signature_size));
    FUZZ_CHECK(authorization != NULL);

    status st;
    auth_identity who;
    memset(&who, 0, sizeof who);
    status_code code = auth_verify(key->verifier, authorization, &who, &st);
    check_identity(code, &st, &who);
    if (code == STATUS_OK)
        FUZZ_CHECK(names_audience(payload));
    if (mode == 3)
        FUZZ_CHECK(code != STATUS_OK); /* algorithm confusion never gets in */
    /* A token signed with one key never verifies with the other. */
    const test_key *other = key == &ec_key ? &rsa_key : &ec_key;
    memset(&who, 0, sizeof who);
    FUZZ_CHECK(auth_verify(other->verifier, authorization, &who, &st) != STATUS_OK);
    if (mode == 3) { /* and HS256 with the other key's PEM as the secret neither */
        signature_size = sign(3, other, signing_input, signature);
        authorization = arena_sprintf(a, "Bearer %s.%s", signing_input,
                                      text_base64url_encode(a, signature, signature_size));
        FUZZ_CHECK(authorization != NULL);
        FUZZ_CHECK(auth_verify(other->verifier, authorization, &who, &st) != STATUS_OK);
    }
    arena_destroy(a);
    free(header);
    free(payload);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 16384)
        return 0;
    init();
    int mode = data[0] % 4;
    if (mode == 0)
        verify_raw(data + 1, size - 1);
    else
        verify_signed(mode, data + 1, size - 1);
    return 0;
}
