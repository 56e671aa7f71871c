/* rpc_internal.c - messages and error statuses as the C core carries them, for the server,
 * its streams, health, reflection and the client. */
#include "rpc_internal.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "status_details.h"

grpc_byte_buffer *rpc_message_to_buffer(const ProtobufCMessage *message) {
    size_t size = protobuf_c_message_get_packed_size(message);
    grpc_slice slice = grpc_slice_malloc(size);
    protobuf_c_message_pack(message, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *buffer = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return buffer;
}

uint8_t *byte_buffer_copy(arena *a, grpc_byte_buffer *buffer, size_t *size) {
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, buffer))
        return NULL;
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    *size = GRPC_SLICE_LENGTH(all);
    uint8_t *bytes = arena_alloc(a, *size ? *size : 1);
    if (bytes != NULL)
        memcpy(bytes, GRPC_SLICE_START_PTR(all), *size);
    grpc_slice_unref(all);
    return bytes;
}

void reply_trailers_set(reply_trailers *trailers, const status *st, const char *domain,
                        int pushback_ms) {
    memset(trailers, 0, sizeof *trailers);
    size_t size = 0;
    uint8_t *details = status_details_encode(st, domain, &size);
    if (details != NULL) {
        trailers->items[trailers->count].key =
            grpc_slice_from_static_string(STATUS_DETAILS_METADATA_KEY);
        trailers->items[trailers->count].value = grpc_slice_from_copied_buffer((char *)details, size);
        trailers->count++;
        free(details);
    }
    if (pushback_ms > 0) {
        char text[24];
        snprintf(text, sizeof text, "%d", pushback_ms);
        trailers->items[trailers->count].key = grpc_slice_from_static_string("grpc-retry-pushback-ms");
        trailers->items[trailers->count].value = grpc_slice_from_copied_string(text);
        trailers->count++;
    }
    trailers->message = grpc_slice_from_copied_string(st->message);
    trailers->has_message = true;
}

void reply_trailers_clear(reply_trailers *trailers) {
    for (size_t i = 0; i < trailers->count; i++) {
        grpc_slice_unref(trailers->items[i].key);
        grpc_slice_unref(trailers->items[i].value);
    }
    if (trailers->has_message)
        grpc_slice_unref(trailers->message);
    memset(trailers, 0, sizeof *trailers);
}
