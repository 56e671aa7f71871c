/* rpc_client.h - calls to other gRPC services (and the test suites' client): unary calls
 * with a deadline, auth and trace propagation, the server's status details decoded into a
 * `status`, and server-streaming reads. One rpc_client is one channel; it is thread-safe. */
#ifndef LIBSHARED_RPC_CLIENT_H
#define LIBSHARED_RPC_CLIENT_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "status.h"

typedef struct rpc_client rpc_client;
typedef struct rpc_client_stream rpc_client_stream;

typedef struct rpc_call_options {
    int64_t timeout_ms;                  /* 0: the client's default */
    const char *authorization;           /* "Bearer ..." or NULL */
    const char *traceparent;             /* W3C traceparent to propagate, or NULL */
    const char *const *extra_metadata;   /* NULL or {"key", "value", ..., NULL} */
} rpc_call_options;

typedef struct rpc_reply_info {
    int64_t retry_pushback_ms; /* grpc-retry-pushback-ms of the reply, or -1 */
} rpc_reply_info;

/* target: "host:port", or any gRPC target ("ipv4:127.0.0.1:50051,127.0.0.1:50061",
 * "dns:///catalog:50051"); calls go round-robin over the addresses it resolves to. *out is owned by the caller (rpc_client_destroy). */
status_code rpc_client_create(const char *target, int64_t default_timeout_ms, rpc_client **out,
                              status *st);
void rpc_client_destroy(rpc_client *client); /* NULL is a no-op */

/* Unary call of method ("/pkg.Service/Method"). On STATUS_OK *response is allocated from a.
 * Otherwise st has the server's code, message and ErrorInfo reason (or the transport's). */
status_code rpc_client_call(rpc_client *client, const char *method, const ProtobufCMessage *request,
                            const ProtobufCMessageDescriptor *response_type, arena *a,
                            ProtobufCMessage **response, const rpc_call_options *options,
                            status *st);

/* The same with raw bytes both ways (for tests that send malformed messages). info may be NULL. */
status_code rpc_client_call_raw(rpc_client *client, const char *method, const uint8_t *request,
                                size_t request_size, arena *a, uint8_t **response,
                                size_t *response_size, const rpc_call_options *options,
                                rpc_reply_info *info, status *st);

/* Opens a server-streaming call with one request message. */
status_code rpc_client_stream_open(rpc_client *client, const char *method,
                                   const ProtobufCMessage *request, const rpc_call_options *options,
                                   rpc_client_stream **out, status *st);
/* Waits up to wait_ms for the next message. STATUS_OK with *message set: a message.
 * STATUS_OK with *message NULL: the stream ended with OK. STATUS_DEADLINE_EXCEEDED with
 * reason "WAIT_TIMEOUT": nothing arrived in time, the stream goes on. Anything else: the
 * stream ended with that status. */
status_code rpc_client_stream_next(rpc_client_stream *stream, const ProtobufCMessageDescriptor *type,
                                   arena *a, int64_t wait_ms, ProtobufCMessage **message,
                                   status *st);
/* Cancels the call if it is still running and frees everything. NULL is a no-op. */
void rpc_client_stream_close(rpc_client_stream *stream);

#endif
