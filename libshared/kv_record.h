/* kv_record.h - protobuf records in a key-value bucket: decoded on read, encoded on write,
 * and changed by compare-and-set with the retry policy in one place. A store (the catalog's
 * books, lending's loans and user records) names its keys and its record types and passes
 * its change functions; it writes no encoding, decoding or retry loop of its own. */
#ifndef LIBSHARED_KV_RECORD_H
#define LIBSHARED_KV_RECORD_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>

#include "arena.h"
#include "kv.h"
#include "status.h"

/* A kind of record a bucket holds. */
typedef struct kv_record_type {
    const ProtobufCMessageDescriptor *descriptor;
    const char *name; /* "book", "loan": the errors say "no book with id X", "a stored book ..." */
    /* False for a record that parsed but lacks what every stored one has (DATA_LOSS
     * CORRUPT_RECORD); NULL: any record that parses is whole. */
    bool (*whole)(const ProtobufCMessage *record);
    /* The reason of NOT_FOUND ("BOOK_NOT_FOUND"). */
    const char *not_found_reason;
} kv_record_type;

/* What a write did: the record as it is now (from a), the bytes written (NULL when the
 * change was already there) and the revision written or read. */
typedef struct kv_record_written {
    ProtobufCMessage *record;
    const uint8_t *bytes;
    size_t size;
    uint64_t revision;
} kv_record_written;

/* Changes record in place and says whether it *changed; an error stops the update. It may
 * run several times (on a fresh record each time another writer got there first): no side
 * effects outside the record and arg's answer fields. */
typedef status_code (*kv_record_change)(void *arg, arena *a, ProtobufCMessage *record, bool *changed, status *st);

/* The record at key. NOT_FOUND (reason type->not_found_reason, naming id) when absent. */
status_code kv_record_get(kv_bucket *bucket, const kv_record_type *type, const char *key, const char *id, arena *a,
                          ProtobufCMessage **out, status *st);
/* The same, and the revision read in *revision (for a cache that keeps the newest). */
status_code kv_record_get_revision(kv_bucket *bucket, const kv_record_type *type, const char *key, const char *id,
                                   arena *a, ProtobufCMessage **out, uint64_t *revision, status *st);

/* Stores record at key if nothing is there (ALREADY_EXISTS otherwise). written may be NULL. */
status_code kv_record_create(kv_bucket *bucket, const char *key, const ProtobufCMessage *record, arena *a,
                             kv_record_written *written, status *st);

/* Applies change to the record at key by compare-and-set, again on a fresh read while other
 * writers get there first (ABORTED after 32 tries). A missing record is NOT_FOUND, or, with
 * create_if_missing, an empty one the change fills. written may be NULL. */
status_code kv_record_update(kv_bucket *bucket, const kv_record_type *type, const char *key, const char *id,
                             bool create_if_missing, kv_record_change change, void *arg, arena *a,
                             kv_record_written *written, status *st);

#endif
