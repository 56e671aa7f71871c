/* rpc_client.c - blocking calls on the gRPC C core: each call has its own completion queue
 * and runs as one batch, so any thread may call at any time. */
#include "rpc_client.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_internal.h"
#include "status_details.h"

enum { MAX_METADATA = 16 };

struct rpc_client {
    grpc_channel *channel;
    int64_t default_timeout_ms;
};

/* Everything one call sends and receives. */
typedef struct call_state {
    grpc_call *call;
    grpc_completion_queue *cq;
    grpc_metadata send_metadata[MAX_METADATA];
    size_t send_count;
    grpc_metadata_array initial_metadata;
    grpc_metadata_array trailing_metadata;
    grpc_status_code code;
    grpc_slice details;
} call_state;

struct rpc_client_stream {
    call_state state;
    grpc_byte_buffer *message;
    bool read_pending;
    bool finished;
    /* Completion flags, set by whichever wait sees the event: a read and the final status
     * can complete in either order. */
    bool read_done, status_done, start_done;
    bool initial_requested; /* the first read asked for the initial metadata too */
    int tag_read, tag_status, tag_start;
};

/* Waits until *flag is set by a completion, or until `until` (returns false). */
static bool stream_wait(rpc_client_stream *stream, bool *flag, gpr_timespec until) {
    while (!*flag) {
        grpc_event event = grpc_completion_queue_next(stream->state.cq, until, NULL);
        if (event.type == GRPC_QUEUE_TIMEOUT)
            return false;
        if (event.type != GRPC_OP_COMPLETE)
            continue;
        if (event.tag == &stream->tag_read)
            stream->read_done = true;
        else if (event.tag == &stream->tag_status)
            stream->status_done = true;
        else if (event.tag == &stream->tag_start)
            stream->start_done = true;
    }
    return true;
}

status_code rpc_client_create(const char *target, int64_t default_timeout_ms, rpc_client **out,
                              status *st) {
    rpc_client *client = calloc(1, sizeof *client);
    if (client == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    grpc_init();
    grpc_channel_credentials *credentials = grpc_insecure_credentials_create();
    /* round_robin: a target that resolves to several replicas ("ipv4:10.0.0.1:50051,
     * 10.0.0.2:50051", a headless Service's DNS name) gets every call spread over the ones
     * that are up, instead of pick_first's one replica until it fails. Behind one address
     * (a ClusterIP, the mesh's sidecar) it changes nothing.
     *
     * The channel's defaults suit a server that is always there; here the server may start
     * after its caller, or change replicas, and the first calls have short deadlines (lending
     * gives catalog 1 s): a reconnection backoff that grows to 120 s, a DNS name looked up
     * again at most every 30 s, and a first call that must resolve and connect within its own
     * deadline made a lending started next to a new catalog answer "the catalog did not answer"
     * for a while. So: reconnect at most 5 s apart, look the name up again after 1 s, and
     * start resolving and connecting now, not at the first call. */
    grpc_arg args[4] = {{.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                         .value.integer = 16 << 20},
                        {.type = GRPC_ARG_STRING, .key = GRPC_ARG_LB_POLICY_NAME,
                         .value.string = "round_robin"},
                        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                         .value.integer = 5000},
                        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS,
                         .value.integer = 1000}};
    grpc_channel_args channel_args = {.num_args = 4, .args = args};
    client->channel = grpc_channel_create(target, credentials, &channel_args);
    grpc_channel_credentials_release(credentials);
    grpc_channel_check_connectivity_state(client->channel, 1);
    client->default_timeout_ms = default_timeout_ms > 0 ? default_timeout_ms : 5000;
    *out = client;
    return STATUS_OK;
}

void rpc_client_destroy(rpc_client *client) {
    if (client == NULL)
        return;
    grpc_channel_destroy(client->channel);
    free(client);
    grpc_shutdown();
}

static void add_metadata(call_state *s, const char *key, const char *value) {
    if (value == NULL || s->send_count == MAX_METADATA)
        return;
    s->send_metadata[s->send_count].key = grpc_slice_from_copied_string(key);
    s->send_metadata[s->send_count].value = grpc_slice_from_copied_string(value);
    s->send_count++;
}

static status_code call_begin(rpc_client *client, const char *method, const rpc_call_options *options,
                              call_state *s, status *st) {
    memset(s, 0, sizeof *s);
    int64_t timeout = options && options->timeout_ms > 0 ? options->timeout_ms
                                                         : client->default_timeout_ms;
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_millis(timeout, GPR_TIMESPAN));
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_slice path = grpc_slice_from_copied_string(method);
    s->call = grpc_channel_create_call(client->channel, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, path,
                                       NULL, deadline, NULL);
    grpc_slice_unref(path);
    if (s->call == NULL) {
        grpc_completion_queue_shutdown(s->cq);
        grpc_completion_queue_destroy(s->cq);
        return status_set(st, STATUS_INTERNAL, "CALL_FAILED", "cannot create a call to %s", method);
    }
    if (options) {
        add_metadata(s, "authorization", options->authorization);
        add_metadata(s, "traceparent", options->traceparent);
        for (const char *const *m = options->extra_metadata; m && m[0] && m[1]; m += 2)
            add_metadata(s, m[0], m[1]);
    }
    grpc_metadata_array_init(&s->initial_metadata);
    grpc_metadata_array_init(&s->trailing_metadata);
    return STATUS_OK;
}

/* Waits for one tag on the call's queue (the call's deadline bounds the wait). */
static bool wait_tag(call_state *s, void *tag, gpr_timespec until) {
    for (;;) {
        grpc_event event = grpc_completion_queue_next(s->cq, until, NULL);
        if (event.type == GRPC_QUEUE_TIMEOUT)
            return false;
        if (event.type == GRPC_OP_COMPLETE && event.tag == tag)
            return true;
    }
}

static void call_end(call_state *s) {
    grpc_call_unref(s->call);
    grpc_completion_queue_shutdown(s->cq);
    while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(s->cq);
    for (size_t i = 0; i < s->send_count; i++) {
        grpc_slice_unref(s->send_metadata[i].key);
        grpc_slice_unref(s->send_metadata[i].value);
    }
    grpc_metadata_array_destroy(&s->initial_metadata);
    grpc_metadata_array_destroy(&s->trailing_metadata);
    grpc_slice_unref(s->details);
}

static const grpc_slice *find_trailer(const call_state *s, const char *key) {
    size_t length = strlen(key);
    for (size_t i = 0; i < s->trailing_metadata.count; i++) {
        const grpc_metadata *m = &s->trailing_metadata.metadata[i];
        if (GRPC_SLICE_LENGTH(m->key) == length &&
            memcmp(GRPC_SLICE_START_PTR(m->key), key, length) == 0)
            return &m->value;
    }
    return NULL;
}

/* Turns the received status into ours: code, message, and the ErrorInfo reason if sent. */
static status_code call_status(const call_state *s, rpc_reply_info *info, status *st) {
    if (info) {
        info->retry_pushback_ms = -1;
        const grpc_slice *pushback = find_trailer(s, "grpc-retry-pushback-ms");
        if (pushback) {
            char text[24];
            size_t n = GRPC_SLICE_LENGTH(*pushback) < sizeof text - 1 ? GRPC_SLICE_LENGTH(*pushback)
                                                                    : sizeof text - 1;
            memcpy(text, GRPC_SLICE_START_PTR(*pushback), n);
            text[n] = '\0';
            info->retry_pushback_ms = strtoll(text, NULL, 10);
        }
    }
    if (s->code == GRPC_STATUS_OK)
        return STATUS_OK;
    status_set(st, (status_code)s->code, "", "%.*s", (int)GRPC_SLICE_LENGTH(s->details),
               (const char *)GRPC_SLICE_START_PTR(s->details));
    const grpc_slice *details = find_trailer(s, STATUS_DETAILS_METADATA_KEY);
    if (details && st) {
        status decoded;
        if (status_details_decode(GRPC_SLICE_START_PTR(*details), GRPC_SLICE_LENGTH(*details),
                                  &decoded))
            snprintf(st->reason, sizeof st->reason, "%s", decoded.reason);
    }
    return (status_code)s->code;
}

status_code rpc_client_call_raw(rpc_client *client, const char *method, const uint8_t *request,
                                size_t request_size, arena *a, uint8_t **response,
                                size_t *response_size, const rpc_call_options *options,
                                rpc_reply_info *info, status *st) {
    call_state s;
    status_code code = call_begin(client, method, options, &s, st);
    if (code != STATUS_OK)
        return code;
    grpc_slice payload = grpc_slice_from_copied_buffer((const char *)request, request_size);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&payload, 1);
    grpc_slice_unref(payload);
    grpc_byte_buffer *received = NULL;
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = s.send_count;
    ops[0].data.send_initial_metadata.metadata = s.send_metadata;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s.initial_metadata;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &received;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &s.trailing_metadata;
    ops[5].data.recv_status_on_client.status = &s.code;
    ops[5].data.recv_status_on_client.status_details = &s.details;
    int tag = 0;
    grpc_call_error error = grpc_call_start_batch(s.call, ops, 6, &tag, NULL);
    if (error == GRPC_CALL_OK)
        wait_tag(&s, &tag, gpr_inf_future(GPR_CLOCK_REALTIME));
    else
        s.code = GRPC_STATUS_INTERNAL;
    code = call_status(&s, info, st);
    if (code == STATUS_OK) {
        if (received == NULL) {
            code = status_set(st, STATUS_INTERNAL, "NO_RESPONSE", "the server sent no message");
        } else {
            *response = byte_buffer_copy(a, received, response_size);
            if (*response == NULL)
                code = status_set(st, STATUS_INTERNAL, "BAD_RESPONSE", "unreadable response");
        }
    }
    if (received)
        grpc_byte_buffer_destroy(received);
    grpc_byte_buffer_destroy(send);
    call_end(&s);
    return code;
}

status_code rpc_client_call(rpc_client *client, const char *method, const ProtobufCMessage *request,
                            const ProtobufCMessageDescriptor *response_type, arena *a,
                            ProtobufCMessage **response, const rpc_call_options *options,
                            status *st) {
    size_t size = 0;
    uint8_t *bytes = arena_pack(a, request, &size);
    if (bytes == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    uint8_t *reply = NULL;
    size_t reply_size = 0;
    status_code code = rpc_client_call_raw(client, method, bytes, size, a, &reply, &reply_size,
                                           options, NULL, st);
    if (code != STATUS_OK)
        return code;
    *response = arena_unpack(a, response_type, reply, reply_size);
    if (*response == NULL)
        return status_set(st, STATUS_INTERNAL, "BAD_RESPONSE", "the response is not a valid %s",
                          response_type->name);
    return STATUS_OK;
}

/* --- server streaming ------------------------------------------------------------------ */

/* The first read also takes the initial metadata: a server sends it with its first message,
 * so waiting for it belongs to rpc_client_stream_next and its wait_ms, not to open. */
static void stream_post_read(rpc_client_stream *stream) {
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!stream->initial_requested) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &stream->state.initial_metadata;
        stream->initial_requested = true;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &stream->message;
    stream->message = NULL;
    stream->read_done = false;
    if (grpc_call_start_batch(stream->state.call, ops, n, &stream->tag_read, NULL) == GRPC_CALL_OK)
        stream->read_pending = true;
}

status_code rpc_client_stream_open(rpc_client *client, const char *method,
                                   const ProtobufCMessage *request, const rpc_call_options *options,
                                   rpc_client_stream **out, status *st) {
    rpc_client_stream *stream = calloc(1, sizeof *stream);
    if (stream == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    call_state *s = &stream->state;
    status_code code = call_begin(client, method, options, s, st);
    if (code != STATUS_OK) {
        free(stream);
        return code;
    }
    grpc_byte_buffer *send = NULL;
    size_t size = protobuf_c_message_get_packed_size(request);
    grpc_slice payload = grpc_slice_malloc(size);
    protobuf_c_message_pack(request, GRPC_SLICE_START_PTR(payload));
    send = grpc_raw_byte_buffer_create(&payload, 1);
    grpc_slice_unref(payload);

    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = s->send_count;
    ops[0].data.send_initial_metadata.metadata = s->send_metadata;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    grpc_op status_op;
    memset(&status_op, 0, sizeof status_op);
    status_op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    status_op.data.recv_status_on_client.trailing_metadata = &s->trailing_metadata;
    status_op.data.recv_status_on_client.status = &s->code;
    status_op.data.recv_status_on_client.status_details = &s->details;
    grpc_call_start_batch(s->call, &status_op, 1, &stream->tag_status, NULL);
    if (grpc_call_start_batch(s->call, ops, 3, &stream->tag_start, NULL) == GRPC_CALL_OK)
        stream_wait(stream, &stream->start_done, gpr_inf_future(GPR_CLOCK_REALTIME));
    grpc_byte_buffer_destroy(send);
    stream_post_read(stream);
    *out = stream;
    return STATUS_OK;
}

status_code rpc_client_stream_next(rpc_client_stream *stream, const ProtobufCMessageDescriptor *type,
                                   arena *a, int64_t wait_ms, ProtobufCMessage **message,
                                   status *st) {
    *message = NULL;
    call_state *s = &stream->state;
    gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                      gpr_time_from_millis(wait_ms, GPR_TIMESPAN));
    if (!stream->finished && stream->read_pending) {
        if (!stream_wait(stream, &stream->read_done, until))
            return status_set(st, STATUS_DEADLINE_EXCEEDED, "WAIT_TIMEOUT",
                              "no message within %lld ms", (long long)wait_ms);
        stream->read_pending = false;
        if (stream->message != NULL) {
            size_t size = 0;
            uint8_t *bytes = byte_buffer_copy(a, stream->message, &size);
            grpc_byte_buffer_destroy(stream->message);
            stream->message = NULL;
            *message = bytes ? arena_unpack(a, type, bytes, size) : NULL;
            stream_post_read(stream);
            if (*message == NULL)
                return status_set(st, STATUS_INTERNAL, "BAD_RESPONSE", "a message did not parse");
            return STATUS_OK;
        }
    }
    if (!stream->finished) {
        stream_wait(stream, &stream->status_done, gpr_inf_future(GPR_CLOCK_REALTIME));
        stream->finished = true;
    }
    return call_status(s, NULL, st);
}

void rpc_client_stream_close(rpc_client_stream *stream) {
    if (stream == NULL)
        return;
    call_state *s = &stream->state;
    grpc_call_cancel(s->call, NULL);
    stream_wait(stream, &stream->status_done, gpr_inf_future(GPR_CLOCK_REALTIME));
    if (stream->read_pending)
        stream_wait(stream, &stream->read_done, gpr_inf_future(GPR_CLOCK_REALTIME));
    if (stream->message)
        grpc_byte_buffer_destroy(stream->message);
    call_end(s);
    free(stream);
}
