/* id_filter.h - a Bloom filter over a set of ids, kept in a small record to say whether a larger
 * one it summarises may hold an id (issue 19 item 6: the catalog's archive of loan decisions,
 * lending's archive of a user's loan history). A "no" is certain, so the large record is read
 * only on a "maybe". 8 bits per id (in steps of 64 bytes, at most 1 KiB) and 5 hashes give
 * ~2% false positives, so a filter over few ids stays small. Stored filters depend on the hash
 * (FNV-1a, 64 bits) and the bit positions (taken modulo the filter's own length, so a filter
 * of any length reads back): they never change. */
#ifndef LIBSHARED_ID_FILTER_H
#define LIBSHARED_ID_FILTER_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#include "arena.h"

enum { ID_FILTER_STEP = 64, ID_FILTER_MAX_BYTES = 1024, ID_FILTER_HASHES = 5 };

/* False when the filter surely does not hold id (always, for an empty filter); true when it may. */
bool id_filter_may_hold(ProtobufCBinaryData filter, const char *id);

/* The filter over ids[0..count), from a: count bytes rounded up to ID_FILTER_STEP, at most
 * ID_FILTER_MAX_BYTES (empty for no ids). False when out of memory. */
bool id_filter_build(arena *a, const char *const *ids, size_t count, ProtobufCBinaryData *filter);

#endif
