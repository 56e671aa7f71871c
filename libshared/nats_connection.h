/* nats_connection.h - one NATS connection per service with JetStream: connects at start
 * (retrying for a bounded time), reconnects forever afterwards, and reports NATS up or down
 * to health so a pod without NATS leaves the load balancer. */
#ifndef LIBSHARED_NATS_CONNECTION_H
#define LIBSHARED_NATS_CONNECTION_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stdint.h>

#include "health.h"
#include "status.h"

typedef struct nats_connection nats_connection;

typedef struct nats_connection_options {
    const char *url;            /* "nats://127.0.0.1:4222" */
    const char *client_name;    /* shown in NATS monitoring */
    const char *user;           /* NULL or "": no credentials */
    const char *password;
    const char *tls_ca_file;    /* NULL or "": plain TCP; else TLS, the server's certificate
                                   checked against this CA (and its name against the URL's) */
    health *health;             /* may be NULL; dependency "nats" is reported to it */
    int64_t connect_timeout_ms; /* total time to keep trying at start; 0: 30000 */
    int64_t request_timeout_ms; /* JetStream API and KV calls; 0: 2000 */
} nats_connection_options;

/* Credentials NATS refuses end the attempt at once with STATUS_UNAUTHENTICATED, reason
 * NATS_AUTH, and so does a TLS mismatch (a certificate the CA does not vouch for, a server
 * that wants TLS from a client without NATS_TLS_CA_FILE, or the reverse): reason NATS_TLS.
 * No retry can fix them. */
status_code nats_connection_open(const nats_connection_options *options, nats_connection **out,
                                 status *st);
void nats_connection_close(nats_connection *connection); /* NULL is a no-op */

natsConnection *nats_connection_core(nats_connection *connection);
jsCtx *nats_connection_jetstream(nats_connection *connection);
bool nats_connection_is_up(nats_connection *connection);
/* How often the connection came back after a loss; a watcher started before may have missed
 * what happened in between. */
uint64_t nats_connection_reconnects(nats_connection *connection);
/* Milliseconds since the last reconnect (INT64_MAX when there was none). Right after one,
 * NATS.c's own threads are recreating ordered consumers (KV watchers): stopping a watcher
 * then races them (a use after free inside NATS.c 3.4 that ASan caught), so wait a little. */
int64_t nats_connection_since_reconnect_ms(nats_connection *connection);

/* Core NATS subscriptions come back after a reconnect, but what was published meanwhile is
 * gone for them. A listener hears of each reconnect (on NATS.c's callback thread, once the
 * subscriptions are back) and can make up for it; it must not block. Up to
 * NATS_RECONNECT_LISTENERS per connection; false when that many are listening already.
 * Unlisten before freeing the closure: it waits for a callback that is running. */
enum { NATS_RECONNECT_LISTENERS = 4 };
typedef void (*nats_reconnected)(void *closure);
bool nats_connection_listen_reconnects(nats_connection *connection, nats_reconnected callback,
                                       void *closure);
void nats_connection_unlisten_reconnects(nats_connection *connection, nats_reconnected callback,
                                         void *closure);

/* Subscriptions and KV watchers are never destroyed while the connection runs: NATS.c 3.4
 * (Debian 12) can crash its read loop on a message for a subscription destroyed at that very
 * moment (nats.c issue #637, fixed in 3.10). Retiring one takes it out of use at once; it is
 * destroyed after the read loop has ended (nats_connection_close), or once it has been
 * retired for a minute. The subscription is neither unsubscribed nor drained here: the
 * caller does that first when it should (a durable consumer's pull subscription must not be
 * unsubscribed, which would delete the consumer). NULL is a no-op. */
void nats_connection_retire_subscription(nats_connection *connection, natsSubscription *subscription);
/* Stops the watcher (no more entries; a kvWatcher_Next waiting returns) and retires it. */
void nats_connection_retire_watcher(nats_connection *connection, kvWatcher *watcher);

/* Unsubscribes a plain (core NATS) asynchronous subscription and waits, a few seconds at
 * most, until its handler can no longer be running; then retires it. Use this before
 * freeing what the handler's closure points to. NULL is a no-op. */
typedef struct nats_subscription nats_subscription;

/* A message on a plain (core NATS) subscription: its payload, valid during the call. Runs on
 * the subscription's NATS.c thread, one message at a time. */
typedef void (*nats_message_handler)(void *closure, const uint8_t *data, size_t size);

/* Subscribes to subject (wildcards allowed) with a handler; *out is closed with
 * nats_subscription_close. */
status_code nats_subscribe(nats_connection *connection, const char *subject, nats_message_handler handler,
                           void *closure, nats_subscription **out, status *st);

/* Publishes on a plain subject (no JetStream acknowledgement). */
status_code nats_publish(nats_connection *connection, const char *subject, const void *data, size_t size,
                         status *st);

/* Waits up to timeout_ms until the server has every message published so far. */
void nats_flush(nats_connection *connection, int64_t timeout_ms);

/* A subject no other subscriber shares (an inbox): out has at least 64 bytes. */
bool nats_new_inbox(char *out, size_t size);

/* Unsubscribes and waits (up to 5 s) until no handler runs any more, then frees it. NULL is a
 * no-op. */
void nats_subscription_close(nats_connection *connection, nats_subscription *subscription);

/* Logs a warning when a stream or bucket that exists has another replica count than wanted
 * (NATS_REPLICAS); it is used as it is. */
void nats_warn_on_other_replicas(const char *name, int64_t has, int wanted);

/* Maps a failure to create a stream or bucket with `replicas` replicas. A JetStream that
 * cannot place that many (a single server, or a cluster with fewer servers) is
 * FAILED_PRECONDITION with reason NATS_REPLICAS: no retry can fix it, so a service stops at
 * start as it does for a bad setting (exit 2). Anything else as nats_status_to_status. Call it
 * right after the failed call: it reads NATS.c's last error text. */
status_code nats_jetstream_create_status(natsStatus s, const char *what, int replicas, status *st);
/* True when the last JetStream create failed for want of peers to place its replicas right
 * now ("no suitable peers for placement": a cluster still forming at start, or a server
 * restarting), which passes; false for anything else, "insufficient resources" (more replicas
 * than servers) included. Read right after the failed call (NATS.c's last error is per thread). */
bool nats_jetstream_placement_pending(natsStatus s);

/* How long a service keeps creating its stream and buckets while placement is pending, before
 * it gives up as nats_jetstream_create_status says. */
enum { NATS_PLACEMENT_WAIT_MS = 20000 };

/* Maps a NATS.c status (and its last error text) onto ours: timeouts and lost connections
 * become UNAVAILABLE, "wrong last sequence" becomes ABORTED with reason REVISION_MISMATCH. */
status_code nats_status_to_status(natsStatus s, const char *what, status *st);

#endif
