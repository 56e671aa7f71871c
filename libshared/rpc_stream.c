/* rpc_stream.c - server and bidirectional streams on the C core.
 *
 * A handler sends with rpc_stream_send from any thread; messages wait in the stream's queue
 * and leave one batch at a time (the core allows one send in flight), the status last. A
 * client that stops reading fills the queue and is cancelled with RESOURCE_EXHAUSTED. The
 * server's stream set knows every open stream, to end them all at a drain and each one when
 * the token it was opened with expires. A bidirectional stream (reflection) reads the next
 * message once the handler is done with one. */
#include "rpc_call.h"

#include <grpc/byte_buffer.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --- the open streams ------------------------------------------------------------ */

void stream_set_init(stream_set *set, const char *error_domain) {
    memset(set, 0, sizeof *set);
    pthread_mutex_init(&set->lock, NULL);
    pthread_cond_init(&set->expiry_wake, NULL);
    set->error_domain = error_domain;
    set->expiry_next = INT64_MAX;
    atomic_init(&set->draining, false);
}

void stream_set_destroy(stream_set *set) {
    pthread_mutex_destroy(&set->lock);
    pthread_cond_destroy(&set->expiry_wake);
}

/* --- one stream --------------------------------------------------------------------- */

static void stream_pump_locked(rpc_context *call);

void stream_init(rpc_stream *stream) {
    pthread_mutex_init(&stream->lock, NULL);
}

void stream_clear(rpc_stream *stream) {
    for (queued_message *m = stream->head; m != NULL;) {
        queued_message *next = m->next;
        grpc_byte_buffer_destroy(m->buffer);
        free(m);
        m = next;
    }
    if (stream->write_buffer)
        grpc_byte_buffer_destroy(stream->write_buffer);
    if (stream->read_buffer)
        grpc_byte_buffer_destroy(stream->read_buffer);
    reply_trailers_clear(&stream->trailers);
    pthread_mutex_destroy(&stream->lock);
}

static void stream_unlink(rpc_context *call) {
    stream_set *set = call->streams;
    pthread_mutex_lock(&set->lock);
    rpc_stream *s = &call->stream;
    if (s->prev_open)
        s->prev_open->stream.next_open = s->next_open;
    else if (set->open == call)
        set->open = s->next_open;
    if (s->next_open)
        s->next_open->stream.prev_open = s->prev_open;
    s->prev_open = s->next_open = NULL;
    pthread_mutex_unlock(&set->lock);
}

static void on_stream_closed(void *self, bool ok) {
    (void)ok;
    rpc_context *call = self;
    rpc_stream *s = &call->stream;
    pthread_mutex_lock(&s->lock);
    s->closed = true;
    void (*callback)(void *) = s->on_close;
    void *arg = s->on_close_arg;
    s->on_close = NULL;
    pthread_mutex_unlock(&s->lock);
    stream_unlink(call);
    if (callback)
        callback(arg);
    rpc_call_release(call);
}

static void on_stream_written(void *self, bool ok) {
    rpc_context *call = self;
    rpc_stream *s = &call->stream;
    pthread_mutex_lock(&s->lock);
    s->batch_in_flight = false;
    if (s->write_buffer) {
        grpc_byte_buffer_destroy(s->write_buffer);
        s->write_buffer = NULL;
    }
    if (!ok)
        s->closed = true; /* the client is gone; RECV_CLOSE will report it */
    stream_pump_locked(call);
    pthread_mutex_unlock(&s->lock);
    rpc_call_release(call);
}

static void stream_start_batch(rpc_context *call, grpc_op *ops, size_t n) {
    rpc_stream *s = &call->stream;
    s->batch_in_flight = true;
    rpc_call_retain(call);
    if (grpc_call_start_batch(call->call, ops, n, &s->write_tag, NULL) != GRPC_CALL_OK) {
        s->batch_in_flight = false;
        s->closed = true;
        atomic_fetch_sub(&call->refs, 1); /* cannot reach 0: the caller holds a reference */
    }
}

/* Starts the next send batch if none is in flight: a queued message, else the status. */
static void stream_pump_locked(rpc_context *call) {
    rpc_stream *s = &call->stream;
    if (s->batch_in_flight || s->status_sent)
        return;
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (s->head != NULL && !s->closed) {
        queued_message *m = s->head;
        s->head = m->next;
        if (s->head == NULL)
            s->tail = NULL;
        s->queued--;
        s->write_buffer = m->buffer;
        free(m);
        if (!s->initial_metadata_sent) {
            ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
            s->initial_metadata_sent = true;
        }
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = s->write_buffer;
        s->write_tag = (cq_tag){on_stream_written, call};
        stream_start_batch(call, ops, n);
    } else if (s->finish_requested && !s->closed) {
        reply_trailers_set(&s->trailers, &s->finish_status, call->streams->error_domain, 0);
        if (!s->initial_metadata_sent) {
            ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
            s->initial_metadata_sent = true;
        }
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = (grpc_status_code)s->finish_code;
        ops[n].data.send_status_from_server.status_details = &s->trailers.message;
        if (s->finish_code != STATUS_OK) {
            ops[n].data.send_status_from_server.trailing_metadata = s->trailers.items;
            ops[n].data.send_status_from_server.trailing_metadata_count = s->trailers.count;
        }
        n++;
        s->status_sent = true;
        rpc_call_set_final(call, s->finish_code, &s->finish_status);
        s->write_tag = (cq_tag){on_stream_written, call};
        stream_start_batch(call, ops, n);
    }
}

void stream_begin(rpc_context *call) {
    stream_set *set = call->streams;
    rpc_stream *s = &call->stream;
    pthread_mutex_lock(&set->lock);
    s->next_open = set->open;
    if (set->open)
        set->open->stream.prev_open = call;
    set->open = call;
    s->expires_at = call->has_caller ? call->caller.expires_at : 0;
    if (s->expires_at > 0 && s->expires_at < set->expiry_next)
        pthread_cond_signal(&set->expiry_wake);
    pthread_mutex_unlock(&set->lock);

    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &s->client_cancelled;
    s->close_tag = (cq_tag){on_stream_closed, call};
    rpc_call_retain(call);
    if (grpc_call_start_batch(call->call, &op, 1, &s->close_tag, NULL) != GRPC_CALL_OK) {
        s->closed = true;
        stream_unlink(call);
        rpc_call_release(call);
    }
    if (atomic_load(&set->draining)) {
        status st;
        status_set(&st, STATUS_UNAVAILABLE, "SHUTTING_DOWN", "the server is shutting down");
        rpc_stream_finish(s, STATUS_UNAVAILABLE, &st);
    }
}

static rpc_context *stream_call(rpc_stream *stream) {
    return (rpc_context *)((char *)stream - offsetof(rpc_context, stream));
}

status_code rpc_stream_send(rpc_stream *stream, const ProtobufCMessage *message, status *st) {
    rpc_context *call = stream_call(stream);
    pthread_mutex_lock(&stream->lock);
    if (stream->closed || stream->finish_requested) {
        pthread_mutex_unlock(&stream->lock);
        return status_set(st, STATUS_CANCELLED, "STREAM_CLOSED", "the stream has ended");
    }
    if (stream->queued >= STREAM_QUEUE_LIMIT) {
        /* The client stopped reading: its flow-control window is full, so the send in flight
         * never completes, and a status queued behind it (rpc_stream_finish) would never
         * leave either: the stream, its queue and its handler's resources (a mypage watcher
         * slot) stayed until the client went away. Cancelling with the status sends it at
         * once (trailers and RST_STREAM are not flow-controlled), fails the send in flight so
         * the stream closes, and frees the queue now. Cancellation carries no status
         * details, only the code and message. */
        status over;
        status_set(&over, STATUS_RESOURCE_EXHAUSTED, "CLIENT_TOO_SLOW",
                   "the client did not read %d queued messages", STREAM_QUEUE_LIMIT);
        stream->finish_requested = true;
        stream->status_sent = true;
        stream->finish_code = STATUS_RESOURCE_EXHAUSTED;
        stream->finish_status = over;
        rpc_call_set_final(call, STATUS_RESOURCE_EXHAUSTED, &over);
        queued_message *dropped = stream->head;
        stream->head = stream->tail = NULL;
        stream->queued = 0;
        pthread_mutex_unlock(&stream->lock);
        while (dropped != NULL) {
            queued_message *next = dropped->next;
            grpc_byte_buffer_destroy(dropped->buffer);
            free(dropped);
            dropped = next;
        }
        grpc_call_cancel_with_status(call->call, GRPC_STATUS_RESOURCE_EXHAUSTED, over.message, NULL);
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "CLIENT_TOO_SLOW", "%s", over.message);
    }
    queued_message *m = malloc(sizeof *m);
    if (m == NULL) {
        pthread_mutex_unlock(&stream->lock);
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    }
    m->buffer = rpc_message_to_buffer(message);
    m->next = NULL;
    if (stream->tail)
        stream->tail->next = m;
    else
        stream->head = m;
    stream->tail = m;
    stream->queued++;
    stream_pump_locked(call);
    pthread_mutex_unlock(&stream->lock);
    return STATUS_OK;
}

void rpc_stream_finish(rpc_stream *stream, status_code code, const status *st) {
    rpc_context *call = stream_call(stream);
    pthread_mutex_lock(&stream->lock);
    if (!stream->finish_requested) {
        stream->finish_requested = true;
        stream->finish_code = code;
        if (st != NULL && code != STATUS_OK)
            stream->finish_status = *st;
        else
            status_clear(&stream->finish_status);
        stream->finish_status.code = code;
        stream_pump_locked(call);
    }
    pthread_mutex_unlock(&stream->lock);
}

bool rpc_stream_is_closed(rpc_stream *stream) {
    pthread_mutex_lock(&stream->lock);
    bool closed = stream->closed || stream->finish_requested;
    pthread_mutex_unlock(&stream->lock);
    return closed;
}

void rpc_stream_retain(rpc_stream *stream) {
    rpc_context *call = stream_call(stream);
    stream->kept = true;
    rpc_call_retain(call);
}

void rpc_stream_release(rpc_stream *stream) {
    rpc_call_release(stream_call(stream));
}

void rpc_stream_on_close(rpc_stream *stream, void (*on_close)(void *arg), void *arg) {
    pthread_mutex_lock(&stream->lock);
    bool already_closed = stream->closed;
    if (!already_closed) {
        stream->on_close = on_close;
        stream->on_close_arg = arg;
    }
    pthread_mutex_unlock(&stream->lock);
    if (already_closed)
        on_close(arg);
}

/* A token is checked when its call starts; a stream can outlive it. At its exp (+ leeway)
 * the stream ends with UNAUTHENTICATED, and the client opens it again with a fresh token. */
static int64_t streams_end_expired(stream_set *set, int64_t now) {
    status st;
    status_set(&st, STATUS_UNAUTHENTICATED, "TOKEN_EXPIRED",
               "the token expired; open the stream again with a fresh token");
    int64_t next = INT64_MAX;
    for (rpc_context *call = set->open; call != NULL; call = call->stream.next_open) {
        rpc_stream *s = &call->stream;
        if (s->expires_at > 0 && s->expires_at <= now) {
            s->expires_at = 0;
            rpc_stream_finish(s, STATUS_UNAUTHENTICATED, &st);
        } else if (s->expires_at > 0 && s->expires_at < next) {
            next = s->expires_at;
        }
    }
    return next;
}

static void *expiry_main(void *arg) {
    stream_set *set = arg;
    pthread_mutex_lock(&set->lock);
    while (!set->expiry_stopping) {
        set->expiry_next = streams_end_expired(set, (int64_t)time(NULL));
        if (set->expiry_next == INT64_MAX) {
            pthread_cond_wait(&set->expiry_wake, &set->lock);
        } else {
            struct timespec until = {.tv_sec = (time_t)set->expiry_next};
            pthread_cond_timedwait(&set->expiry_wake, &set->lock, &until);
        }
    }
    pthread_mutex_unlock(&set->lock);
    return NULL;
}

bool stream_set_start_expiry(stream_set *set) {
    set->expiry_running = pthread_create(&set->expiry_thread, NULL, expiry_main, set) == 0;
    return set->expiry_running;
}

void stream_set_stop_expiry(stream_set *set) {
    if (!set->expiry_running)
        return;
    pthread_mutex_lock(&set->lock);
    set->expiry_stopping = true;
    pthread_cond_signal(&set->expiry_wake);
    pthread_mutex_unlock(&set->lock);
    pthread_join(set->expiry_thread, NULL);
    set->expiry_running = false;
}

void stream_set_drain(stream_set *set) {
    atomic_store(&set->draining, true);
    status st;
    status_set(&st, STATUS_UNAVAILABLE, "SHUTTING_DOWN", "the server is shutting down");
    pthread_mutex_lock(&set->lock);
    for (rpc_context *call = set->open; call != NULL; call = call->stream.next_open)
        rpc_stream_finish(&call->stream, STATUS_UNAVAILABLE, &st);
    pthread_mutex_unlock(&set->lock);
}

/* --- bidirectional streams (reflection) -------------------------------------------- */

static void bidi_read_next(rpc_context *call);

static void on_bidi_read(void *self, bool ok) {
    rpc_context *call = self;
    rpc_stream *s = &call->stream;
    grpc_byte_buffer *buffer = s->read_buffer;
    s->read_buffer = NULL;
    if (!ok) {
        rpc_call_release(call);
        return;
    }
    if (buffer == NULL) { /* the client half-closed: we are done once our messages are sent */
        rpc_stream_finish(s, STATUS_OK, NULL);
        rpc_call_release(call);
        return;
    }
    status st;
    status_clear(&st);
    ProtobufCMessage *request = NULL;
    arena_reset(call->arena);
    status_code code = rpc_call_check_size(call, buffer, &st);
    if (code == STATUS_OK)
        code = rpc_call_decode(call, buffer, &request, &st);
    grpc_byte_buffer_destroy(buffer);
    const registered_method *m = call->method;
    if (code == STATUS_OK)
        code = m->method->stream(m->service->state, call, request, s, &st);
    if (code != STATUS_OK)
        rpc_stream_finish(s, code, &st);
    else
        bidi_read_next(call);
    rpc_call_release(call);
}

static void bidi_read_next(rpc_context *call) {
    rpc_stream *s = &call->stream;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->read_buffer;
    s->read_tag = (cq_tag){on_bidi_read, call};
    rpc_call_retain(call);
    if (grpc_call_start_batch(call->call, &op, 1, &s->read_tag, NULL) != GRPC_CALL_OK)
        rpc_call_release(call);
}

void stream_start_bidi(rpc_context *call) {
    stream_begin(call);
    call->stream.kept = true;
    bidi_read_next(call);
    rpc_call_release(call); /* the starter's reference; the read and close batches hold theirs */
}
