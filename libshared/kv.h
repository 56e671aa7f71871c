/* kv.h - JetStream key-value helpers: get, create, compare-and-set update, and a
 * read-modify-write loop that retries when another writer got there first. Values are
 * opaque bytes (services store serialized protobuf records). On a replicated bucket (a
 * JetStream cluster) reads go to the stream's leader and every write is also fenced on the
 * bucket's last sequence, so that compare-and-set holds on every nats-server version (kv.c
 * says why); one write at a time per bucket is the price. */
#ifndef LIBSHARED_KV_H
#define LIBSHARED_KV_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "nats_connection.h"
#include "status.h"

typedef struct kv_bucket kv_bucket;

typedef struct kv_value {
    const uint8_t *data; /* owned by the arena passed to the call */
    size_t size;
    uint64_t revision;
} kv_value;

/* Opens the bucket, creating it (file storage, history 1) when it does not exist yet. */
status_code kv_bucket_open(nats_connection *connection, const char *name, int replicas,
                           kv_bucket **out, status *st);
void kv_bucket_close(kv_bucket *bucket); /* NULL is a no-op */
/* For watchers and other direct uses. */
kvStore *kv_bucket_store(kv_bucket *bucket);

/* NOT_FOUND when the key does not exist or was deleted. */
status_code kv_get(kv_bucket *bucket, const char *key, arena *a, kv_value *out, status *st);
/* ALREADY_EXISTS when the key exists. */
status_code kv_create(kv_bucket *bucket, const char *key, const void *data, size_t size,
                      uint64_t *revision, status *st);
/* ABORTED (reason REVISION_MISMATCH) when the key's revision is not expected_revision. */
status_code kv_update(kv_bucket *bucket, const char *key, const void *data, size_t size,
                      uint64_t expected_revision, uint64_t *revision, status *st);

/* Removes the key and every revision of it the bucket keeps (a purge: watchers see a delete).
 * A key that is not there is removed already: STATUS_OK. */
status_code kv_purge(kv_bucket *bucket, const char *key, status *st);

/* Computes the next value from the current one (current is NULL when the key is missing).
 * Set *next to NULL to write nothing (the change is already there). Any error stops the loop. */
typedef status_code (*kv_mutation)(void *arg, arena *a, const kv_value *current, uint8_t **next,
                                   size_t *next_size, status *st);

/* Read-modify-write with compare-and-set, retried on conflicts up to max_attempts times, each
 * after a short random pause (0 to 8 ms, growing with the attempts), ABORTED after that. The mutation may run several times; it must not have side effects.
 * *revision (may be NULL) is the revision written, or the current one when nothing was written. */
status_code kv_mutate(kv_bucket *bucket, const char *key, arena *a, kv_mutation mutation,
                      void *arg, int max_attempts, uint64_t *revision, status *st);

/* A watch on the whole bucket that keeps itself going, for a replica's in-memory view of it.
 * A watch that fails, that was open across a NATS reconnect (its ordered consumer should ride
 * that out; a fresh watch does not depend on it; replaced once the reconnect is 3 s old, when
 * NATS.c is done resetting it), that kv_follow_restart asked to drop, or
 * (renew_ms > 0) that is older than renew_ms, is replaced by a fresh one, which delivers the
 * newest value of every key again. One thread calls kv_follow_next; any may call stop. */
typedef struct kv_follow kv_follow;

typedef enum kv_follow_event {
    KV_FOLLOW_IDLE,      /* nothing within the timeout (or no watch could be started yet) */
    KV_FOLLOW_RESTART,   /* a fresh watch begins: every key comes again */
    KV_FOLLOW_CAUGHT_UP, /* every key's newest value was delivered since the last RESTART */
    KV_FOLLOW_ENTRY,     /* *entry is a key's new value or deletion; kvEntry_Destroy it */
    KV_FOLLOW_STOPPED,   /* kv_follow_stop was called */
} kv_follow_event;

kv_follow *kv_follow_start(kv_bucket *bucket, int64_t renew_ms); /* NULL when out of memory */
/* One change of a key as kv_follow_next hands it out, valid until the next call on the same
 * follow (or its close). */
typedef struct kv_change {
    const char *key;
    const uint8_t *value; /* the new value; NULL for a delete or a purge */
    size_t size;
    uint64_t revision;
    bool deleted;
} kv_change;

kv_follow_event kv_follow_next(kv_follow *follow, int64_t timeout_ms, kv_change *change);
/* A second reader of the same watch, so two views of one bucket in a process cost one watch
 * (and NATS sends each change once): every RESTART, CAUGHT_UP and ENTRY that kv_follow_next
 * hands out on follow is queued, copied, for the branch's own kv_follow_next on another
 * thread, from the fresh watch it begins with (making a branch restarts the follow). The
 * follow's reader waits while the branch holds 16 MiB unread, so the branch misses nothing.
 * kv_follow_restart on the branch restarts the follow; kv_follow_stop and kv_follow_close on
 * it stop it (the follow then queues nothing more for it), and it is freed with its follow,
 * which must outlive the branch's reader. One branch per follow: NULL when it has one, or out
 * of memory. */
kv_follow *kv_follow_branch(kv_follow *follow);
/* Drops the current watch: the next kv_follow_next starts a fresh one (the caller's view
 * missed something, e.g. it ran out of memory). */
void kv_follow_restart(kv_follow *follow);
/* Ends a kv_follow_next waiting, and every later one, with KV_FOLLOW_STOPPED. */
void kv_follow_stop(kv_follow *follow);
/* Stops and frees it once no thread is in kv_follow_next. NULL is a no-op. */
void kv_follow_close(kv_follow *follow);

#endif
