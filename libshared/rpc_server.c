/* rpc_server.c - the gRPC server on the C core.
 *
 * Life of a call: a poller thread gets a requested call from its completion queue, posts a
 * fresh request in its place, and admits it (request size, public stream slots, the token) or
 * refuses it at once; then either sheds it (over the in-flight limit), answers it at once
 * (unknown method), or queues it for a worker. The worker decodes, runs the handler and
 * starts one batch with the whole reply; the poller frees the call when that batch
 * completes. Server streams (rpc_stream.c) keep the call alive with a reference count and
 * send one message at a time from a queue. */
#include "rpc_server.h"

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "health.h"
#include "log.h"
#include "metrics.h"
#include "rate_limit.h"
#include "reflection.h"
#include "rpc_call.h"
#include "rpc_internal.h"
#include "text.h"
#include "timestamp.h"

enum {
    MAX_METHODS = 64,
    MAX_SERVICES = 16,
    REQUESTS_PER_METHOD = 8, /* calls kept requested per method and completion queue */
    SUMMARY_INTERVAL_MS = 60000, /* how often the access summary is logged at info */
};

/* A call requested from the core, waiting for a client. */
typedef struct call_request {
    cq_tag tag;
    rpc_server *server;
    registered_method *method; /* NULL: the generic request that catches unknown methods */
    grpc_completion_queue *cq;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array metadata;
    grpc_byte_buffer *payload;
    grpc_call_details details;
} call_request;

typedef struct poller {
    rpc_server *server;
    grpc_completion_queue *cq;
    pthread_t thread;
} poller;

struct rpc_server {
    rpc_server_options options;
    grpc_server *core;
    int port;
    poller *pollers;
    int poller_count;
    pthread_t *workers;
    int worker_count;
    registered_method methods[MAX_METHODS];
    size_t method_count;
    const rpc_service *services[MAX_SERVICES];
    size_t service_count;
    health *health;
    reflection *reflection;

    pthread_mutex_t jobs_lock;
    pthread_cond_t jobs_ready;
    rpc_context *jobs_head, *jobs_tail;
    bool workers_stopping;
    atomic_int in_flight;
    atomic_int live_calls; /* calls created and not yet freed: the drain waits for them alone */

    stream_set streams;

    pthread_mutex_t public_lock;
    rpc_context *public_streams; /* the calls holding a public slot */
    int public_stream_count;

    rate_limiter *writes; /* per user; NULL: no limit */

    pthread_mutex_t shutdown_lock;
    pthread_cond_t shutdown_done_cond;
    bool started, shutting_down, shutdown_done;
    cq_tag shutdown_tag;
    /* Deferred answers come from threads of their own (rpc_context_answer). They start their
     * batch under the read lock; shutdown closes the queues under the write lock, after which
     * an answer is dropped instead of starting a batch on a closed queue (an abort in the
     * core). */
    pthread_rwlock_t queues_lock;
    bool queues_closed;

    method_metrics unknown_metrics;
    /* the access summary: totals since start, and a thread that logs them every minute */
    atomic_llong calls_total, errors_total, shed_total;
    pthread_t summary_thread;
    bool summary_running;
    pthread_cond_t summary_wake; /* with shutdown_lock */
};

static void request_post(call_request *request);

/* --- helpers ---------------------------------------------------------------------- */

static bool slice_equals(grpc_slice slice, const char *text) {
    size_t length = strlen(text);
    return GRPC_SLICE_LENGTH(slice) == length &&
           memcmp(GRPC_SLICE_START_PTR(slice), text, length) == 0;
}

/* W3C trace context: keep the caller's traceparent when it is well formed, else start one. */
static bool traceparent_valid(const char *value) {
    static const char pattern[] = "00-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX-XXXXXXXXXXXXXXXX-XX";
    if (value == NULL || strlen(value) != sizeof pattern - 1)
        return false;
    for (size_t i = 0; pattern[i]; i++) {
        if (pattern[i] == 'X') {
            if (!((value[i] >= '0' && value[i] <= '9') || (value[i] >= 'a' && value[i] <= 'f')))
                return false;
        } else if (i > 1 && value[i] != pattern[i]) {
            return false;
        }
    }
    return strncmp(value + 3, "00000000000000000000000000000000", 32) != 0;
}

static void call_init_trace(rpc_context *call) {
    const char *incoming = rpc_context_metadata(call, "traceparent");
    if (traceparent_valid(incoming)) {
        snprintf(call->traceparent, sizeof call->traceparent, "%s", incoming);
    } else {
        char trace[33], span[17];
        text_trace_hex(trace, 16);
        text_trace_hex(span, 8);
        snprintf(call->traceparent, sizeof call->traceparent, "00-%s-%s-01", trace, span);
    }
    memcpy(call->trace_id, call->traceparent + 3, 32);
    call->trace_id[32] = '\0';
}

/* --- metrics ---------------------------------------------------------------------- */

/* The standard gRPC server metrics (the names of go-grpc-prometheus and its successors). */
static metric_family *started_family, *handled_family, *seconds_family, *shed_family;
static pthread_once_t families_once = PTHREAD_ONCE_INIT;

static void families_register(void) {
    const char *const method_labels[] = {"grpc_type", "grpc_service", "grpc_method", NULL};
    const char *const code_labels[] = {"grpc_type", "grpc_service", "grpc_method", "grpc_code", NULL};
    started_family = metrics_counter("grpc_server_started_total",
                                     "RPCs started on the server.", method_labels);
    handled_family = metrics_counter("grpc_server_handled_total",
                                     "RPCs completed on the server, by status code.", code_labels);
    seconds_family = metrics_histogram("grpc_server_handling_seconds",
                                       "Time from receiving an RPC to its status being sent.",
                                       method_labels, metrics_duration_buckets,
                                       metrics_duration_bucket_count);
    shed_family = metrics_counter("grpc_server_shed_total",
                                  "RPCs refused with RESOURCE_EXHAUSTED over the in-flight limit.",
                                  method_labels);
}

static void method_metrics_init(method_metrics *m, const char *type, const char *service,
                                const char *method) {
    pthread_once(&families_once, families_register);
    m->type = type;
    m->service = service;
    m->method = method;
    const char *const labels[] = {type, service, method, NULL};
    m->started = metrics_series(started_family, labels);
    m->seconds = metrics_series(seconds_family, labels);
    m->shed = metrics_series(shed_family, labels);
    for (int i = 0; i < STATUS_CODE_COUNT; i++)
        atomic_init(&m->handled[i], NULL);
}

static metric_series *method_handled(method_metrics *m, status_code code) {
    int index = (int)code >= 0 && (int)code < STATUS_CODE_COUNT ? (int)code : (int)STATUS_UNKNOWN;
    metric_series *series = atomic_load_explicit(&m->handled[index], memory_order_acquire);
    if (series == NULL) { /* two threads may both look it up: the registry returns one series */
        const char *const labels[] = {m->type, m->service, m->method, status_code_name((status_code)index), NULL};
        series = metrics_series(handled_family, labels);
        atomic_store_explicit(&m->handled[index], series, memory_order_release);
    }
    return series;
}

static method_metrics *call_metrics(rpc_context *call);

/* A call is over: count it, time it, and log it at debug with its trace id. */
static void call_record(rpc_context *call) {
    method_metrics *m = call_metrics(call);
    double seconds = (double)(timestamp_monotonic_ns() - call->started_ns) / 1e9;
    metric_add(method_handled(m, call->final_code), 1);
    metric_observe(m->seconds, seconds);
    rpc_server *server = call->server;
    atomic_fetch_add_explicit(&server->calls_total, 1, memory_order_relaxed);
    if (call->final_code != STATUS_OK)
        atomic_fetch_add_explicit(&server->errors_total, 1, memory_order_relaxed);
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        const char *request_id = rpc_context_metadata(call, "x-request-id");
        log_set_trace_id(call->trace_id);
        LOG_DEBUG("/%s/%s -> %s in %.3f ms%s%.64s%s%s", m->service, m->method,
                  status_code_name(call->final_code), seconds * 1000,
                  request_id ? " x-request-id=" : "", request_id ? request_id : "",
                  call->final_message[0] ? ": " : "", call->final_message);
        log_set_trace_id(NULL);
    }
}

/* Logs at info, once a minute while there is traffic, what the server did: the access
 * summary (each call is logged at debug). */
static void *summary_main(void *arg) {
    rpc_server *server = arg;
    long long calls = 0, errors = 0, shed_calls = 0;
    pthread_mutex_lock(&server->shutdown_lock);
    while (!server->shutting_down) {
        struct timespec until = timestamp_deadline(SUMMARY_INTERVAL_MS);
        pthread_cond_timedwait(&server->summary_wake, &server->shutdown_lock, &until);
        long long now_calls = atomic_load(&server->calls_total);
        long long now_errors = atomic_load(&server->errors_total);
        long long now_shed = atomic_load(&server->shed_total);
        if (now_calls != calls)
            LOG_INFO("served %lld calls in the last minute: %lld not OK, %lld shed; %d in flight",
                     now_calls - calls, now_errors - errors, now_shed - shed_calls,
                     atomic_load(&server->in_flight));
        calls = now_calls;
        errors = now_errors;
        shed_calls = now_shed;
    }
    pthread_mutex_unlock(&server->shutdown_lock);
    return NULL;
}

/* --- call lifetime ---------------------------------------------------------------- */

static void call_free(rpc_context *call);
static size_t method_max_request_bytes(const rpc_context *call);

static rpc_context *call_create(call_request *request) {
    rpc_context *call = calloc(1, sizeof *call);
    if (call == NULL)
        return NULL;
    call->arena = arena_create(0);
    if (call->arena == NULL) {
        free(call);
        return NULL;
    }
    call->server = request->server;
    call->method = request->method;
    call->call = request->call;
    call->cq = request->cq;
    call->deadline = request->deadline;
    call->metadata = request->metadata;
    call->payload = request->payload;
    call->started_ns = timestamp_monotonic_ns();
    call->final_code = STATUS_CANCELLED;
    metric_add(call_metrics(call)->started, 1);
    atomic_init(&call->refs, 1);
    atomic_fetch_add_explicit(&call->server->live_calls, 1, memory_order_relaxed);
    call->on_free = call_free;
    call->max_request_bytes = call->method ? method_max_request_bytes(call) : 0;
    call->streams = &request->server->streams;
    stream_init(&call->stream);
    call_init_trace(call);
    return call;
}

static void public_slot_release(rpc_context *call);

/* The last reference is gone (rpc_call_release): count the call, and free it. */
static void call_free(rpc_context *call) {
    call_record(call);
    public_slot_release(call);
    stream_clear(&call->stream);
    reply_trailers_clear(&call->trailers);
    if (call->reply_buffer)
        grpc_byte_buffer_destroy(call->reply_buffer);
    if (call->payload)
        grpc_byte_buffer_destroy(call->payload);
    grpc_metadata_array_destroy(&call->metadata);
    grpc_call_unref(call->call);
    atomic_fetch_sub_explicit(&call->server->live_calls, 1, memory_order_release);
    arena_destroy(call->arena);
    free(call);
}

static void on_reply_sent(void *self, bool ok) {
    (void)ok; /* a failed reply means the client went away; nothing to do but free */
    rpc_call_release(self);
}

/* Answers a unary call in one batch: the message and OK, or an error. The core needs the
 * (empty) initial metadata in the batch either way; with no message in between, chttp2 sends
 * an error as one Trailers-Only HEADERS frame. */
static void call_reply(rpc_context *call, status_code code, const status *st,
                       grpc_byte_buffer *message, int pushback_ms) {
    rpc_call_set_final(call, code, st);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (code == STATUS_OK) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = message;
        call->reply_buffer = message;
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n++].data.send_status_from_server.status = GRPC_STATUS_OK;
    } else {
        reply_trailers_set(&call->trailers, st, call->server->options.error_domain, pushback_ms);
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = (grpc_status_code)code;
        ops[n].data.send_status_from_server.status_details = &call->trailers.message;
        ops[n].data.send_status_from_server.trailing_metadata = call->trailers.items;
        ops[n++].data.send_status_from_server.trailing_metadata_count = call->trailers.count;
    }
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &call->cancelled;
    call->reply_tag = (cq_tag){on_reply_sent, call};
    grpc_call_error error = grpc_call_start_batch(call->call, ops, n, &call->reply_tag, NULL);
    if (error != GRPC_CALL_OK) {
        LOG_ERROR("grpc_call_start_batch failed for a reply: %d", (int)error);
        rpc_call_release(call);
    }
}

static void call_reply_error(rpc_context *call, status_code code, const status *st) {
    call_reply(call, code, st, NULL, 0);
}

static method_metrics *call_metrics(rpc_context *call) {
    return call->method ? &call->method->metrics : &call->server->unknown_metrics;
}

/* --- request handling (worker threads) -------------------------------------------- */

static const char *method_path(const rpc_context *call) {
    return call->method ? call->method->path : "";
}

static status_code call_authenticate(rpc_context *call, status *st) {
    rpc_access access = call->method->method->access;
    if (access == RPC_ACCESS_PUBLIC)
        return STATUS_OK;
    call->authorization = rpc_context_metadata(call, "authorization");
    if (call->server->options.verifier == NULL)
        return status_set(st, STATUS_INTERNAL, "NO_VERIFIER", "the server has no token verifier");
    if (auth_verify(call->server->options.verifier, call->authorization, &call->caller, st) !=
        STATUS_OK)
        return st->code;
    call->has_caller = true;
    if (access == RPC_ACCESS_ADMIN && !call->caller.admin)
        return status_set(st, STATUS_PERMISSION_DENIED, "ADMIN_REQUIRED",
                          "%s is for administrators only", call->method->method->name);
    return STATUS_OK;
}

/* Sends a unary handler's result: the response with OK, or the error in st. */
static void call_answer(rpc_context *call, status_code code, status *st, const ProtobufCMessage *response) {
    if (code == STATUS_OK && response == NULL)
        code = status_set(st, STATUS_INTERNAL, "NO_RESPONSE", "the handler returned no response");
    if (code == STATUS_OK) {
        call_reply(call, STATUS_OK, NULL, rpc_message_to_buffer(response), 0);
    } else {
        if (st->code != code)
            st->code = code;
        call_reply_error(call, code, st);
    }
}

/* false when the handler must be run again on a worker (RPC_WOULD_BLOCK on a poller). */
static bool call_run_unary(rpc_context *call, const ProtobufCMessage *request) {
    const registered_method *m = call->method;
    status st;
    status_clear(&st);
    ProtobufCMessage *response = NULL;
    status_code code = m->method->unary(m->service->state, call, request, &response, &st);
    if (code == RPC_DEFERRED)
        return true; /* rpc_context_answer sends it */
    if (code == RPC_WOULD_BLOCK) {
        if (call->on_poller)
            return false;
        code = status_set(&st, STATUS_INTERNAL, "WOULD_BLOCK",
                          "the handler asked to block where it may already");
    }
    call_answer(call, code, &st, response);
    return true;
}

void rpc_context_answer(rpc_context *ctx, status_code code, const status *st,
                        const ProtobufCMessage *response) {
    rpc_server *server = ctx->server;
    pthread_rwlock_rdlock(&server->queues_lock);
    if (server->queues_closed) {
        /* answered after the drain cancelled the call: nobody is listening any more */
        pthread_rwlock_unlock(&server->queues_lock);
        rpc_call_release(ctx); /* the reference the reply would have dropped */
        return;
    }
    status copy;
    status_clear(&copy);
    if (st != NULL)
        copy = *st;
    log_set_trace_id(ctx->trace_id);
    call_answer(ctx, code, &copy, response);
    log_set_trace_id(NULL);
    pthread_rwlock_unlock(&server->queues_lock);
}

static void call_run_server_stream(rpc_context *call, const ProtobufCMessage *request) {
    const registered_method *m = call->method;
    stream_begin(call);
    status st;
    status_clear(&st);
    status_code code = m->method->stream(m->service->state, call, request, &call->stream, &st);
    if (code != STATUS_OK)
        rpc_stream_finish(&call->stream, code, &st);
    else if (!call->stream.kept)
        rpc_stream_finish(&call->stream, STATUS_OK, NULL);
    rpc_call_release(call); /* the handler's reference */
}

/* Checks, decodes and runs the call. false when a nonblocking handler, tried on a poller
 * thread, has to be run on a worker (the checks are not done again there). */
static bool call_process(rpc_context *call) {
    log_set_trace_id(call->trace_id);
    bool done = true;
    if (call->request == NULL) {
        status st;
        status_clear(&st);
        ProtobufCMessage *request = NULL;
        status_code code = STATUS_OK;
        if (rpc_context_remaining_ms(call) <= 0)
            code = status_set(&st, STATUS_DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED",
                              "the deadline passed before the call was handled");
        if (code == STATUS_OK)
            code = rpc_call_decode(call, call->payload, &request, &st);
        if (call->payload != NULL) { /* decoded into the arena: a stream need not keep it */
            grpc_byte_buffer_destroy(call->payload);
            call->payload = NULL;
        }
        if (code != STATUS_OK) {
            call_reply_error(call, code, &st);
            log_set_trace_id(NULL);
            return true;
        }
        call->request = request;
    }
    if (call->method->method->kind == RPC_KIND_UNARY)
        done = call_run_unary(call, call->request);
    else
        call_run_server_stream(call, call->request);
    log_set_trace_id(NULL);
    return done;
}

static void *worker_main(void *arg) {
    rpc_server *server = arg;
    for (;;) {
        pthread_mutex_lock(&server->jobs_lock);
        while (server->jobs_head == NULL && !server->workers_stopping)
            pthread_cond_wait(&server->jobs_ready, &server->jobs_lock);
        rpc_context *call = server->jobs_head;
        if (call == NULL) {
            pthread_mutex_unlock(&server->jobs_lock);
            return NULL;
        }
        server->jobs_head = call->next_job;
        if (server->jobs_head == NULL)
            server->jobs_tail = NULL;
        pthread_mutex_unlock(&server->jobs_lock);

        call_process(call);
        atomic_fetch_sub_explicit(&server->in_flight, 1, memory_order_release);
    }
}

static void jobs_push(rpc_server *server, rpc_context *call) {
    pthread_mutex_lock(&server->jobs_lock);
    call->next_job = NULL;
    if (server->jobs_tail)
        server->jobs_tail->next_job = call;
    else
        server->jobs_head = call;
    server->jobs_tail = call;
    pthread_cond_signal(&server->jobs_ready);
    pthread_mutex_unlock(&server->jobs_lock);
}

/* --- admission (poller threads) --------------------------------------------------- */

static size_t method_max_request_bytes(const rpc_context *call) {
    const rpc_method *method = call->method->method;
    if (method->max_request_bytes > 0)
        return method->max_request_bytes;
    return method->access == RPC_ACCESS_PUBLIC ? RPC_PUBLIC_MAX_REQUEST_BYTES
                                               : (size_t)call->server->options.max_message_bytes;
}

static int public_streams_from(rpc_server *server, const char *peer) {
    int count = 0;
    for (rpc_context *c = server->public_streams; c != NULL && peer != NULL; c = c->next_public)
        if (c->peer != NULL && strcmp(c->peer, peer) == 0)
            count++;
    return count;
}

/* Takes one of the public stream slots (per process and per connection) for the call's life. */
static status_code public_slot_take(rpc_context *call, status *st) {
    rpc_server *server = call->server;
    const rpc_server_options *o = &server->options;
    char *peer = grpc_call_get_peer(call->call);
    status_code code = STATUS_OK;
    pthread_mutex_lock(&server->public_lock);
    if (server->public_stream_count >= o->max_public_streams) {
        code = status_set(st, STATUS_RESOURCE_EXHAUSTED, "TOO_MANY_PUBLIC_STREAMS",
                          "%d public streams are open, the most this server allows",
                          o->max_public_streams);
    } else if (public_streams_from(server, peer) >= o->max_public_streams_per_connection) {
        code = status_set(st, STATUS_RESOURCE_EXHAUSTED, "TOO_MANY_PUBLIC_STREAMS",
                          "%d public streams are open on this connection, the most allowed",
                          o->max_public_streams_per_connection);
    } else {
        call->holds_public_slot = true;
        call->peer = peer;
        call->next_public = server->public_streams;
        if (server->public_streams != NULL)
            server->public_streams->prev_public = call;
        server->public_streams = call;
        server->public_stream_count++;
    }
    pthread_mutex_unlock(&server->public_lock);
    if (code != STATUS_OK)
        gpr_free(peer);
    return code;
}

static void public_slot_release(rpc_context *call) {
    if (!call->holds_public_slot)
        return;
    rpc_server *server = call->server;
    pthread_mutex_lock(&server->public_lock);
    if (call->prev_public != NULL)
        call->prev_public->next_public = call->next_public;
    else
        server->public_streams = call->next_public;
    if (call->next_public != NULL)
        call->next_public->prev_public = call->prev_public;
    server->public_stream_count--;
    pthread_mutex_unlock(&server->public_lock);
    call->holds_public_slot = false;
    gpr_free(call->peer);
    call->peer = NULL;
}

/* A user's write past the user's rate: refused before it costs a worker or a decode. */
static status_code call_rate_check(rpc_context *call, status *st) {
    if (!call->method->method->write || !call->has_caller || call->caller.admin)
        return STATUS_OK;
    int64_t retry_after_ms = 0;
    if (rate_limiter_take(call->server->writes, call->caller.subject, timestamp_monotonic_ms(), &retry_after_ms))
        return STATUS_OK;
    call->retry_pushback_ms = retry_after_ms > INT32_MAX ? INT32_MAX : (int)retry_after_ms;
    return status_set(st, STATUS_RESOURCE_EXHAUSTED, "RATE_LIMITED",
                      "too many writes by this user (at most %g a second); retry after %d ms",
                      call->server->options.write_rate, call->retry_pushback_ms);
}

/* What is checked before a call is queued, decoded or started, so that a caller without a
 * valid token (anyone, for public methods) costs no worker, no in-flight slot and no copy
 * of a large message: the request size, the public stream slots and the token. */
static status_code call_admit(rpc_context *call, status *st) {
    const rpc_method *method = call->method->method;
    status_code code = rpc_call_check_size(call, call->payload, st);
    if (code != STATUS_OK) {
        grpc_byte_buffer_destroy(call->payload); /* let go of it now, not when the reply is sent */
        call->payload = NULL;
        return code;
    }
    if (method->access == RPC_ACCESS_PUBLIC && method->kind != RPC_KIND_UNARY)
        return public_slot_take(call, st);
    code = call_authenticate(call, st);
    return code == STATUS_OK ? call_rate_check(call, st) : code;
}

/* --- requested calls (poller threads) --------------------------------------------- */

static void shed(rpc_context *call) {
    metric_add(call_metrics(call)->shed, 1);
    atomic_fetch_add_explicit(&call->server->shed_total, 1, memory_order_relaxed);
    status st;
    status_set(&st, STATUS_RESOURCE_EXHAUSTED, "OVERLOADED",
               "the service is busy; retry after %d ms", call->server->options.retry_pushback_ms);
    call_reply(call, STATUS_RESOURCE_EXHAUSTED, &st, NULL, call->server->options.retry_pushback_ms);
}

/* Out of memory before a call could be set up: refuse it and let go of what the core gave
 * for it, so the client is answered and nothing leaks. */
static void refuse_uncreated(call_request *request) {
    grpc_call_cancel_with_status(request->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    grpc_call_unref(request->call);
    grpc_metadata_array_destroy(&request->metadata);
    if (request->payload != NULL)
        grpc_byte_buffer_destroy(request->payload);
}

static void reply_unimplemented(call_request *request) {
    rpc_context *call = call_create(request);
    if (call == NULL) {
        refuse_uncreated(request);
        return;
    }
    size_t length = GRPC_SLICE_LENGTH(request->details.method);
    char *path = arena_strndup(call->arena, (const char *)GRPC_SLICE_START_PTR(request->details.method),
                               length > 256 ? 256 : length);
    status st;
    status_set(&st, STATUS_UNIMPLEMENTED, "UNKNOWN_METHOD", "unknown method %s", path ? path : "");
    call_reply_error(call, STATUS_UNIMPLEMENTED, &st);
}

static void on_call_requested(void *self, bool ok) {
    call_request *request = self;
    rpc_server *server = request->server;
    if (!ok) { /* the server is shutting down */
        grpc_metadata_array_destroy(&request->metadata);
        grpc_call_details_destroy(&request->details);
        free(request);
        return;
    }
    if (request->method == NULL) {
        reply_unimplemented(request);
        grpc_call_details_destroy(&request->details);
        grpc_call_details_init(&request->details);
        request_post(request);
        return;
    }
    rpc_context *call = call_create(request);
    if (call == NULL)
        refuse_uncreated(request);
    request_post(request); /* hand the slot back to the core before any work */
    if (call == NULL)
        return;
    status st;
    status_clear(&st);
    if (call_admit(call, &st) != STATUS_OK) {
        call_reply(call, st.code, &st, NULL, call->retry_pushback_ms);
        return;
    }
    if (call->method->method->kind == RPC_KIND_BIDI_STREAMING) {
        stream_start_bidi(call);
        return;
    }
    if (call->method->method->nonblocking && call->method->method->kind == RPC_KIND_UNARY) {
        call->on_poller = true;
        if (call_process(call))
            return; /* answered here, without a worker */
        call->on_poller = false;
    }
    int limit = server->options.max_in_flight;
    if (atomic_fetch_add_explicit(&server->in_flight, 1, memory_order_acq_rel) >= limit) {
        atomic_fetch_sub_explicit(&server->in_flight, 1, memory_order_release);
        shed(call);
        return;
    }
    jobs_push(server, call);
}

static void request_post(call_request *request) {
    rpc_server *server = request->server;
    request->call = NULL;
    request->payload = NULL;
    grpc_metadata_array_init(&request->metadata);
    request->tag = (cq_tag){on_call_requested, request};
    grpc_call_error error;
    if (request->method == NULL) {
        error = grpc_server_request_call(server->core, &request->call, &request->details,
                                         &request->metadata, request->cq, request->cq,
                                         &request->tag);
    } else {
        bool has_payload = request->method->method->kind != RPC_KIND_BIDI_STREAMING;
        error = grpc_server_request_registered_call(
            server->core, request->method->handle, &request->call, &request->deadline,
            &request->metadata, has_payload ? &request->payload : NULL, request->cq, request->cq,
            &request->tag);
    }
    if (error != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&request->metadata);
        grpc_call_details_destroy(&request->details);
        free(request);
    }
}

static void request_new(rpc_server *server, registered_method *method, grpc_completion_queue *cq) {
    call_request *request = calloc(1, sizeof *request);
    if (request == NULL)
        return;
    request->server = server;
    request->method = method;
    request->cq = cq;
    grpc_call_details_init(&request->details);
    request_post(request);
}

static void *poller_main(void *arg) {
    poller *p = arg;
    for (;;) {
        grpc_event event = grpc_completion_queue_next(p->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (event.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        if (event.type != GRPC_OP_COMPLETE)
            continue;
        cq_tag *tag = event.tag;
        tag->on_complete(tag->self, event.success != 0);
    }
}

/* --- server ----------------------------------------------------------------------- */

static void on_shutdown_done(void *self, bool ok) {
    (void)ok;
    rpc_server *server = self;
    pthread_mutex_lock(&server->shutdown_lock);
    server->shutdown_done = true;
    pthread_cond_broadcast(&server->shutdown_done_cond);
    pthread_mutex_unlock(&server->shutdown_lock);
}

status_code rpc_server_create(const rpc_server_options *options, rpc_server **out, status *st) {
    if (options->listen_address == NULL || options->listen_address[0] == '\0')
        return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_OPTIONS", "listen_address is required");
    rpc_server *server = calloc(1, sizeof *server);
    if (server == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    server->options = *options;
    rpc_server_options *o = &server->options;
    if (o->poller_threads <= 0)
        o->poller_threads = 2;
    if (o->worker_threads <= 0)
        o->worker_threads = 16;
    if (o->max_in_flight <= 0)
        o->max_in_flight = 256;
    if (o->retry_pushback_ms <= 0)
        o->retry_pushback_ms = 100;
    if (o->drain_grace_ms <= 0)
        o->drain_grace_ms = 10000;
    if (o->max_message_bytes <= 0)
        o->max_message_bytes = 1 << 20;
    if (o->max_public_streams <= 0)
        o->max_public_streams = 256;
    if (o->max_public_streams_per_connection <= 0)
        o->max_public_streams_per_connection = 64;
    if (o->write_rate > 0) {
        server->writes = rate_limiter_create(o->write_rate, o->write_burst);
        if (server->writes == NULL) {
            free(server);
            return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
        }
    }
    if (o->keepalive_ms <= 0)
        o->keepalive_ms = 60000;
    if (o->keepalive_timeout_ms <= 0)
        o->keepalive_timeout_ms = 20000;
    if (o->error_domain == NULL)
        o->error_domain = "library";
    pthread_mutex_init(&server->jobs_lock, NULL);
    pthread_cond_init(&server->jobs_ready, NULL);
    pthread_mutex_init(&server->public_lock, NULL);
    pthread_mutex_init(&server->shutdown_lock, NULL);
    pthread_rwlock_init(&server->queues_lock, NULL);
    pthread_cond_init(&server->shutdown_done_cond, NULL);
    pthread_cond_init(&server->summary_wake, NULL);
    stream_set_init(&server->streams, o->error_domain);
    atomic_init(&server->in_flight, 0);
    atomic_init(&server->live_calls, 0);
    atomic_init(&server->calls_total, 0);
    atomic_init(&server->errors_total, 0);
    atomic_init(&server->shed_total, 0);
    method_metrics_init(&server->unknown_metrics, "unary", "unknown", "unknown");

    grpc_init();
    grpc_arg args[] = {
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = o->max_message_bytes},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         .value.integer = 16 << 20},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIME_MS,
         .value.integer = o->keepalive_ms},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
         .value.integer = o->keepalive_timeout_ms},
        /* A watch stream may carry no data for hours: keep pinging it all the same (the
         * core's default stops after two pings without data). */
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA,
         .value.integer = 0},
    };
    grpc_channel_args channel_args = {.num_args = sizeof args / sizeof args[0], .args = args};
    server->core = grpc_server_create(&channel_args, NULL);
    *out = server;
    return STATUS_OK;
}

status_code rpc_server_add_service(rpc_server *server, const rpc_service *service, status *st) {
    if (server->started)
        return status_set(st, STATUS_FAILED_PRECONDITION, "ALREADY_STARTED",
                          "services must be added before the server starts");
    if (server->service_count == MAX_SERVICES ||
        server->method_count + service->method_count > MAX_METHODS)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "TOO_MANY_METHODS",
                          "at most %d services and %d methods", MAX_SERVICES, MAX_METHODS);
    for (size_t i = 0; i < service->method_count; i++) { /* all checked before any is added */
        const rpc_method *method = &service->methods[i];
        if (method->access != RPC_ACCESS_PUBLIC && method->access != RPC_ACCESS_USER &&
            method->access != RPC_ACCESS_ADMIN)
            return status_set(st, STATUS_INVALID_ARGUMENT, "ACCESS_UNSET",
                              "%s/%s: the method table entry sets no .access (PUBLIC, USER or "
                              "ADMIN)", service->name, method->name);
        if (method->access != RPC_ACCESS_PUBLIC && server->options.verifier == NULL)
            return status_set(st, STATUS_INVALID_ARGUMENT, "NO_VERIFIER",
                              "%s/%s needs a token verifier", service->name, method->name);
        /* The bidirectional path (reflection) checks no token, deadline or in-flight limit. */
        if (method->access != RPC_ACCESS_PUBLIC && method->kind == RPC_KIND_BIDI_STREAMING)
            return status_set(st, STATUS_INVALID_ARGUMENT, "BIDI_NOT_PUBLIC",
                              "%s/%s: bidirectional methods can only be public", service->name,
                              method->name);
    }
    for (size_t i = 0; i < service->method_count; i++) {
        const rpc_method *method = &service->methods[i];
        registered_method *entry = &server->methods[server->method_count++];
        entry->server = server;
        entry->service = service;
        entry->method = method;
        size_t length = strlen(service->name) + strlen(method->name) + 3;
        entry->path = malloc(length);
        if (entry->path == NULL)
            return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
        snprintf(entry->path, length, "/%s/%s", service->name, method->name);
        static const char *const types[] = {[RPC_KIND_UNARY] = "unary",
                                            [RPC_KIND_SERVER_STREAMING] = "server_stream",
                                            [RPC_KIND_BIDI_STREAMING] = "bidi_stream"};
        method_metrics_init(&entry->metrics, types[method->kind], service->name, method->name);
        bool has_payload = method->kind != RPC_KIND_BIDI_STREAMING;
        entry->handle = grpc_server_register_method(
            server->core, entry->path, NULL,
            has_payload ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER : GRPC_SRM_PAYLOAD_NONE, 0);
    }
    server->services[server->service_count++] = service;
    return STATUS_OK;
}

/* Stops the workers once the jobs queued are done, closes every completion queue (deferred
 * answers drop out from here on) and waits for the pollers to drain them. */
static void threads_stop(rpc_server *server) {
    pthread_mutex_lock(&server->jobs_lock);
    server->workers_stopping = true;
    pthread_cond_broadcast(&server->jobs_ready);
    pthread_mutex_unlock(&server->jobs_lock);
    for (int i = 0; i < server->worker_count; i++)
        pthread_join(server->workers[i], NULL);
    pthread_rwlock_wrlock(&server->queues_lock);
    server->queues_closed = true;
    pthread_rwlock_unlock(&server->queues_lock);
    for (int i = 0; i < server->options.poller_threads; i++)
        grpc_completion_queue_shutdown(server->pollers[i].cq);
    for (int i = 0; i < server->poller_count; i++)
        pthread_join(server->pollers[i].thread, NULL);
    server->worker_count = 0;
    server->poller_count = 0;
}

/* Starts the poller and worker threads before any call can arrive. False when the system
 * refuses one (a pids limit, RLIMIT_NPROC): the ones started are stopped again and the
 * completion queues are gone, so the caller only has to report it. */
static bool threads_start(rpc_server *server) {
    rpc_server_options *o = &server->options;
    while (server->poller_count < o->poller_threads &&
           pthread_create(&server->pollers[server->poller_count].thread, NULL, poller_main,
                          &server->pollers[server->poller_count]) == 0)
        server->poller_count++;
    while (server->poller_count == o->poller_threads && server->worker_count < o->worker_threads &&
           pthread_create(&server->workers[server->worker_count], NULL, worker_main, server) == 0)
        server->worker_count++;
    if (server->poller_count == o->poller_threads && server->worker_count == o->worker_threads)
        return true;
    threads_stop(server);
    for (int i = 0; i < o->poller_threads; i++) {
        grpc_completion_queue_destroy(server->pollers[i].cq);
        server->pollers[i].cq = NULL;
    }
    return false;
}

status_code rpc_server_start(rpc_server *server, status *st) {
    rpc_server_options *o = &server->options;
    server->pollers = calloc((size_t)o->poller_threads, sizeof *server->pollers);
    server->workers = calloc((size_t)o->worker_threads, sizeof *server->workers);
    if (server->pollers == NULL || server->workers == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    for (int i = 0; i < o->poller_threads; i++) {
        server->pollers[i].server = server;
        server->pollers[i].cq = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(server->core, server->pollers[i].cq, NULL);
    }
    grpc_server_credentials *credentials = grpc_insecure_server_credentials_create();
    server->port = grpc_server_add_http2_port(server->core, o->listen_address, credentials);
    grpc_server_credentials_release(credentials);
    if (server->port == 0) {
        for (int i = 0; i < o->poller_threads; i++) {
            grpc_completion_queue_shutdown(server->pollers[i].cq);
            grpc_completion_queue_destroy(server->pollers[i].cq);
            server->pollers[i].cq = NULL;
        }
        return status_set(st, STATUS_UNAVAILABLE, "BIND_FAILED", "cannot listen on %s",
                          o->listen_address);
    }
    if (!threads_start(server))
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "THREADS_REFUSED",
                          "the system refused to start %d poller and %d worker threads",
                          o->poller_threads, o->worker_threads);
    grpc_server_start(server->core);
    server->started = true;
    for (int i = 0; i < o->poller_threads; i++) {
        grpc_completion_queue *cq = server->pollers[i].cq;
        for (size_t m = 0; m < server->method_count; m++)
            for (int k = 0; k < REQUESTS_PER_METHOD; k++)
                request_new(server, &server->methods[m], cq);
        for (int k = 0; k < REQUESTS_PER_METHOD; k++)
            request_new(server, NULL, cq);
    }
    server->summary_running = pthread_create(&server->summary_thread, NULL, summary_main, server) == 0;
    if (!stream_set_start_expiry(&server->streams))
        LOG_WARN("no thread to end streams whose token expires: they end at their deadline only");
    return STATUS_OK;
}

size_t rpc_server_methods(const rpc_server *server, rpc_method_entry *out, size_t capacity) {
    for (size_t i = 0; i < server->method_count && i < capacity; i++)
        out[i] = (rpc_method_entry){.path = server->methods[i].path, .method = server->methods[i].method};
    return server->method_count;
}

int rpc_server_port(const rpc_server *server) {
    return server->port;
}

size_t rpc_server_services(const rpc_server *server, const rpc_service **out, size_t capacity) {
    for (size_t i = 0; i < server->service_count && i < capacity; i++)
        out[i] = server->services[i];
    return server->service_count;
}

static bool wait_shutdown_done(rpc_server *server, int64_t timeout_ms) {
    gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                      gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    struct timespec deadline = {.tv_sec = until.tv_sec, .tv_nsec = until.tv_nsec};
    pthread_mutex_lock(&server->shutdown_lock);
    while (!server->shutdown_done) {
        if (pthread_cond_timedwait(&server->shutdown_done_cond, &server->shutdown_lock, &deadline) != 0)
            break;
    }
    bool done = server->shutdown_done;
    pthread_mutex_unlock(&server->shutdown_lock);
    return done;
}

void rpc_server_shutdown(rpc_server *server) {
    if (server == NULL)
        return;
    pthread_mutex_lock(&server->shutdown_lock);
    bool first = !server->shutting_down;
    server->shutting_down = true;
    pthread_cond_broadcast(&server->summary_wake);
    pthread_mutex_unlock(&server->shutdown_lock);
    if (first && server->summary_running)
        pthread_join(server->summary_thread, NULL);
    if (!first || !server->started)
        return;
    /* the drain ends every stream; none may be ended once queues close */
    stream_set_stop_expiry(&server->streams);
    int64_t started = timestamp_monotonic_ms();
    /* Stop listening first, so nothing new arrives while open streams are ended. */
    server->shutdown_tag = (cq_tag){on_shutdown_done, server};
    grpc_server_shutdown_and_notify(server->core, server->pollers[0].cq, &server->shutdown_tag);
    stream_set_drain(&server->streams);
    /* The core's graceful shutdown also waits for every connected client to answer the
     * GOAWAY's ping, and an idle C-core client answers only when its backup poller runs (every
     * 5 s): drains of 4 to 10 s with nothing open were seen. Once every call has been answered
     * and freed, the connections are closed at once instead; before that, calls get the grace. */
    int64_t grace_ends = started + server->options.drain_grace_ms;
    bool done = false;
    while (!(done = wait_shutdown_done(server, 20)) && timestamp_monotonic_ms() < grace_ends) {
        if (atomic_load_explicit(&server->live_calls, memory_order_acquire) == 0)
            break;
    }
    if (!done) {
        if (atomic_load(&server->live_calls) > 0)
            LOG_WARN("%d calls still running after %lld ms; cancelling them", atomic_load(&server->live_calls),
                     (long long)server->options.drain_grace_ms);
        grpc_server_cancel_all_calls(server->core);
        wait_shutdown_done(server, 60000);
    }
    threads_stop(server);
    LOG_INFO("server drained in %lld ms", (long long)(timestamp_monotonic_ms() - started));
}

void rpc_server_destroy(rpc_server *server) {
    if (server == NULL)
        return;
    rpc_server_shutdown(server);
    if (server->core)
        grpc_server_destroy(server->core);
    for (int i = 0; server->pollers && i < server->options.poller_threads; i++)
        if (server->pollers[i].cq)
            grpc_completion_queue_destroy(server->pollers[i].cq);
    for (size_t i = 0; i < server->method_count; i++)
        free(server->methods[i].path);
    rate_limiter_destroy(server->writes);
    free(server->pollers);
    free(server->workers);
    pthread_mutex_destroy(&server->jobs_lock);
    pthread_cond_destroy(&server->jobs_ready);
    stream_set_destroy(&server->streams);
    pthread_mutex_destroy(&server->public_lock);
    pthread_mutex_destroy(&server->shutdown_lock);
    pthread_rwlock_destroy(&server->queues_lock);
    pthread_cond_destroy(&server->shutdown_done_cond);
    pthread_cond_destroy(&server->summary_wake);
    free(server);
    grpc_shutdown();
}

/* --- context accessors ------------------------------------------------------------- */

arena *rpc_context_arena(rpc_context *ctx) {
    return ctx->arena;
}

const auth_identity *rpc_context_caller(const rpc_context *ctx) {
    return ctx->has_caller ? &ctx->caller : NULL;
}

const char *rpc_context_authorization(const rpc_context *ctx) {
    return ctx->authorization;
}

bool rpc_context_may_block(const rpc_context *ctx) {
    return !ctx->on_poller;
}

int64_t rpc_context_remaining_ms(const rpc_context *ctx) {
    if (gpr_time_cmp(ctx->deadline, gpr_inf_future(ctx->deadline.clock_type)) == 0 ||
        ctx->deadline.tv_sec == 0)
        return INT64_MAX;
    gpr_timespec now = gpr_now(ctx->deadline.clock_type);
    gpr_timespec left = gpr_time_sub(ctx->deadline, now);
    int64_t ms = left.tv_sec * 1000 + left.tv_nsec / 1000000;
    return ms < 0 ? 0 : ms;
}

const char *rpc_context_metadata(rpc_context *ctx, const char *key) {
    for (size_t i = 0; i < ctx->metadata.count; i++) {
        const grpc_metadata *item = &ctx->metadata.metadata[i];
        if (slice_equals(item->key, key))
            return arena_strndup(ctx->arena, (const char *)GRPC_SLICE_START_PTR(item->value),
                                 GRPC_SLICE_LENGTH(item->value));
    }
    return NULL;
}

/* Propagated as Istio's distributed tracing expects of an application. */
static const char *const forwarded_headers[] = {"x-request-id", "x-b3-traceid", "x-b3-spanid",
                                                "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
                                                "b3", "tracestate"};
enum { FORWARDED_COUNT = sizeof forwarded_headers / sizeof forwarded_headers[0] };

const char *const *rpc_context_forward_metadata(rpc_context *ctx) {
    static const char *const none[] = {NULL};
    const char **out = arena_alloc(ctx->arena, (2 * FORWARDED_COUNT + 1) * sizeof *out);
    if (out == NULL)
        return none;
    size_t n = 0;
    for (size_t i = 0; i < FORWARDED_COUNT; i++) {
        const char *value = rpc_context_metadata(ctx, forwarded_headers[i]);
        if (value != NULL && value[0] != '\0' && strlen(value) < 256) {
            out[n++] = forwarded_headers[i];
            out[n++] = value;
        }
    }
    out[n] = NULL;
    return out;
}

const char *rpc_context_traceparent(const rpc_context *ctx) {
    return ctx->traceparent;
}

const char *rpc_context_trace_id(const rpc_context *ctx) {
    return ctx->trace_id;
}

const char *rpc_context_method(const rpc_context *ctx) {
    return method_path(ctx);
}
