/* rpc_call.c - what the server and its streams both do to a call: count its references, record
 * its final status, and check and decode a request into its arena. */
#include "rpc_call.h"

#include <grpc/byte_buffer.h>
#include <stdio.h>

void rpc_call_retain(rpc_context *call) {
    atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed);
}

void rpc_call_release(rpc_context *call) {
    if (atomic_fetch_sub_explicit(&call->refs, 1, memory_order_acq_rel) == 1)
        call->on_free(call);
}

void rpc_call_set_final(rpc_context *call, status_code code, const status *st) {
    call->final_code = code;
    if (code != STATUS_OK && st != NULL)
        snprintf(call->final_message, sizeof call->final_message, "%.159s", st->message);
}

status_code rpc_call_decode(rpc_context *call, grpc_byte_buffer *buffer, ProtobufCMessage **request,
                            status *st) {
    const ProtobufCMessageDescriptor *type = call->method->method->request_type;
    if (buffer == NULL)
        return status_set(st, STATUS_INVALID_ARGUMENT, "MISSING_REQUEST",
                          "the call carried no request message");
    size_t size = 0;
    uint8_t *bytes = byte_buffer_copy(call->arena, buffer, &size);
    if (bytes == NULL)
        return status_set(st, STATUS_INVALID_ARGUMENT, "MALFORMED_REQUEST",
                          "the request could not be read (compressed with an unknown algorithm?)");
    *request = arena_unpack(call->arena, type, bytes, size);
    if (*request == NULL)
        return status_set(st, STATUS_INVALID_ARGUMENT, "MALFORMED_REQUEST",
                          "the request is not a valid %s message", type->name);
    return STATUS_OK;
}

/* Refuses a request over its method's limit before it is copied or decoded (the copy and the
 * decoded message would stay in a stream's arena as long as the stream). */
status_code rpc_call_check_size(rpc_context *call, grpc_byte_buffer *buffer, status *st) {
    size_t limit = call->max_request_bytes;
    size_t size = buffer != NULL ? grpc_byte_buffer_length(buffer) : 0;
    if (size <= limit)
        return STATUS_OK;
    return status_set(st, STATUS_RESOURCE_EXHAUSTED, "REQUEST_TOO_LARGE",
                      "received message larger than max (%zu vs. %zu)", size, limit);
}
