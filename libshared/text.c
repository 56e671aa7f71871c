/* text.c - UTF-8, base64url and SHA-256 helpers. */
#include "text.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

bool text_is_valid_utf8(const char *text, size_t size, bool allow_control) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < size) {
        unsigned char c = s[i];
        if (c < 0x80) {
            if (!allow_control && (c < 0x20 || c == 0x7f))
                return false;
            i++;
            continue;
        }
        size_t length;
        uint32_t code;
        if ((c & 0xe0) == 0xc0) {
            length = 2;
            code = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            length = 3;
            code = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            length = 4;
            code = c & 0x07;
        } else {
            return false;
        }
        if (i + length > size)
            return false;
        for (size_t k = 1; k < length; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            code = (code << 6) | (s[i + k] & 0x3f);
        }
        static const uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
        if (code < smallest[length] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
            return false;
        i += length;
    }
    return true;
}

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *text_base64url_encode(arena *a, const uint8_t *data, size_t size) {
    char *out = arena_alloc(a, (size + 2) / 3 * 4 + 1);
    if (out == NULL)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < size; i += 3) {
        uint32_t chunk = (uint32_t)data[i] << 16;
        if (i + 1 < size)
            chunk |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < size)
            chunk |= data[i + 2];
        out[n++] = alphabet[(chunk >> 18) & 63];
        out[n++] = alphabet[(chunk >> 12) & 63];
        if (i + 1 < size)
            out[n++] = alphabet[(chunk >> 6) & 63];
        if (i + 2 < size)
            out[n++] = alphabet[chunk & 63];
    }
    out[n] = '\0';
    return out;
}

static int sextet(char c) {
    const char *found = c ? strchr(alphabet, c) : NULL;
    return found ? (int)(found - alphabet) : -1;
}

bool text_base64url_decode(arena *a, const char *text, uint8_t **out, size_t *out_size) {
    size_t length = strlen(text);
    if (length % 4 == 1)
        return false;
    uint8_t *bytes = arena_alloc(a, length * 3 / 4 + 1);
    if (bytes == NULL)
        return false;
    size_t n = 0;
    uint32_t buffer = 0;
    int bits = 0;
    for (size_t i = 0; i < length; i++) {
        int value = sextet(text[i]);
        if (value < 0)
            return false;
        buffer = (buffer << 6) | (uint32_t)value;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            bytes[n++] = (uint8_t)(buffer >> bits);
        }
    }
    if (bits > 0 && (buffer & ((1u << bits) - 1)) != 0)
        return false; /* non-canonical trailing bits */
    *out = bytes;
    *out_size = n;
    return true;
}

void text_sha256_hex(const char *const *parts, char out[65]) {
    unsigned char digest[32];
    unsigned int digest_size = 0;
    EVP_MD_CTX *context = EVP_MD_CTX_new();
    EVP_DigestInit_ex(context, EVP_sha256(), NULL);
    for (const char *const *part = parts; *part != NULL; part++)
        EVP_DigestUpdate(context, *part, strlen(*part) + 1);
    EVP_DigestFinal_ex(context, digest, &digest_size);
    EVP_MD_CTX_free(context);
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[digest[i] >> 4];
        out[2 * i + 1] = digits[digest[i] & 15];
    }
    out[64] = '\0';
}

/* splitmix64 (Steele, Lea, Flood 2014): one 64-bit output per step. */
static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

enum { RANDOM_HEX_MAX = 64 }; /* bytes per call; longer requests are cut */

static void hex_encode(const uint8_t *bytes, size_t size, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < size; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * size] = '\0';
}

void text_trace_hex(char *out, size_t bytes) {
    static __thread uint64_t state;
    static __thread bool seeded;
    if (!seeded) {
        arc4random_buf(&state, sizeof state);
        seeded = true;
    }
    uint8_t buffer[RANDOM_HEX_MAX];
    if (bytes > sizeof buffer)
        bytes = sizeof buffer;
    for (size_t i = 0; i < bytes; i += 8) {
        uint64_t word = splitmix64(&state);
        memcpy(buffer + i, &word, bytes - i < 8 ? bytes - i : 8);
    }
    hex_encode(buffer, bytes, out);
}

void text_random_hex(char *out, size_t bytes) {
    uint8_t buffer[RANDOM_HEX_MAX];
    if (bytes > sizeof buffer)
        bytes = sizeof buffer;
    arc4random_buf(buffer, bytes); /* glibc >= 2.36: the kernel CSPRNG, never fails */
    hex_encode(buffer, bytes, out);
}

uint64_t text_hash(const char *text) {
    uint64_t hash = 14695981039346656037ull;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        hash = (hash ^ *p) * 1099511628211ull;
    return hash;
}
