/* load.c - the load client on the gRPC C core async API.
 *
 * Each client thread owns a completion queue and the channels (connections) given to it;
 * each slot is one call in flight on one channel. A call is one batch (initial metadata,
 * message, half-close, and every receive), so a reply is one completion event. */
#include "load.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct load_shared load_shared;
typedef struct load_thread load_thread;

/* One connection to each target, and the plan's methods registered on the right one. */
typedef struct load_channel {
    grpc_channel **channels;    /* per target */
    grpc_channel **method_channel;
    void **handles;             /* per plan method */
} load_channel;

typedef struct load_slot {
    int index;
    load_channel *channel;
    grpc_call *call;
    int method;
    grpc_metadata send_metadata[1];
    size_t send_metadata_count;
    grpc_byte_buffer *send_buffer;
    grpc_byte_buffer *recv_buffer;
    grpc_metadata_array recv_initial;
    grpc_metadata_array recv_trailing;
    grpc_status_code code;
    grpc_slice details;
    int64_t operation_start_ns;
} load_slot;

struct load_shared {
    const load_options *options;
    const load_plan *plan;
    atomic_uint_fast64_t started;
    int64_t measure_start_ns;
    int64_t end_ns; /* INT64_MAX: until max_operations */
};

struct load_thread {
    load_shared *shared;
    pthread_t thread;
    grpc_completion_queue *cq;
    load_slot **slots;
    int slot_count;
    int outstanding;
    bool stopping;
    /* pacing */
    load_slot **idle;
    int idle_count;
    int64_t next_start_ns;
    int64_t interval_ns;
    /* counts, merged at the end */
    bench_result counts;
    int64_t last_done_ns;
};

int64_t load_now_ns(void) {
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static gpr_timespec timespec_of(int64_t ns) {
    gpr_timespec t = {.tv_sec = ns / 1000000000, .tv_nsec = (int32_t)(ns % 1000000000),
                      .clock_type = GPR_CLOCK_MONOTONIC};
    return t;
}

static void note_error(bench_result *counts, const char *what, const char *detail) {
    if (counts->first_error[0] == '\0')
        snprintf(counts->first_error, sizeof counts->first_error, "%s: %s", what, detail);
}

/* Starts one call on the slot; false (and the operation counts as failed) if it cannot. */
static bool slot_send(load_thread *t, load_slot *s, load_request *request) {
    const load_options *o = t->shared->options;
    s->method = request->method;
    s->call = grpc_channel_create_registered_call(
        s->channel->method_channel[request->method], NULL, GRPC_PROPAGATE_DEFAULTS, t->cq, s->channel->handles[request->method],
        timespec_of(load_now_ns() + o->timeout_ms * 1000000), NULL);
    if (s->call == NULL) {
        grpc_slice_unref(request->message);
        return false;
    }
    s->send_buffer = grpc_raw_byte_buffer_create(&request->message, 1);
    grpc_slice_unref(request->message);
    s->send_metadata_count = 0;
    if (request->authorization) {
        s->send_metadata[0].key = grpc_slice_from_static_string("authorization");
        s->send_metadata[0].value = *request->authorization;
        s->send_metadata_count = 1;
    }
    grpc_metadata_array_init(&s->recv_initial);
    grpc_metadata_array_init(&s->recv_trailing);
    s->recv_buffer = NULL;
    s->details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = s->send_metadata_count;
    ops[0].data.send_initial_metadata.metadata = s->send_metadata;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->send_buffer;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->recv_initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &s->recv_buffer;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.status = &s->code;
    ops[5].data.recv_status_on_client.status_details = &s->details;
    ops[5].data.recv_status_on_client.trailing_metadata = &s->recv_trailing;
    if (grpc_call_start_batch(s->call, ops, 6, s, NULL) != GRPC_CALL_OK) {
        grpc_call_unref(s->call);
        s->call = NULL;
        grpc_byte_buffer_destroy(s->send_buffer);
        s->send_buffer = NULL;
        grpc_metadata_array_destroy(&s->recv_initial);
        grpc_metadata_array_destroy(&s->recv_trailing);
        return false;
    }
    t->outstanding++;
    return true;
}

static void slot_clean(load_slot *s) {
    grpc_call_unref(s->call);
    s->call = NULL;
    grpc_byte_buffer_destroy(s->send_buffer);
    s->send_buffer = NULL;
    if (s->recv_buffer)
        grpc_byte_buffer_destroy(s->recv_buffer);
    s->recv_buffer = NULL;
    grpc_metadata_array_destroy(&s->recv_initial);
    grpc_metadata_array_destroy(&s->recv_trailing);
    grpc_slice_unref(s->details);
}

static void operation_done(load_thread *t, load_slot *s, bool ok, int64_t now);

/* Begins the slot's next operation, scheduled at start_ns (its latency counts from then). */
static void operation_start(load_thread *t, load_slot *s, int64_t start_ns) {
    load_shared *shared = t->shared;
    uint64_t max = shared->options->max_operations;
    if (max && atomic_fetch_add(&shared->started, 1) >= max) {
        t->stopping = true;
        return;
    }
    s->operation_start_ns = start_ns;
    load_request request = {0};
    shared->plan->begin(shared->plan->state, s->index, &request);
    if (!slot_send(t, s, &request)) {
        note_error(&t->counts, "load", "cannot start a call");
        operation_done(t, s, false, load_now_ns());
    }
}

static void slot_next(load_thread *t, load_slot *s, int64_t now) {
    if (t->stopping)
        return;
    if (t->interval_ns > 0)
        t->idle[t->idle_count++] = s;
    else
        operation_start(t, s, now);
}

static void operation_done(load_thread *t, load_slot *s, bool ok, int64_t now) {
    load_shared *shared = t->shared;
    if (!ok)
        t->counts.errors++;
    if (now >= shared->measure_start_ns && now <= shared->end_ns) {
        t->counts.operations++;
        histogram_record(&t->counts.latency, (uint64_t)(now - s->operation_start_ns) / 1000);
        t->last_done_ns = now;
    }
    slot_next(t, s, now);
}

static void call_completed(load_thread *t, load_slot *s, bool success) {
    load_shared *shared = t->shared;
    const load_plan *plan = shared->plan;
    t->outstanding--;
    int64_t now = load_now_ns();
    if (now >= shared->measure_start_ns && now <= shared->end_ns)
        t->counts.calls++;
    grpc_status_code code = success ? s->code : GRPC_STATUS_UNKNOWN;
    load_step step = LOAD_FAILED;
    load_request next = {0};
    if (code == GRPC_STATUS_OK) {
        grpc_byte_buffer_reader reader;
        if (s->recv_buffer && grpc_byte_buffer_reader_init(&reader, s->recv_buffer)) {
            grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
            grpc_byte_buffer_reader_destroy(&reader);
            step = plan->reply(plan->state, s->index, s->method, GRPC_SLICE_START_PTR(all),
                               GRPC_SLICE_LENGTH(all), &next);
            grpc_slice_unref(all);
        }
        if (step == LOAD_FAILED) {
            t->counts.bad_replies++;
            note_error(&t->counts, plan->methods[s->method], "an unexpected reply");
        }
    } else {
        int index = (int)code >= 0 && (int)code < (int)RESULT_CODES ? (int)code : (int)GRPC_STATUS_UNKNOWN;
        t->counts.errors_by_code[index]++;
        if (t->counts.first_error[0] == '\0')
            snprintf(t->counts.first_error, sizeof t->counts.first_error, "%s: status %d: %.*s",
                     plan->methods[s->method], (int)code, (int)GRPC_SLICE_LENGTH(s->details),
                     (const char *)GRPC_SLICE_START_PTR(s->details));
    }
    slot_clean(s);
    if (code == GRPC_STATUS_OK && step == LOAD_CONTINUE) {
        if (slot_send(t, s, &next))
            return;
        note_error(&t->counts, "load", "cannot start a call");
        operation_done(t, s, false, now);
        return;
    }
    operation_done(t, s, code == GRPC_STATUS_OK && step == LOAD_DONE, now);
}

static void *thread_main(void *arg) {
    load_thread *t = arg;
    load_shared *shared = t->shared;
    int64_t now = load_now_ns();
    t->next_start_ns = now;
    for (int i = 0; i < t->slot_count; i++) {
        if (t->interval_ns > 0)
            t->idle[t->idle_count++] = t->slots[i];
        else
            operation_start(t, t->slots[i], now);
    }
    for (;;) {
        now = load_now_ns();
        if (now >= shared->end_ns)
            t->stopping = true;
        if (t->interval_ns > 0 && !t->stopping) {
            while (t->idle_count > 0 && now >= t->next_start_ns && !t->stopping) {
                load_slot *s = t->idle[--t->idle_count];
                int64_t scheduled = t->next_start_ns;
                t->next_start_ns += t->interval_ns;
                operation_start(t, s, scheduled);
            }
        }
        if (t->stopping && t->outstanding == 0)
            break;
        int64_t wake = now + 20000000;
        if (t->interval_ns > 0 && t->idle_count > 0 && !t->stopping && t->next_start_ns < wake)
            wake = t->next_start_ns;
        if (!t->stopping && shared->end_ns < wake)
            wake = shared->end_ns;
        grpc_event event = grpc_completion_queue_next(t->cq, timespec_of(wake), NULL);
        if (event.type == GRPC_OP_COMPLETE)
            call_completed(t, event.tag, event.success != 0);
    }
    return NULL;
}

static void result_merge(bench_result *into, const bench_result *from) {
    into->operations += from->operations;
    into->calls += from->calls;
    into->errors += from->errors;
    into->bad_replies += from->bad_replies;
    for (int i = 0; i < RESULT_CODES; i++)
        into->errors_by_code[i] += from->errors_by_code[i];
    if (into->first_error[0] == '\0')
        memcpy(into->first_error, from->first_error, sizeof into->first_error);
    histogram_merge(&into->latency, &from->latency);
}

int load_run(const char *name, const load_options *options_in, const load_plan *plan,
             bench_result *result) {
    load_options options = *options_in;
    if (options.threads <= 0)
        options.threads = options.connections < 2 ? options.connections : 2;
    if (options.threads > options.connections)
        options.threads = options.connections;
    if (options.timeout_ms <= 0)
        options.timeout_ms = 10000;
    memset(result, 0, sizeof *result);
    snprintf(result->name, sizeof result->name, "%s", name);
    result->connections = options.connections;
    result->streams = options.streams;
    result->target_rate = options.rate;

    int slot_total = options.connections * options.streams;
    load_channel *channels = calloc((size_t)options.connections, sizeof *channels);
    load_slot *slots = calloc((size_t)slot_total, sizeof *slots);
    load_thread *threads = calloc((size_t)options.threads, sizeof *threads);
    if (channels == NULL || slots == NULL || threads == NULL) {
        free(channels);
        free(slots);
        free(threads);
        snprintf(result->first_error, sizeof result->first_error, "out of memory");
        return -1;
    }

    grpc_init();
    /* A local subchannel pool gives every channel its own TCP connection. */
    grpc_arg args[2] = {
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, .value.integer = 1},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = 16 << 20},
    };
    grpc_channel_args channel_args = {.num_args = 2, .args = args};
    grpc_channel_credentials *credentials = grpc_insecure_credentials_create();
    for (int c = 0; c < options.connections; c++) {
        load_channel *lc = &channels[c];
        lc->channels = calloc(options.target_count, sizeof *lc->channels);
        lc->method_channel = calloc(plan->method_count, sizeof *lc->method_channel);
        lc->handles = calloc(plan->method_count, sizeof *lc->handles);
        if (lc->channels == NULL || lc->method_channel == NULL || lc->handles == NULL)
            abort(); /* a few bytes at start: nothing sensible to do without them */
        for (size_t i = 0; i < options.target_count; i++)
            lc->channels[i] = grpc_channel_create(options.targets[i], credentials, &channel_args);
        for (size_t m = 0; m < plan->method_count; m++) {
            int target = plan->method_targets ? plan->method_targets[m] : 0;
            lc->method_channel[m] = lc->channels[target];
            lc->handles[m] = grpc_channel_register_call(lc->channels[target], plan->methods[m],
                                                        NULL, NULL);
        }
    }
    grpc_channel_credentials_release(credentials);

    load_shared shared = {.options = &options, .plan = plan};
    atomic_init(&shared.started, 0);
    int64_t start = load_now_ns();
    shared.measure_start_ns = start + (int64_t)(options.warmup_seconds * 1e9);
    shared.end_ns = options.seconds > 0 ? shared.measure_start_ns + (int64_t)(options.seconds * 1e9)
                                        : INT64_MAX;

    for (int i = 0; i < options.threads; i++) {
        load_thread *t = &threads[i];
        t->shared = &shared;
        t->cq = grpc_completion_queue_create_for_next(NULL);
        t->slots = calloc((size_t)slot_total, sizeof *t->slots);
        t->idle = calloc((size_t)slot_total, sizeof *t->idle);
        if (options.rate > 0)
            t->interval_ns = (int64_t)(1e9 * options.threads / options.rate);
        if (t->interval_ns <= 0 && options.rate > 0)
            t->interval_ns = 1;
    }
    for (int c = 0; c < options.connections; c++) {
        load_thread *t = &threads[c % options.threads];
        for (int k = 0; k < options.streams; k++) {
            load_slot *s = &slots[c * options.streams + k];
            s->index = c * options.streams + k;
            s->channel = &channels[c];
            t->slots[t->slot_count++] = s;
        }
    }
    for (int i = 0; i < options.threads; i++)
        pthread_create(&threads[i].thread, NULL, thread_main, &threads[i]);
    int64_t last_done = 0;
    for (int i = 0; i < options.threads; i++) {
        pthread_join(threads[i].thread, NULL);
        result_merge(result, &threads[i].counts);
        if (threads[i].last_done_ns > last_done)
            last_done = threads[i].last_done_ns;
    }
    int64_t window_end = options.seconds > 0 ? shared.end_ns : last_done;
    if (options.max_operations && last_done < window_end) /* the count ran out first */
        window_end = last_done;
    result->seconds = window_end > shared.measure_start_ns
                          ? (double)(window_end - shared.measure_start_ns) / 1e9
                          : 0.0;

    for (int c = 0; c < options.connections; c++) {
        for (size_t i = 0; i < options.target_count; i++)
            grpc_channel_destroy(channels[c].channels[i]);
        free(channels[c].channels);
        free(channels[c].method_channel);
        free(channels[c].handles);
    }
    for (int i = 0; i < options.threads; i++) {
        grpc_completion_queue_shutdown(threads[i].cq);
        while (grpc_completion_queue_next(threads[i].cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                   .type != GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(threads[i].cq);
        free(threads[i].slots);
        free(threads[i].idle);
    }
    free(threads);
    free(slots);
    free(channels);
    grpc_shutdown();
    return 0;
}
