/* rpc_server.h - the gRPC server every service runs, on the gRPC C core.
 *
 * A service describes its methods in a table (name, protobuf-c request and response types,
 * handler, who may call it) and the framework does the rest: decoding, authentication,
 * deadlines, the in-flight limit (load shedding), status details, health, reflection and a
 * graceful drain. Handlers are plain functions that fill a response or a status:
 *
 *   static status_code get_book(void *state, rpc_context *ctx, const ProtobufCMessage *request,
 *                               ProtobufCMessage **response, status *st);
 *   static const rpc_method catalog_methods[] = {
 *       RPC_UNARY("GetBook", library__catalog__v1__get_book_request, library__catalog__v1__book,
 *                 get_book, RPC_ACCESS_USER),
 *   };
 *
 * Threads: a few poller threads drive the completion queues; unary and server-streaming
 * handlers run on a pool of worker threads and may block (NATS, Redis, other services).
 * Everything a handler allocates comes from rpc_context_arena() and is freed with the call. */
#ifndef LIBSHARED_RPC_SERVER_H
#define LIBSHARED_RPC_SERVER_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "auth.h"
#include "status.h"

typedef struct rpc_server rpc_server;
typedef struct rpc_context rpc_context;
typedef struct rpc_stream rpc_stream;

typedef enum rpc_access {
    /* The zero value, so a table entry that forgets .access is refused by
     * rpc_server_add_service instead of being public. */
    RPC_ACCESS_UNSET,
    RPC_ACCESS_PUBLIC, /* no token needed (health, reflection) */
    RPC_ACCESS_USER,   /* any valid token */
    RPC_ACCESS_ADMIN,  /* a valid token with role admin */
} rpc_access;

typedef enum rpc_kind {
    RPC_KIND_UNARY,
    RPC_KIND_SERVER_STREAMING,
    /* Each client message calls the handler on a poller thread; the handler must not block.
     * The framework ends the call with OK when the client half-closes. Public methods only
     * (reflection): no token, deadline or in-flight check runs on this path. */
    RPC_KIND_BIDI_STREAMING,
} rpc_kind;

/* Fill *response (allocated from the call's arena) and return STATUS_OK, or return the
 * status_set(st, ...) code. */
typedef status_code (*rpc_unary_handler)(void *state, rpc_context *ctx,
                                         const ProtobufCMessage *request,
                                         ProtobufCMessage **response, status *st);
/* Send zero or more messages with rpc_stream_send. Returning an error ends the stream with it.
 * Returning STATUS_OK leaves the stream open: the handler has kept it (rpc_stream_retain)
 * and will end it with rpc_stream_finish, or it ends when the client goes away. */
typedef status_code (*rpc_stream_handler)(void *state, rpc_context *ctx,
                                          const ProtobufCMessage *request, rpc_stream *stream,
                                          status *st);

typedef struct rpc_method {
    const char *name; /* "GetBook" */
    rpc_kind kind;
    const ProtobufCMessageDescriptor *request_type;
    const ProtobufCMessageDescriptor *response_type;
    rpc_unary_handler unary;
    rpc_stream_handler stream;
    rpc_access access;
    /* Largest request message accepted, checked before it is copied or decoded; larger is
     * RESOURCE_EXHAUSTED. 0: RPC_PUBLIC_MAX_REQUEST_BYTES for a PUBLIC method (anyone may
     * send it), the server's max_message_bytes otherwise. */
    size_t max_request_bytes;
    /* Unary only. The handler usually answers from memory: it is first run on the poller
     * thread that received the call, saving the hand-off to a worker (two or three context
     * switches). When it would have to block it returns RPC_WOULD_BLOCK (see
     * rpc_context_may_block) and the framework runs it again on a worker. */
    bool nonblocking;
    /* A write (it changes state): each user's writes are limited to
     * rpc_server_options.write_rate per second, past a burst of write_burst; administrators
     * are not limited. */
    bool write;
} rpc_method;

/* The default request limit of PUBLIC methods: a health check names a service. */
#define RPC_PUBLIC_MAX_REQUEST_BYTES ((size_t)4096)

/* A nonblocking handler's answer when it must block (and rpc_context_may_block is false). */
#define RPC_WOULD_BLOCK ((status_code)-1)
/* A unary handler's answer when it has started work that will answer the call later, from
 * another thread, with rpc_context_answer (exactly once). Until then the call, its context
 * and its arena stay valid; no worker is held, so whatever started the work must bound it. */
#define RPC_DEFERRED ((status_code)-2)

#define RPC_UNARY(name_, request_, response_, handler_, access_)                                \
    {.name = (name_), .kind = RPC_KIND_UNARY, .request_type = &request_##__descriptor,          \
     .response_type = &response_##__descriptor, .unary = (handler_), .access = (access_)}
/* The same for a handler that usually answers from memory (see rpc_method.nonblocking). */
#define RPC_UNARY_NONBLOCKING(name_, request_, response_, handler_, access_)                    \
    {.name = (name_), .kind = RPC_KIND_UNARY, .request_type = &request_##__descriptor,          \
     .response_type = &response_##__descriptor, .unary = (handler_), .access = (access_),       \
     .nonblocking = true}
/* A unary write (see rpc_method.write). */
#define RPC_UNARY_WRITE(name_, request_, response_, handler_, access_)                          \
    {.name = (name_), .kind = RPC_KIND_UNARY, .request_type = &request_##__descriptor,          \
     .response_type = &response_##__descriptor, .unary = (handler_), .access = (access_),       \
     .write = true}
#define RPC_SERVER_STREAM(name_, request_, response_, handler_, access_)                        \
    {.name = (name_), .kind = RPC_KIND_SERVER_STREAMING,                                        \
     .request_type = &request_##__descriptor, .response_type = &response_##__descriptor,        \
     .stream = (handler_), .access = (access_)}

typedef struct rpc_service {
    const char *name; /* "library.catalog.v1.CatalogService" */
    const rpc_method *methods;
    size_t method_count;
    void *state; /* passed to every handler */
} rpc_service;

typedef struct rpc_server_options {
    const char *listen_address;     /* "0.0.0.0:50051" */
    const char *error_domain;       /* google.rpc.ErrorInfo.domain, e.g. "catalog.library" */
    const auth_verifier *verifier;  /* required when any method is not PUBLIC; not owned */
    int poller_threads;             /* 0: 2 */
    int worker_threads;             /* 0: 16 */
    int max_in_flight;              /* calls queued or running; above it RESOURCE_EXHAUSTED */
    int retry_pushback_ms;          /* sent with RESOURCE_EXHAUSTED; 0: 100 */
    int64_t drain_grace_ms;         /* how long in-flight calls get on shutdown; 0: 10000 */
    int max_message_bytes;          /* largest request accepted; 0: 1 MiB */
    /* PUBLIC streams (health Watch, reflection) need no token and hold memory until they
     * end: at most this many open at once in the process, and per connection (one peer
     * address; behind a proxy that is the proxy's connection); more are RESOURCE_EXHAUSTED.
     * 0: 256 and 64. */
    int max_public_streams;
    int max_public_streams_per_connection;
    /* Writes one user (not an administrator) may make per second, and how many at once after
     * a pause; past them a write is RESOURCE_EXHAUSTED (reason RATE_LIMITED) with
     * grpc-retry-pushback-ms set to when the next one is allowed. Per server process: with
     * N replicas a user gets N times as many. write_rate 0: no limit. */
    double write_rate;
    int write_burst;
    /* HTTP/2 keepalive: a connection with a call open is pinged every keepalive_ms, and
     * closed (its calls cancelled) when a ping is not answered within
     * keepalive_timeout_ms. Ends the streams of a peer that vanished without closing its
     * connection (a host gone, a network cut). 0: 60000 and 20000. */
    int keepalive_ms;
    int keepalive_timeout_ms;
} rpc_server_options;

/* Creates a server (not yet listening) with no service. *out is owned by the caller
 * (rpc_server_destroy). Health and reflection are services like any other (builtins.h). */
status_code rpc_server_create(const rpc_server_options *options, rpc_server **out, status *st);
/* Adds a service; before rpc_server_start only. The table must outlive the server. */
status_code rpc_server_add_service(rpc_server *server, const rpc_service *service, status *st);
/* Binds and starts serving. */
status_code rpc_server_start(rpc_server *server, status *st);
/* One method a server serves, as rpc_server_methods lists it. */
typedef struct rpc_method_entry {
    const char *path; /* "/library.catalog.v1.CatalogService/GetBook"; owned by the server */
    const rpc_method *method;
} rpc_method_entry;
/* Every method the server serves (health's, reflection's and each added service's), in the
 * order they were added: fills out[0..capacity) and returns how many there are. For tools and
 * tests that must cover every method, such as the authorization matrix. */
size_t rpc_server_methods(const rpc_server *server, rpc_method_entry *out, size_t capacity);
/* The port actually bound (useful with port 0 in tests). */
int rpc_server_port(const rpc_server *server);
/* The services added, in order: fills out[0..capacity) and returns how many there are. */
size_t rpc_server_services(const rpc_server *server, const rpc_service **out, size_t capacity);
/* Graceful drain: open streams end with UNAVAILABLE, new calls are refused,
 * calls in flight get drain_grace_ms to finish, then are cancelled. Idempotent. */
void rpc_server_shutdown(rpc_server *server);
void rpc_server_destroy(rpc_server *server); /* shuts down first if needed; NULL is a no-op */


/* --- inside a handler --------------------------------------------------------------- */

arena *rpc_context_arena(rpc_context *ctx);
/* The verified caller; NULL for PUBLIC methods. */
const auth_identity *rpc_context_caller(const rpc_context *ctx);
/* The authorization header as received (to pass on to other services), or NULL. */
const char *rpc_context_authorization(const rpc_context *ctx);
/* false while a nonblocking handler runs on a poller thread: it must not block then. */
bool rpc_context_may_block(const rpc_context *ctx);
/* Answers a call whose handler returned RPC_DEFERRED, as the handler's return would have:
 * response (in the context's arena) with STATUS_OK, or the error in st. Any thread, also
 * after rpc_server_shutdown (the answer is then dropped: the drain cancelled the call), but
 * not after rpc_server_destroy. */
void rpc_context_answer(rpc_context *ctx, status_code code, const status *st,
                        const ProtobufCMessage *response);
/* Milliseconds left before the call's deadline (INT64_MAX when it has none), never < 0. */
int64_t rpc_context_remaining_ms(const rpc_context *ctx);
/* First value of a request metadata key (lower case), NUL-terminated, or NULL. */
const char *rpc_context_metadata(rpc_context *ctx, const char *key);
/* The W3C traceparent of this call: the caller's, or a new one; and its trace id part. */
const char *rpc_context_traceparent(const rpc_context *ctx);
const char *rpc_context_trace_id(const rpc_context *ctx);
/* The tracing headers of this call that a service passes on to the calls it makes
 * (x-request-id and the b3 headers Istio's Envoy uses; traceparent travels separately), as
 * {"key", "value", ..., NULL} for rpc_call_options.extra_metadata. Never NULL. */
const char *const *rpc_context_forward_metadata(rpc_context *ctx);
/* "/library.catalog.v1.CatalogService/GetBook" */
const char *rpc_context_method(const rpc_context *ctx);

/* --- server streams ------------------------------------------------------------------ */

/* Queues a message; never blocks. Thread-safe. Fails with CANCELLED once the stream has
 * ended, and ends the stream with RESOURCE_EXHAUSTED when the client falls too far behind. */
status_code rpc_stream_send(rpc_stream *stream, const ProtobufCMessage *message, status *st);
/* Ends the stream after the queued messages with code (and st's message when not OK).
 * Thread-safe; later calls are ignored. */
void rpc_stream_finish(rpc_stream *stream, status_code code, const status *st);
bool rpc_stream_is_closed(rpc_stream *stream);
void rpc_stream_retain(rpc_stream *stream);
void rpc_stream_release(rpc_stream *stream);
/* Called once, on a poller thread, when the stream ends for any reason (finished, client
 * gone, server shutting down). It must not block; it may release the stream. */
void rpc_stream_on_close(rpc_stream *stream, void (*on_close)(void *arg), void *arg);

#endif
