/* kv_view.c - a bucket and the thread that follows it into a view. */
#include "kv_view.h"

#include <pthread.h>
#include <stdlib.h>

#include "log.h"
#include "timestamp.h"

struct kv_view {
    kv_bucket *bucket;
    kv_follow *follow;
    kv_view_handlers handlers;
    const char *name;
    pthread_t thread;
    bool running;
};

/* Hands one event of the follow to the view. */
static void hand_over(kv_view *view, arena *a, kv_follow_event what, const kv_change *change) {
    if (what == KV_FOLLOW_CAUGHT_UP && view->handlers.on_caught_up)
        view->handlers.on_caught_up(view->handlers.arg);
    if (what == KV_FOLLOW_ENTRY && !view->handlers.on_change(view->handlers.arg, a, change)) {
        LOG_WARN("the view of bucket %s missed a change; reading every key again", view->name);
        kv_follow_restart(view->follow);
    }
    arena_reset(a);
}

/* Follows the bucket until the view closes. A fresh watch (kv_follow renews one that failed,
 * outlived a NATS reconnect or is renew_ms old) delivers every key again. */
static void *follow_main(void *arg) {
    kv_view *view = arg;
    arena *a = arena_create(0);
    if (a == NULL) {
        LOG_ERROR("out of memory: the view of bucket %s is not kept current", view->name);
        return NULL;
    }
    for (;;) {
        kv_change change;
        kv_follow_event what = kv_follow_next(view->follow, 500, &change);
        if (what == KV_FOLLOW_STOPPED)
            break;
        hand_over(view, a, what, &change);
    }
    arena_destroy(a);
    return NULL;
}

/* The opener's thread reads until the view holds every key. */
static status_code load(kv_view *view, int64_t timeout_ms, status *st) {
    arena *a = arena_create(0);
    if (a == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    status_code code = STATUS_OK;
    for (int64_t start = timestamp_monotonic_ms();;) {
        int64_t left = timeout_ms - (timestamp_monotonic_ms() - start);
        if (left <= 0) {
            code = status_set(st, STATUS_UNAVAILABLE, "NATS_UNAVAILABLE",
                              "loading bucket %s: NATS did not deliver its keys in %lld s", view->name,
                              (long long)(timeout_ms / 1000));
            break;
        }
        kv_change change;
        kv_follow_event what = kv_follow_next(view->follow, left, &change);
        if (what == KV_FOLLOW_STOPPED) {
            code = status_set(st, STATUS_UNAVAILABLE, "NATS_UNAVAILABLE", "loading bucket %s was stopped", view->name);
            break;
        }
        hand_over(view, a, what, &change);
        if (what == KV_FOLLOW_CAUGHT_UP)
            break;
    }
    arena_destroy(a);
    return code;
}

status_code kv_view_open(nats_connection *connection, const kv_view_options *options,
                         const kv_view_handlers *handlers, kv_view **out, status *st) {
    kv_view *view = calloc(1, sizeof *view);
    if (view == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    view->handlers = *handlers;
    view->name = options->bucket;
    status_code code = kv_bucket_open(connection, options->bucket, options->replicas, &view->bucket, st);
    if (code == STATUS_OK && (view->follow = kv_follow_start(view->bucket, options->renew_ms)) == NULL)
        code = status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    if (code == STATUS_OK && options->load_timeout_ms > 0)
        code = load(view, options->load_timeout_ms, st);
    if (code == STATUS_OK) {
        if (pthread_create(&view->thread, NULL, follow_main, view) == 0)
            view->running = true;
        else
            code = status_set(st, STATUS_INTERNAL, "THREAD", "cannot start the watcher of bucket %s", options->bucket);
    }
    if (code != STATUS_OK) {
        kv_view_close(view);
        return code;
    }
    *out = view;
    return STATUS_OK;
}

void kv_view_close(kv_view *view) {
    if (view == NULL)
        return;
    if (view->follow)
        kv_follow_stop(view->follow); /* ends the thread's wait */
    if (view->running)
        pthread_join(view->thread, NULL);
    kv_follow_close(view->follow);
    kv_bucket_close(view->bucket);
    free(view);
}

kv_bucket *kv_view_bucket(kv_view *view) {
    return view->bucket;
}

kv_follow *kv_view_branch(kv_view *view) {
    return kv_follow_branch(view->follow);
}
