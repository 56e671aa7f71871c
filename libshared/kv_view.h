/* kv_view.h - a key-value bucket and a replica's in-memory view of it: the bucket opened (made
 * when missing) and a thread that follows it (kv_follow), handing each change to the view's
 * own code. The catalog's book index and lending's loan index are views; a second reader of
 * the same watch (kv_view_branch) serves lending's reconciler. */
#ifndef LIBSHARED_KV_VIEW_H
#define LIBSHARED_KV_VIEW_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "kv.h"
#include "nats_connection.h"
#include "status.h"

typedef struct kv_view_handlers {
    /* One change, on the view's thread (or the opener's, while it loads); a is reset after
     * each call. False when the view missed the change (out of memory): the follow starts
     * over and every key comes again. */
    bool (*on_change)(void *arg, arena *a, const kv_change *change);
    /* Every key's newest value was handed over since the follow (re)started; may be NULL. */
    void (*on_caught_up)(void *arg);
    void *arg;
} kv_view_handlers;

typedef struct kv_view_options {
    const char *bucket;     /* its name, which must outlive the view (a literal) */
    int replicas;           /* of a bucket this view makes */
    int64_t renew_ms;       /* a fresh watch this often (kv_follow_start); 0: only when needed */
    /* Open waits until the view holds every key, at most this long, and fails UNAVAILABLE
     * past it; 0: open returns at once and the view fills in the background. */
    int64_t load_timeout_ms;
} kv_view_options;

typedef struct kv_view kv_view;

status_code kv_view_open(nats_connection *connection, const kv_view_options *options,
                         const kv_view_handlers *handlers, kv_view **out, status *st);
/* Stops the thread and closes the bucket. Close a branch first. NULL is a no-op. */
void kv_view_close(kv_view *view);
kv_bucket *kv_view_bucket(kv_view *view);
/* A second reader of the view's watch (kv_follow_branch): once per view; NULL when out of
 * memory or taken. */
kv_follow *kv_view_branch(kv_view *view);

#endif
