/* fuzz_text.c - the text helpers every request passes through: UTF-8 validation (fields of
 * every request, token subjects) and base64url (page tokens, JWT parts, Redis keys).
 *
 * Input: arbitrary bytes, used both as text to check or decode and as data to encode. */
#include <stdbool.h>

#include "arena.h"
#include "fuzz.h"
#include "text.h"

/* An independent, slow UTF-8 check to compare with: decode each scalar value and reject
 * overlongs, surrogates and values past U+10FFFF. */
static bool reference_utf8(const uint8_t *s, size_t size, bool allow_control) {
    size_t i = 0;
    while (i < size) {
        uint32_t c = s[i];
        size_t length = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
                                   : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
        if (length == 0 || i + length > size)
            return false;
        if (length == 1) {
            if (!allow_control && (c < 0x20 || c == 0x7f))
                return false;
            i++;
            continue;
        }
        uint32_t code = c & (0x7f >> length);
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int allow = 0; allow < 2; allow++)
        FUZZ_CHECK(text_is_valid_utf8((const char *)data, size, allow) ==
                   reference_utf8(data, size, allow));

    arena *a = arena_create(0);
    FUZZ_CHECK(a != NULL);
    /* encode then decode gives the bytes back */
    char *encoded = text_base64url_encode(a, data, size);
    FUZZ_CHECK(encoded != NULL);
    FUZZ_CHECK(strspn(encoded, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
               strlen(encoded));
    uint8_t *decoded = NULL;
    size_t decoded_size = 0;
    FUZZ_CHECK(text_base64url_decode(a, encoded, &decoded, &decoded_size));
    FUZZ_CHECK(decoded_size == size && (size == 0 || memcmp(decoded, data, size) == 0));
    /* decode then encode gives the text back (the decoder takes canonical text only) */
    char *text = fuzz_string(data, size);
    if (text_base64url_decode(a, text, &decoded, &decoded_size)) {
        char *again = text_base64url_encode(a, decoded, decoded_size);
        FUZZ_CHECK(again != NULL && strcmp(again, text) == 0);
    }
    free(text);
    arena_destroy(a);
    return 0;
}
