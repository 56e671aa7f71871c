/* rpc_call.h - a call as the server holds it, and its streams: what rpc_server.c (the life of
 * a call: admission, queueing, unary replies, shutdown) and rpc_stream.c (server and
 * bidirectional streams: the send queue, the open streams, token expiry) share. Not for
 * services: they see rpc_server.h. */
#ifndef LIBSHARED_RPC_CALL_H
#define LIBSHARED_RPC_CALL_H

#include <grpc/grpc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "auth.h"
#include "metrics.h"
#include "rpc_internal.h"
#include "rpc_server.h"
#include "status.h"

enum {
    STATUS_CODE_COUNT = 17,
    STREAM_QUEUE_LIMIT = 256, /* messages queued for a client that does not read */
};

typedef struct stream_set stream_set;

/* The Prometheus series of one method (or of all unknown methods), resolved at registration;
 * a handled series per status code is resolved on its first use. */
typedef struct method_metrics {
    const char *type, *service, *method; /* label values */
    metric_series *started, *seconds, *shed;
    _Atomic(metric_series *) handled[STATUS_CODE_COUNT];
} method_metrics;

typedef struct registered_method {
    rpc_server *server;
    const rpc_service *service;
    const rpc_method *method;
    char *path;
    void *handle;
    method_metrics metrics;
} registered_method;

typedef struct queued_message {
    struct queued_message *next;
    grpc_byte_buffer *buffer;
} queued_message;

struct rpc_stream {
    pthread_mutex_t lock;
    queued_message *head, *tail;
    size_t queued;
    bool initial_metadata_sent;
    bool batch_in_flight; /* one send batch at a time */
    bool finish_requested;
    bool status_sent;
    bool closed;          /* the call is over */
    bool kept;            /* the handler retained the stream */
    status_code finish_code;
    status finish_status;
    void (*on_close)(void *arg);
    void *on_close_arg;
    cq_tag write_tag;
    cq_tag close_tag;
    cq_tag read_tag;
    grpc_byte_buffer *write_buffer;
    grpc_byte_buffer *read_buffer;
    int client_cancelled;
    /* Trailing metadata and details kept alive until the status batch completes. */
    reply_trailers trailers;
    struct rpc_context *prev_open, *next_open; /* the stream set's list of open streams */
    int64_t expires_at; /* the caller's token expiry (unix seconds), 0: none; the set's lock */
};

struct rpc_context {
    rpc_server *server;
    stream_set *streams; /* the server's */
    void (*on_free)(rpc_context *call); /* the server's, when the last reference goes */
    size_t max_request_bytes;           /* the method's limit on one request message */
    registered_method *method;
    grpc_call *call;
    grpc_completion_queue *cq;
    gpr_timespec deadline;
    grpc_metadata_array metadata;
    grpc_byte_buffer *payload;
    arena *arena;
    atomic_int refs;
    int64_t started_ns;
    bool on_poller;                /* a nonblocking handler's first try */
    const ProtobufCMessage *request; /* decoded, after the checks passed */
    status_code final_code; /* the status sent; CANCELLED until one is */
    char final_message[160];
    auth_identity caller;
    bool has_caller;
    const char *authorization;
    char traceparent[56];
    char trace_id[33];
    struct rpc_context *next_job;
    /* a PUBLIC stream's slot (public_slot_take), held until the call is freed */
    int retry_pushback_ms; /* sent with an admission's refusal; 0: none */
    bool holds_public_slot;
    char *peer;
    struct rpc_context *prev_public, *next_public;
    /* unary reply */
    cq_tag reply_tag;
    grpc_byte_buffer *reply_buffer;
    reply_trailers trailers;
    int cancelled;
    rpc_stream stream;
};

/* The server's open streams: ended all at once by a drain, and one by one when the token
 * they were opened with expires (a thread of their own). */
struct stream_set {
    pthread_mutex_t lock;
    rpc_context *open;
    const char *error_domain; /* of the status details a stream ends with */
    atomic_bool draining;     /* a stream that begins from now on ends at once */
    pthread_t expiry_thread;
    bool expiry_running, expiry_stopping;
    pthread_cond_t expiry_wake;
    int64_t expiry_next; /* when the thread wakes next (unix seconds), INT64_MAX: not before told */
};

/* rpc_call.c: a call's reference count (the last release calls its on_free), its final
 * status (for the metrics and the log), and a request checked against the method's size
 * limit and decoded into the call's arena. */
void rpc_call_retain(rpc_context *call);
void rpc_call_release(rpc_context *call);
void rpc_call_set_final(rpc_context *call, status_code code, const status *st);
status_code rpc_call_check_size(rpc_context *call, grpc_byte_buffer *buffer, status *st);
status_code rpc_call_decode(rpc_context *call, grpc_byte_buffer *buffer, ProtobufCMessage **request,
                            status *st);

/* rpc_stream.c */
void stream_set_init(stream_set *set, const char *error_domain);
/* Starts the thread that ends streams at their token's expiry; false when there is none (they
 * then end at their deadline only). */
bool stream_set_start_expiry(stream_set *set);
void stream_set_stop_expiry(stream_set *set);
/* Ends every open stream with UNAVAILABLE, and every stream that begins from now on. */
void stream_set_drain(stream_set *set);
void stream_set_destroy(stream_set *set);

void stream_init(rpc_stream *stream);
/* Frees what a stream still holds when its call is freed. */
void stream_clear(rpc_stream *stream);
/* Registers a server stream as open and asks the core to say when the call is over. */
void stream_begin(rpc_context *call);
/* Starts a bidirectional stream: each message the client sends is handled in turn. Takes over
 * the caller's reference. */
void stream_start_bidi(rpc_context *call);

#endif
