/* rpc_internal.h - pieces shared by the server, its streams, health, reflection and the client;
 * not for services. */
#ifndef LIBSHARED_RPC_INTERNAL_H
#define LIBSHARED_RPC_INTERNAL_H

#include <grpc/grpc.h>
#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "arena.h"
#include "status.h"

/* What every completion queue tag points to: the poller calls on_complete(self, ok). */
typedef struct cq_tag {
    void (*on_complete)(void *self, bool ok);
    void *self;
} cq_tag;

/* Trailing metadata of an error reply, kept alive until its batch completes. */
typedef struct reply_trailers {
    grpc_metadata items[2];
    size_t count;
    grpc_slice message;
    bool has_message;
} reply_trailers;

void reply_trailers_set(reply_trailers *trailers, const status *st, const char *domain,
                        int pushback_ms);
void reply_trailers_clear(reply_trailers *trailers);

/* A message packed into a byte buffer for the core (the caller destroys it). */
grpc_byte_buffer *rpc_message_to_buffer(const ProtobufCMessage *message);

/* Copies a received message into the arena as one block (the core may hand it over in
 * pieces). NULL when it cannot be read. */
uint8_t *byte_buffer_copy(arena *a, grpc_byte_buffer *buffer, size_t *size);

#endif
