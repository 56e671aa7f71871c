/* handlers.c - the MypageService methods. */
#include "handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "projection.h"
#include "text.h"

/* One open WatchMypage stream. References: the watcher list holds one until the stream
 * closes; the handler and each notification hold one while they use it. */
struct page_watcher {
    page_watcher *next;
    mypage_handlers *owner;
    rpc_stream *stream;
    char user_id[AUTH_SUBJECT_MAX];
    pthread_mutex_t sending; /* one load-and-send at a time, so pages go out in order */
    uint8_t *last_sent;      /* the last page sent, packed (under sending): no repeats */
    size_t last_sent_size;
    int references;          /* guarded by owner->lock */
};

/* The page a caller asks for: their own (empty user_id), or anyone's for an administrator. */
static status_code resolve_user(rpc_context *ctx, const char *requested, const char **out, status *st) {
    const auth_identity *caller = rpc_context_caller(ctx);
    const char *user = requested && requested[0] ? requested : caller->subject;
    if (strlen(user) >= AUTH_SUBJECT_MAX)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_TOO_LONG",
                          "user_id is longer than %d bytes", AUTH_SUBJECT_MAX - 1);
    if (!text_is_valid_utf8(user, strlen(user), false))
        return status_set(st, STATUS_INVALID_ARGUMENT, "INVALID_UTF8", "user_id is not valid UTF-8");
    if (strcmp(user, caller->subject) != 0 && !caller->admin)
        return status_set(st, STATUS_PERMISSION_DENIED, "NOT_YOUR_PAGE",
                          "only administrators may read another user's page");
    *out = user;
    return STATUS_OK;
}

static void page_loaded_for_call(void *arg, status_code code, const status *st,
                                 Library__Mypage__V1__Mypage *page) {
    rpc_context_answer(arg, code, st, page ? &page->base : NULL);
}

/* On the poller, the read is pipelined to Redis on a shared connection and the call answered
 * when the page is in, with no thread waiting (measured faster than a worker and the pool at
 * 1x1 and 16x16). When that connection is down or full, or on a worker, the pool. */
static status_code get_mypage(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                              ProtobufCMessage **response, status *st) {
    mypage_handlers *h = state;
    const Library__Mypage__V1__GetMypageRequest *req = (const void *)request;
    const char *user = NULL;
    if (resolve_user(ctx, req->user_id, &user, st) != STATUS_OK)
        return st->code;
    if (!rpc_context_may_block(ctx)) {
        if (page_store_load_async(h->store, rpc_context_arena(ctx), user, page_loaded_for_call, ctx))
            return RPC_DEFERRED; /* the call may be answered already: touch nothing more */
        return RPC_WOULD_BLOCK;
    }
    Library__Mypage__V1__Mypage *page = NULL;
    if (page_store_load(h->store, rpc_context_arena(ctx), user, &page, st) != STATUS_OK)
        return st->code;
    *response = &page->base;
    return STATUS_OK;
}

/* --- WatchMypage ---------------------------------------------------------------------- */

static void watcher_unref(page_watcher *w) {
    mypage_handlers *h = w->owner;
    pthread_mutex_lock(&h->lock);
    bool last = --w->references == 0;
    pthread_mutex_unlock(&h->lock);
    if (!last)
        return;
    rpc_stream_release(w->stream);
    pthread_mutex_destroy(&w->sending);
    free(w->last_sent);
    free(w);
}

/* Loads the user's page and sends it, unless it is the page sent last (two announcements
 * can find the same page: events of one loan handled at once). A Redis failure ends the
 * stream (the client reconnects and gets the page afresh rather than miss a change).
 * Called with w->sending held. */
static status_code watcher_send_page(page_watcher *w, status *st) {
    arena *a = arena_create(0);
    if (a == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    Library__Mypage__V1__Mypage *page = NULL;
    status_code code = page_store_load(w->owner->store, a, w->user_id, &page, st);
    size_t size = 0;
    uint8_t *packed = code == STATUS_OK ? arena_pack(a, &page->base, &size) : NULL;
    if (code == STATUS_OK && packed == NULL)
        code = status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    bool repeat = packed && w->last_sent && size == w->last_sent_size &&
                  memcmp(packed, w->last_sent, size) == 0;
    if (code == STATUS_OK && !repeat) {
        code = rpc_stream_send(w->stream, &page->base, st);
        uint8_t *copy = code == STATUS_OK ? malloc(size ? size : 1) : NULL;
        if (copy) {
            memcpy(copy, packed, size);
            free(w->last_sent);
            w->last_sent = copy;
            w->last_sent_size = size;
        }
    }
    arena_destroy(a);
    return code;
}

static void watcher_closed(void *arg) {
    page_watcher *w = arg;
    mypage_handlers *h = w->owner;
    pthread_mutex_lock(&h->lock);
    for (page_watcher **link = &h->watchers; *link != NULL; link = &(*link)->next) {
        if (*link == w) {
            *link = w->next;
            h->watcher_count--;
            break;
        }
    }
    pthread_mutex_unlock(&h->lock);
    watcher_unref(w);
}

/* The watchers of user's page; with h->lock held. */
static int watchers_of(const mypage_handlers *h, const char *user) {
    int count = 0;
    for (const page_watcher *w = h->watchers; w != NULL; w = w->next)
        count += strcmp(w->user_id, user) == 0;
    return count;
}

static status_code watch_mypage(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                                rpc_stream *stream, status *st) {
    mypage_handlers *h = state;
    const Library__Mypage__V1__WatchMypageRequest *req = (const void *)request;
    const char *user = NULL;
    if (resolve_user(ctx, req->user_id, &user, st) != STATUS_OK)
        return st->code;
    page_watcher *w = calloc(1, sizeof *w);
    if (w == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    w->owner = h;
    w->stream = stream;
    w->references = 2; /* the list's and this handler's */
    snprintf(w->user_id, sizeof w->user_id, "%s", user);
    pthread_mutex_init(&w->sending, NULL);

    pthread_mutex_lock(&h->lock);
    bool full = h->watcher_count >= h->max_watchers;
    int of_user = full ? 0 : watchers_of(h, user);
    bool user_full = of_user >= h->max_watchers_per_user;
    if (!full && !user_full) {
        w->next = h->watchers;
        h->watchers = w;
        h->watcher_count++;
    }
    pthread_mutex_unlock(&h->lock);
    if (full || user_full) {
        pthread_mutex_destroy(&w->sending);
        free(w);
        if (user_full)
            return status_set(st, STATUS_RESOURCE_EXHAUSTED, "TOO_MANY_WATCHES",
                              "this page has %d WatchMypage streams open on this server, the most one "
                              "user may have; close one first", of_user);
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "TOO_MANY_WATCHERS",
                          "this server has %d WatchMypage streams open; try again later",
                          h->max_watchers);
    }
    rpc_stream_retain(stream);
    /* Listed before the first page is loaded, and sending held meanwhile: a change that
     * lands in between is sent after the first page, never lost and never out of order. */
    pthread_mutex_lock(&w->sending);
    rpc_stream_on_close(stream, watcher_closed, w);
    status_code code = watcher_send_page(w, st);
    pthread_mutex_unlock(&w->sending);
    watcher_unref(w);
    return code; /* an error ends the stream; the close callback drops the watcher */
}

/* A projection announced a change: send the page again to the user's watchers. */
static void on_page_changed(void *closure, const uint8_t *data, size_t length) {
    mypage_handlers *h = closure;
    char user[AUTH_SUBJECT_MAX];
    bool everyone = length == 0;
    if (length >= sizeof user)
        return;
    if (length)
        memcpy(user, data, length);
    user[length] = '\0';

    pthread_mutex_lock(&h->lock);
    page_watcher **targets = calloc((size_t)h->watcher_count + 1, sizeof *targets);
    size_t count = 0;
    for (page_watcher *w = h->watchers; targets != NULL && w != NULL; w = w->next) {
        if (everyone || strcmp(w->user_id, user) == 0) {
            w->references++;
            targets[count++] = w;
        }
    }
    pthread_mutex_unlock(&h->lock);
    for (size_t i = 0; i < count; i++) {
        page_watcher *w = targets[i];
        pthread_mutex_lock(&w->sending);
        status st;
        status_clear(&st);
        if (!rpc_stream_is_closed(w->stream) && watcher_send_page(w, &st) != STATUS_OK &&
            st.code != STATUS_CANCELLED)
            rpc_stream_finish(w->stream, st.code, &st);
        pthread_mutex_unlock(&w->sending);
        watcher_unref(w);
    }
    free(targets);
}

static const rpc_method mypage_methods[] = {
    RPC_UNARY_NONBLOCKING("GetMypage", library__mypage__v1__get_mypage_request,
              library__mypage__v1__mypage, get_mypage, RPC_ACCESS_USER),
    RPC_SERVER_STREAM("WatchMypage", library__mypage__v1__watch_mypage_request,
                      library__mypage__v1__mypage, watch_mypage, RPC_ACCESS_USER),
};

const rpc_service mypage_rpc_service = {
    .name = "library.mypage.v1.MypageService",
    .methods = mypage_methods,
    .method_count = sizeof mypage_methods / sizeof mypage_methods[0],
};

/* NATS came back: changes announced while it was away may have been missed, so every
 * watcher gets its page again (an empty message means everyone), from the subscription's
 * thread like any change. */
static void on_nats_reconnected(void *closure) {
    mypage_handlers *h = closure;
    status st;
    if (nats_publish(h->connection, h->resend_subject, "", 0, &st) != STATUS_OK)
        LOG_WARN("could not refresh the watchers after a NATS reconnect: %s", st.message);
}

status_code mypage_handlers_init(mypage_handlers *h, nats_connection *connection, status *st) {
    pthread_mutex_init(&h->lock, NULL);
    h->service = mypage_rpc_service;
    h->service.state = h;
    h->connection = connection;
    status_code code = nats_subscribe(connection, MYPAGE_CHANGED_SUBJECT, on_page_changed, h, &h->changes, st);
    if (code == STATUS_OK && !nats_new_inbox(h->resend_subject, sizeof h->resend_subject))
        code = status_set(st, STATUS_INTERNAL, "NATS_INBOX", "cannot make an inbox for watcher refreshes");
    if (code == STATUS_OK)
        code = nats_subscribe(connection, h->resend_subject, on_page_changed, h, &h->resends, st);
    if (code != STATUS_OK) {
        nats_subscription_close(connection, h->changes);
        h->changes = NULL;
        pthread_mutex_destroy(&h->lock);
        return code;
    }
    if (!nats_connection_listen_reconnects(connection, on_nats_reconnected, h))
        LOG_WARN("too many reconnect listeners: watchers are not refreshed after a NATS reconnect");
    return STATUS_OK;
}

void mypage_handlers_destroy(mypage_handlers *h) {
    nats_connection_unlisten_reconnects(h->connection, on_nats_reconnected, h);
    nats_subscription_close(h->connection, h->changes);
    nats_subscription_close(h->connection, h->resends);
    h->changes = NULL;
    h->resends = NULL;
    pthread_mutex_destroy(&h->lock);
}
