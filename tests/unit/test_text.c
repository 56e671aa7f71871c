/* test_text.c - UTF-8 validation, base64url round trips and SHA-256 helpers. */
#include <criterion/criterion.h>
#include <string.h>

#include "arena.h"
#include "text.h"

Test(text, utf8_accepts_valid_and_rejects_malformed) {
    cr_assert(text_is_valid_utf8("plain", 5, false));
    cr_assert(text_is_valid_utf8("\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4", 9, false)); /* Korean */
    cr_assert(text_is_valid_utf8("\xf0\x9f\x93\x9a", 4, false));                     /* emoji */
    cr_assert_not(text_is_valid_utf8("\xc3\x28", 2, false));
    cr_assert_not(text_is_valid_utf8("\xc0\xaf", 2, false), "overlong");
    cr_assert_not(text_is_valid_utf8("\xed\xa0\x80", 3, false), "surrogate");
    cr_assert_not(text_is_valid_utf8("\xf4\x90\x80\x80", 4, false), "beyond U+10FFFF");
    cr_assert_not(text_is_valid_utf8("\xe2\x82", 2, false), "truncated");
    cr_assert_not(text_is_valid_utf8("a\nb", 3, false));
    cr_assert(text_is_valid_utf8("a\nb", 3, true));
}

Test(text, base64url_round_trips_every_length) {
    arena *a = arena_create(0);
    uint8_t data[64];
    for (int i = 0; i < 64; i++)
        data[i] = (uint8_t)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof data; n++) {
        char *encoded = text_base64url_encode(a, data, n);
        cr_assert_null(strpbrk(encoded, "+/="), "not URL-safe: %s", encoded);
        uint8_t *decoded = NULL;
        size_t size = 0;
        cr_assert(text_base64url_decode(a, encoded, &decoded, &size));
        cr_assert_eq(size, n);
        cr_assert_arr_eq(decoded, data, n);
    }
    uint8_t *out = NULL;
    size_t size = 0;
    cr_assert_not(text_base64url_decode(a, "ab+c", &out, &size));
    cr_assert_not(text_base64url_decode(a, "abcde", &out, &size), "impossible length");
    cr_assert_not(text_base64url_decode(a, "AB", &out, &size), "non-canonical trailing bits");
    arena_destroy(a);
}

Test(text, sha256_separates_parts) {
    char one[65], two[65], three[65];
    const char *a_parts[] = {"ab", "c", NULL};
    const char *b_parts[] = {"a", "bc", NULL};
    text_sha256_hex(a_parts, one);
    text_sha256_hex(b_parts, two);
    text_sha256_hex(a_parts, three);
    cr_assert_str_neq(one, two);
    cr_assert_str_eq(one, three);
    cr_assert_eq(strlen(one), 64);
}

Test(text, random_hex_is_hex_and_differs) {
    char first[41], second[41];
    text_random_hex(first, 20);
    text_random_hex(second, 20);
    cr_assert_eq(strlen(first), 40);
    cr_assert_eq(strspn(first, "0123456789abcdef"), 40);
    cr_assert_str_neq(first, second);
}

Test(arena, allocations_are_zeroed_aligned_and_survive_growth) {
    arena *a = arena_create(64);
    char *small = arena_strdup(a, "kept");
    for (int i = 0; i < 1000; i++) {
        uint8_t *block = arena_alloc(a, (size_t)(i % 97) + 1);
        cr_assert_eq((uintptr_t)block % 16, 0);
        for (int k = 0; k < (i % 97) + 1; k++)
            cr_assert_eq(block[k], 0);
        memset(block, 0xab, (size_t)(i % 97) + 1);
    }
    cr_assert_str_eq(small, "kept");
    cr_assert_str_eq(arena_sprintf(a, "%d-%s", 7, "x"), "7-x");
    arena_reset(a);
    cr_assert_eq(arena_used(a), 0);
    arena_destroy(a);
    arena_destroy(NULL);
}

Test(text, text_hash_is_64_bit_fnv_1a) {
    /* the published FNV-1a test vectors */
    cr_assert_eq(text_hash(""), 0xcbf29ce484222325ull);
    cr_assert_eq(text_hash("a"), 0xaf63dc4c8601ec8cull);
    cr_assert_eq(text_hash("foobar"), 0x85944171f73967e8ull);
}
