/* text.h - small text utilities every service needs: UTF-8 validation, base64url for
 * opaque page tokens, SHA-256 in hex for idempotency keys and derived ids. */
#ifndef LIBSHARED_TEXT_H
#define LIBSHARED_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"

/* True when text[0..size) is well-formed UTF-8 (no overlongs, no surrogates) and, unless
 * allow_control, has no ASCII control characters. */
bool text_is_valid_utf8(const char *text, size_t size, bool allow_control);

/* URL-safe base64 without padding. Returns NULL when out of memory. */
char *text_base64url_encode(arena *a, const uint8_t *data, size_t size);
/* Returns false for characters outside the alphabet or an impossible length. */
bool text_base64url_decode(arena *a, const char *text, uint8_t **out, size_t *out_size);

/* Writes 2*bytes lowercase hex digits of cryptographic randomness plus a NUL (bytes <= 64). */
void text_random_hex(char *out, size_t bytes);
/* The same from a per-thread generator seeded from the kernel once: fast, unique in practice,
 * but predictable; for trace and span ids, never for secrets or ids that guard access. */
void text_trace_hex(char *out, size_t bytes);

/* 64-bit FNV-1a of a NUL-terminated string: for spreading keys over hash tables and caches,
 * not for anything an attacker must not steer. */
uint64_t text_hash(const char *text);

/* Lowercase hex SHA-256 of the parts, each followed by a NUL separator (so ("ab","c") and
 * ("a","bc") differ). parts is NULL-terminated. */
void text_sha256_hex(const char *const *parts, char out[65]);

#endif
