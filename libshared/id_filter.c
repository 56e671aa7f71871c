/* id_filter.c - a Bloom filter over ids. */
#include "id_filter.h"

#include <stdint.h>
#include <string.h>

/* FNV-1a, 64 bits. */
static uint64_t hash_id(const char *id) {
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return h;
}

/* The i-th bit of a hash in a filter of `bits` bits (double hashing). */
static size_t bit_of(uint64_t h, int i, size_t bits) {
    uint64_t step = (h >> 32) | 1;
    return (size_t)((h + (uint64_t)i * step) % bits);
}

bool id_filter_may_hold(ProtobufCBinaryData filter, const char *id) {
    if (filter.len == 0)
        return false;
    uint64_t h = hash_id(id);
    for (int i = 0; i < ID_FILTER_HASHES; i++) {
        size_t bit = bit_of(h, i, filter.len * 8);
        if (!(filter.data[bit / 8] & (1u << (bit % 8))))
            return false;
    }
    return true;
}

bool id_filter_build(arena *a, const char *const *ids, size_t count, ProtobufCBinaryData *filter) {
    *filter = (ProtobufCBinaryData){0};
    if (count == 0)
        return true;
    size_t bytes = (count + ID_FILTER_STEP - 1) / ID_FILTER_STEP * ID_FILTER_STEP;
    if (bytes > ID_FILTER_MAX_BYTES)
        bytes = ID_FILTER_MAX_BYTES;
    uint8_t *bits = arena_alloc(a, bytes);
    if (bits == NULL)
        return false;
    memset(bits, 0, bytes);
    for (size_t d = 0; d < count; d++) {
        uint64_t h = hash_id(ids[d]);
        for (int i = 0; i < ID_FILTER_HASHES; i++) {
            size_t bit = bit_of(h, i, bytes * 8);
            bits[bit / 8] |= (uint8_t)(1u << (bit % 8));
        }
    }
    *filter = (ProtobufCBinaryData){.len = bytes, .data = bits};
    return true;
}
