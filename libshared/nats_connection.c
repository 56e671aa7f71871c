/* nats_connection.c - connecting, reconnecting and error mapping for NATS.c. */
#include "nats_connection.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "timestamp.h"

typedef struct retired {
    struct retired *next;
    natsSubscription *subscription;
    kvWatcher *watcher;
    int64_t retired_ms;
} retired;

struct nats_connection {
    natsConnection *core;
    jsCtx *jetstream;
    health *health;
    /* NATS.c delivers callbacks on its own thread, after natsConnection_Close returns; the
     * closed callback comes last, so close waits for it before freeing what they use. */
    pthread_mutex_t lock;
    pthread_cond_t closed_cond;
    bool closed;
    atomic_uint_fast64_t reconnects;
    atomic_int_fast64_t reconnected_ms; /* monotonic time of the last reconnect */
    retired *retired; /* newest first, under lock */
    /* told after each reconnect, on NATS.c's callback thread; under listeners_lock */
    pthread_mutex_t listeners_lock;
    struct {
        nats_reconnected callback;
        void *closure;
    } listeners[NATS_RECONNECT_LISTENERS];
};

/* --- retired subscriptions and watchers ----------------------------------------------------- */

#define RETIRE_GRACE_MS 60000

static void destroy_retired(retired *r) {
    while (r != NULL) {
        retired *next = r->next;
        if (r->subscription)
            natsSubscription_Destroy(r->subscription);
        if (r->watcher)
            kvWatcher_Destroy(r->watcher);
        free(r);
        r = next;
    }
}

static void retire(nats_connection *c, natsSubscription *subscription, kvWatcher *watcher) {
    retired *r = calloc(1, sizeof *r);
    if (r == NULL) { /* kept alive for good rather than risk the read loop */
        LOG_WARN("out of memory retiring a NATS subscription; it stays allocated");
        return;
    }
    r->subscription = subscription;
    r->watcher = watcher;
    r->retired_ms = timestamp_monotonic_ms();
    pthread_mutex_lock(&c->lock);
    r->next = c->retired;
    c->retired = r;
    retired **old = &r->next; /* the rest is older: cut it where the grace has passed */
    while (*old && r->retired_ms - (*old)->retired_ms < RETIRE_GRACE_MS)
        old = &(*old)->next;
    retired *expired = *old;
    *old = NULL;
    pthread_mutex_unlock(&c->lock);
    destroy_retired(expired);
}

void nats_connection_retire_subscription(nats_connection *c, natsSubscription *subscription) {
    if (subscription != NULL)
        retire(c, subscription, NULL);
}

void nats_connection_retire_watcher(nats_connection *c, kvWatcher *watcher) {
    if (watcher == NULL)
        return;
    kvWatcher_Stop(watcher);
    retire(c, NULL, watcher);
}

/* --- the connection -------------------------------------------------------------------------- */

static void on_closed(natsConnection *nc, void *closure) {
    (void)nc;
    nats_connection *c = closure;
    pthread_mutex_lock(&c->lock);
    c->closed = true;
    pthread_cond_broadcast(&c->closed_cond);
    pthread_mutex_unlock(&c->lock);
}

static void connection_free(nats_connection *c) {
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->listeners_lock);
    pthread_cond_destroy(&c->closed_cond);
    free(c);
}

static void on_disconnected(natsConnection *nc, void *closure) {
    (void)nc;
    nats_connection *c = closure;
    LOG_WARN("lost the connection to NATS; reconnecting");
    if (c->health)
        health_set_dependency(c->health, "nats", false);
}

static void on_reconnected(natsConnection *nc, void *closure) {
    (void)nc;
    nats_connection *c = closure;
    atomic_store(&c->reconnected_ms, timestamp_monotonic_ms());
    atomic_fetch_add(&c->reconnects, 1);
    LOG_INFO("reconnected to NATS");
    if (c->health)
        health_set_dependency(c->health, "nats", true);
    pthread_mutex_lock(&c->listeners_lock);
    for (int i = 0; i < NATS_RECONNECT_LISTENERS; i++)
        if (c->listeners[i].callback != NULL)
            c->listeners[i].callback(c->listeners[i].closure);
    pthread_mutex_unlock(&c->listeners_lock);
}

/* What NATS refuses after connecting arrives here, not at the call: a publish or subscribe the
 * user's permissions do not allow ("Permissions Violation for Publish to ..."), or a
 * reconnect refused after the credentials changed on the server. */
static void on_async_error(natsConnection *nc, natsSubscription *subscription, natsStatus error,
                           void *closure) {
    (void)subscription;
    (void)closure;
    const char *text = NULL;
    natsConnection_GetLastError(nc, &text);
    LOG_ERROR("NATS refused: %s (%s)", text != NULL && text[0] ? text : natsStatus_GetText(error),
              natsStatus_GetText(error));
}

bool nats_connection_listen_reconnects(nats_connection *c, nats_reconnected callback, void *closure) {
    bool added = false;
    pthread_mutex_lock(&c->listeners_lock);
    for (int i = 0; i < NATS_RECONNECT_LISTENERS && !added; i++) {
        if (c->listeners[i].callback == NULL) {
            c->listeners[i].callback = callback;
            c->listeners[i].closure = closure;
            added = true;
        }
    }
    pthread_mutex_unlock(&c->listeners_lock);
    return added;
}

void nats_connection_unlisten_reconnects(nats_connection *c, nats_reconnected callback, void *closure) {
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->listeners_lock);
    for (int i = 0; i < NATS_RECONNECT_LISTENERS; i++)
        if (c->listeners[i].callback == callback && c->listeners[i].closure == closure)
            c->listeners[i].callback = NULL;
    pthread_mutex_unlock(&c->listeners_lock);
}

status_code nats_status_to_status(natsStatus s, const char *what, status *st) {
    const char *text = nats_GetLastError(NULL);
    if (text == NULL)
        text = natsStatus_GetText(s);
    switch (s) {
    case NATS_OK:
        return STATUS_OK;
    case NATS_NOT_FOUND:
        return status_set(st, STATUS_NOT_FOUND, "NOT_FOUND", "%s: not found", what);
    case NATS_TIMEOUT:
        return status_set(st, STATUS_UNAVAILABLE, "NATS_TIMEOUT", "%s: NATS did not answer in time",
                          what);
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_SERVER:
    case NATS_NO_SERVER_SUPPORT:
    case NATS_NOT_YET_CONNECTED:
    case NATS_NO_RESPONDERS:
    case NATS_IO_ERROR:
        return status_set(st, STATUS_UNAVAILABLE, "NATS_UNAVAILABLE", "%s: NATS is unavailable (%s)",
                          what, natsStatus_GetText(s));
    default:
        break;
    }
    /* a JetStream cluster electing a leader (a node lost): retry, as for a timeout */
    if (strstr(text, "temporarily unavailable") != NULL)
        return status_set(st, STATUS_UNAVAILABLE, "NATS_UNAVAILABLE",
                          "%s: JetStream is electing a leader; try again", what);
    if (strstr(text, "wrong last sequence") != NULL)
        return status_set(st, STATUS_ABORTED, "REVISION_MISMATCH",
                          "%s: changed concurrently", what);
    return status_set(st, STATUS_INTERNAL, "NATS_ERROR", "%s: %s", what, text);
}

/* A stream or bucket made earlier with another replica count is left as it is: changing it
 * is an operator's step (`nats stream edit --replicas`), not something each replica of a
 * service should race to do during a rolling update. */
void nats_warn_on_other_replicas(const char *name, int64_t has, int wanted) {
    if (has != (wanted > 0 ? wanted : 1))
        LOG_WARN("%s has %lld replicas, NATS_REPLICAS asks for %d; it is used as it is (change "
                 "it with `nats stream edit %s --replicas %d`)",
                 name, (long long)has, wanted, name, wanted);
}

bool nats_jetstream_placement_pending(natsStatus s) {
    const char *text = s != NATS_OK ? nats_GetLastError(NULL) : NULL;
    return text != NULL && strstr(text, "no suitable peers") != NULL;
}

status_code nats_jetstream_create_status(natsStatus s, const char *what, int replicas, status *st) {
    const char *text = nats_GetLastError(NULL);
    if (s != NATS_OK && text != NULL) {
        if (strstr(text, "not supported in non-clustered mode") != NULL)
            return status_set(st, STATUS_FAILED_PRECONDITION, "NATS_REPLICAS",
                              "%s: NATS_REPLICAS=%d, but NATS is a single server, not a JetStream "
                              "cluster: set NATS_REPLICAS=1 or give every NATS URL of a cluster",
                              what, replicas);
        if (strstr(text, "insufficient resources") != NULL ||
            strstr(text, "no suitable peers") != NULL)
            return status_set(st, STATUS_FAILED_PRECONDITION, "NATS_REPLICAS",
                              "%s: NATS_REPLICAS=%d, but the JetStream cluster cannot place that "
                              "many replicas (fewer servers, or some down): lower NATS_REPLICAS to "
                              "at most the cluster's size (%s)",
                              what, replicas, text);
    }
    return nats_status_to_status(s, what, st);
}

/* NATS.c spins up to 2,000 times on a contended mutex before it sleeps (its default). With
 * a service's dozens of threads on a few cores the spinning thread mostly keeps the holder
 * from running: profiled under the borrow benchmark on 2 cores, 13% of all CPU went to
 * natsMutex_Lock. Without spinning the same load runs faster. */
static void library_open(void) {
    nats_Open(0);
}

/* NATS_URL may list a cluster's servers, "nats://a:4222,nats://b:4222". natsOptions_SetURL
 * takes the whole text as one URL (only natsConnection_ConnectTo splits it), so a list is
 * split here and given as servers; NATS.c then connects to any of them (in random order, so
 * replicas spread over the nodes) and reconnects to another when one dies. */
static natsStatus set_servers(natsOptions *opts, const char *urls) {
    enum { MAX_SERVERS = 16 };
    char copy[1024];
    if (snprintf(copy, sizeof copy, "%s", urls) >= (int)sizeof copy)
        return NATS_INVALID_ARG;
    const char *servers[MAX_SERVERS];
    int count = 0;
    char *save = NULL;
    for (char *url = strtok_r(copy, ", ", &save); url != NULL; url = strtok_r(NULL, ", ", &save)) {
        if (count == MAX_SERVERS)
            return NATS_INVALID_ARG;
        servers[count++] = url;
    }
    if (count == 0)
        return NATS_INVALID_ARG;
    return natsOptions_SetServers(opts, servers, count);
}

/* What waiting cannot fix: wrong credentials, or TLS on one side only or not trusted. */
static bool refused(natsStatus s) {
    return s == NATS_CONNECTION_AUTH_FAILED || s == NATS_SSL_ERROR ||
           s == NATS_SECURE_CONNECTION_REQUIRED || s == NATS_SECURE_CONNECTION_WANTED;
}

static status_code connect_failed(natsStatus s, const nats_connection_options *options, status *st) {
    bool anonymous = options->user == NULL || options->user[0] == '\0';
    if (s == NATS_CONNECTION_AUTH_FAILED)
        return status_set(st, STATUS_UNAUTHENTICATED, "NATS_AUTH",
                          "NATS at %s refused %s%s%s (%s): check NATS_USER and NATS_PASSWORD or "
                          "NATS_PASSWORD_FILE against the server's users",
                          options->url, anonymous ? "a client without credentials" : "user '",
                          anonymous ? "" : options->user, anonymous ? "" : "'", natsStatus_GetText(s));
    if (refused(s)) {
        const char *text = nats_GetLastError(NULL);
        return status_set(st, STATUS_UNAUTHENTICATED, "NATS_TLS",
                          "TLS with NATS at %s failed (%s: %s): check NATS_TLS_CA_FILE against the "
                          "server's certificate and tls block",
                          options->url, natsStatus_GetText(s), text != NULL ? text : "");
    }
    return status_set(st, STATUS_UNAVAILABLE, "NATS_UNAVAILABLE", "cannot connect to NATS at %s: %s",
                      options->url, natsStatus_GetText(s));
}

status_code nats_connection_open(const nats_connection_options *options, nats_connection **out,
                                 status *st) {
    static pthread_once_t opened = PTHREAD_ONCE_INIT;
    pthread_once(&opened, library_open);
    nats_connection *c = calloc(1, sizeof *c);
    if (c == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    c->health = options->health;
    atomic_init(&c->reconnects, 0);
    atomic_init(&c->reconnected_ms, 0);
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->listeners_lock, NULL);
    pthread_cond_init(&c->closed_cond, NULL);
    natsOptions *opts = NULL;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = set_servers(opts, options->url);
    if (s == NATS_OK)
        s = natsOptions_SetName(opts, options->client_name);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(opts, 250);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(opts, 2000);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(opts, on_disconnected, c);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(opts, on_reconnected, c);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(opts, on_closed, c);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(opts, on_async_error, c);
    if (s == NATS_OK && options->user != NULL && options->user[0] != '\0')
        s = natsOptions_SetUserInfo(opts, options->user, options->password);
    bool tls = options->tls_ca_file != NULL && options->tls_ca_file[0] != '\0';
    if (s == NATS_OK && tls)
        s = natsOptions_SetSecure(opts, true);
    if (s == NATS_OK && tls && natsOptions_LoadCATrustedCertificates(opts, options->tls_ca_file) != NATS_OK) {
        natsOptions_Destroy(opts);
        connection_free(c);
        return status_set(st, STATUS_INVALID_ARGUMENT, "CONFIG_INVALID",
                          "NATS_TLS_CA_FILE %s is not a readable PEM certificate", options->tls_ca_file);
    }
    if (s != NATS_OK) {
        natsOptions_Destroy(opts);
        connection_free(c);
        return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_NATS_URL", "NATS options: %s (URL %s)",
                          natsStatus_GetText(s), options->url);
    }
    /* the budget is wall time: one attempt alone can take the 2 s connect timeout */
    int64_t budget = options->connect_timeout_ms > 0 ? options->connect_timeout_ms : 30000;
    int64_t give_up = timestamp_monotonic_ms() + budget;
    for (;;) {
        s = natsConnection_Connect(&c->core, opts);
        if (s == NATS_OK || refused(s) || timestamp_monotonic_ms() >= give_up)
            break;
        LOG_WARN("cannot connect to NATS at %s (%s); retrying", options->url, natsStatus_GetText(s));
        timestamp_sleep_ms(500);
    }
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
        connection_free(c);
        return connect_failed(s, options, st);
    }
    jsOptions js_options;
    jsOptions_Init(&js_options);
    js_options.Wait = options->request_timeout_ms > 0 ? options->request_timeout_ms : 2000;
    s = natsConnection_JetStream(&c->jetstream, c->core, &js_options);
    if (s != NATS_OK) {
        nats_connection_close(c);
        return nats_status_to_status(s, "JetStream context", st);
    }
    if (c->health)
        health_set_dependency(c->health, "nats", true);
    *out = c;
    return STATUS_OK;
}

void nats_connection_close(nats_connection *c) {
    if (c == NULL)
        return;
    jsCtx_Destroy(c->jetstream);
    natsConnection_Close(c->core);
    struct timespec until = timestamp_deadline(5000);
    pthread_mutex_lock(&c->lock);
    while (!c->closed && pthread_cond_timedwait(&c->closed_cond, &c->lock, &until) == 0) {
    }
    bool closed = c->closed;
    retired *r = closed ? c->retired : NULL; /* the read loop has ended: now they can go */
    if (closed)
        c->retired = NULL;
    pthread_mutex_unlock(&c->lock);
    if (!closed) {
        /* NATS.c's callbacks are late; one of them may still use c: better a leak at exit */
        LOG_WARN("NATS did not confirm the close within 5 s; leaving its connection as it is");
        return;
    }
    destroy_retired(r);
    natsConnection_Destroy(c->core);
    connection_free(c);
}

natsConnection *nats_connection_core(nats_connection *c) {
    return c->core;
}

jsCtx *nats_connection_jetstream(nats_connection *c) {
    return c->jetstream;
}

bool nats_connection_is_up(nats_connection *c) {
    return natsConnection_Status(c->core) == NATS_CONN_STATUS_CONNECTED;
}

uint64_t nats_connection_reconnects(nats_connection *c) {
    return atomic_load(&c->reconnects);
}

int64_t nats_connection_since_reconnect_ms(nats_connection *c) {
    return atomic_load(&c->reconnects) == 0 ? INT64_MAX : timestamp_monotonic_ms() - atomic_load(&c->reconnected_ms);
}

typedef struct subscription_done {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
} subscription_done;

static void on_subscription_complete(void *closure) {
    subscription_done *d = closure;
    pthread_mutex_lock(&d->lock);
    d->done = true;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

struct nats_subscription {
    natsSubscription *core;
    nats_message_handler handler;
    void *closure;
};

static void on_message(natsConnection *nc, natsSubscription *sub, natsMsg *message, void *closure) {
    (void)nc;
    (void)sub;
    nats_subscription *s = closure;
    s->handler(s->closure, (const uint8_t *)natsMsg_GetData(message), (size_t)natsMsg_GetDataLength(message));
    natsMsg_Destroy(message);
}

status_code nats_subscribe(nats_connection *connection, const char *subject, nats_message_handler handler,
                           void *closure, nats_subscription **out, status *st) {
    nats_subscription *s = calloc(1, sizeof *s);
    if (s == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    s->handler = handler;
    s->closure = closure;
    natsStatus result = natsConnection_Subscribe(&s->core, connection->core, subject, on_message, s);
    if (result != NATS_OK) {
        free(s);
        return nats_status_to_status(result, "subscribing", st);
    }
    *out = s;
    return STATUS_OK;
}

status_code nats_publish(nats_connection *connection, const char *subject, const void *data, size_t size,
                         status *st) {
    return nats_status_to_status(natsConnection_Publish(connection->core, subject, data, (int)size), "publishing", st);
}

void nats_flush(nats_connection *connection, int64_t timeout_ms) {
    natsConnection_FlushTimeout(connection->core, timeout_ms);
}

bool nats_new_inbox(char *out, size_t size) {
    natsInbox *inbox = NULL;
    if (natsInbox_Create(&inbox) != NATS_OK)
        return false;
    bool fits = (size_t)snprintf(out, size, "%s", inbox) < size;
    natsInbox_Destroy(inbox);
    return fits;
}

/* Unsubscribes and waits for the last handler; true when it finished (the wait may time out). */
static bool close_core(nats_connection *connection, natsSubscription *subscription) {
    if (subscription == NULL)
        return true;
    subscription_done *d = calloc(1, sizeof *d);
    if (d == NULL) { /* cannot wait: unsubscribe and hope no handler is running */
        natsSubscription_Unsubscribe(subscription);
        nats_connection_retire_subscription(connection, subscription);
        return false;
    }
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cond, NULL);
    bool done = true;
    /* NATS.c calls the complete callback after the last message handler has returned; it
     * refuses to set one on a subscription that is already closed, and then none can run. */
    if (natsSubscription_SetOnCompleteCB(subscription, on_subscription_complete, d) == NATS_OK &&
        natsSubscription_Unsubscribe(subscription) == NATS_OK) {
        struct timespec until = timestamp_deadline(5000);
        pthread_mutex_lock(&d->lock);
        while (!d->done && pthread_cond_timedwait(&d->cond, &d->lock, &until) == 0) {
        }
        done = d->done;
        pthread_mutex_unlock(&d->lock);
    }
    nats_connection_retire_subscription(connection, subscription);
    if (!done) { /* the callback may still come and use d: leave it allocated */
        LOG_WARN("a NATS subscription did not finish closing in 5 s");
        return false;
    }
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cond);
    free(d);
    return true;
}

void nats_subscription_close(nats_connection *connection, nats_subscription *subscription) {
    if (subscription == NULL)
        return;
    if (close_core(connection, subscription->core))
        free(subscription); /* else a handler may still come and use it: leave it allocated */
}
