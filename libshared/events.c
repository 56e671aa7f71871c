/* events.c - JetStream publishing and pull consumers over NATS.c. */
#include "events.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "timestamp.h"

enum {
    FETCH_BATCH = 64,
    FETCH_WAIT_MS = 500,
    CONSUMER_CHECK_MS = 10000, /* how often an idle or failing consumer checks it still exists */
    LAG_READ_MS = 1000,        /* how often the lag gauge is read from the consumer's state */
    PUBLISH_BUFFER = 4096,
    REPLAY_IDLE_MS = 1000,     /* no message for this long: ask the server if we are done */
    REPLAY_STALL_MS = 30000,   /* no progress and no answer for this long: give up */
    REPLAY_RETRY_MS = 250,
    REPLAY_RETRY_LIMIT_MS = 60000,
};

status_code events_ensure_stream(nats_connection *connection, int replicas, status *st) {
    jsCtx *js = nats_connection_jetstream(connection);
    jsStreamInfo *info = NULL;
    jsErrCode error = 0;
    natsStatus s;
    /* A JetStream cluster that has just formed may not answer within NATS_TIMEOUT yet. */
    for (int64_t until = timestamp_monotonic_ms() + NATS_PLACEMENT_WAIT_MS;; timestamp_sleep_ms(500)) {
        s = js_GetStreamInfo(&info, js, EVENTS_STREAM, NULL, &error);
        if (s != NATS_TIMEOUT || timestamp_monotonic_ms() >= until)
            break;
        LOG_WARN("looking up the event stream: NATS did not answer in time; trying again");
    }
    if (s == NATS_OK) {
        nats_warn_on_other_replicas(EVENTS_STREAM, info->Config->Replicas, replicas);
        jsStreamInfo_Destroy(info);
        return STATUS_OK;
    }
    if (s != NATS_NOT_FOUND)
        return nats_status_to_status(s, "looking up the event stream", st);
    jsStreamConfig config;
    jsStreamConfig_Init(&config);
    const char *subjects[] = {"library.events.>"};
    config.Name = EVENTS_STREAM;
    config.Subjects = subjects;
    config.SubjectsLen = 1;
    config.Retention = js_LimitsPolicy;
    config.Storage = js_FileStorage;
    config.Replicas = replicas > 0 ? replicas : 1;
    config.Duplicates = (int64_t)10 * 60 * 1000000000; /* 10 minutes of Nats-Msg-Id dedup */
    for (int64_t until = timestamp_monotonic_ms() + NATS_PLACEMENT_WAIT_MS;; timestamp_sleep_ms(1000)) {
        s = js_AddStream(&info, js, &config, NULL, &error);
        if (!nats_jetstream_placement_pending(s) || timestamp_monotonic_ms() >= until)
            break;
        LOG_WARN("creating the event stream: the JetStream cluster cannot place %lld replicas yet (still "
                 "forming, or a server restarting); trying again",
                 (long long)config.Replicas);
    }
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(info);
        return STATUS_OK;
    }
    status failure;
    nats_jetstream_create_status(s, "creating the event stream", config.Replicas, &failure);
    /* another replica may have created it at the same moment */
    if (js_GetStreamInfo(&info, js, EVENTS_STREAM, NULL, &error) == NATS_OK) {
        jsStreamInfo_Destroy(info);
        return STATUS_OK;
    }
    *st = failure;
    return failure.code;
}

static metric_series *published_series(const char *subject) {
    const char *const labels[] = {"subject", NULL};
    const char *const values[] = {subject, NULL};
    return metrics_series(metrics_counter("library_events_published_total",
                                          "Events published to the LIBRARY stream and acknowledged.",
                                          labels),
                          values);
}

status_code events_keep_for(nats_connection *connection, int64_t max_age_ms, status *st) {
    jsCtx *js = nats_connection_jetstream(connection);
    jsStreamInfo *info = NULL;
    jsErrCode error = 0;
    natsStatus s = js_GetStreamInfo(&info, js, EVENTS_STREAM, NULL, &error);
    if (s != NATS_OK)
        return nats_status_to_status(s, "looking up the event stream", st);
    int64_t max_age_ns = max_age_ms * 1000000;
    if (info->Config->MaxAge == max_age_ns) {
        jsStreamInfo_Destroy(info);
        return STATUS_OK;
    }
    LOG_INFO("the event stream keeps events for %lld s from now on (it kept them %lld s)",
             (long long)(max_age_ms / 1000), (long long)(info->Config->MaxAge / 1000000000));
    info->Config->MaxAge = max_age_ns; /* the rest of the configuration as the server has it */
    if (max_age_ns > 0 && info->Config->Duplicates > max_age_ns)
        info->Config->Duplicates = max_age_ns; /* the server refuses a window longer than MaxAge */
    jsStreamInfo *updated = NULL;
    s = js_UpdateStream(&updated, js, info->Config, NULL, &error);
    jsStreamInfo_Destroy(updated);
    jsStreamInfo_Destroy(info);
    return s == NATS_OK ? STATUS_OK : nats_status_to_status(s, "setting how long the event stream keeps events", st);
}

/* Every event type: where it is published and what its ids start with. */
static const struct {
    event_type type;
    const char *subject;
    const char *kind;
} event_table[] = {
    {LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED, "library.events.loan.requested", "loan-requested"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_COPY_RESERVED, "library.events.copy.reserved", "copy-reserved"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_OUT_OF_STOCK, "library.events.copy.out_of_stock", "out-of-stock"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_ACTIVATED, "library.events.loan.activated", "loan-activated"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_CANCELED, "library.events.loan.canceled", "loan-canceled"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RETURNED, "library.events.loan.returned", "loan-returned"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_COPY_RELEASED, "library.events.copy.released", "copy-released"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_OVERDUE, "library.events.loan.overdue", "loan-overdue"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RENEWED, "library.events.loan.renewed", "loan-renewed"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_PLACED, "library.events.loan.hold_placed", "hold-placed"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_FULFILLED, "library.events.loan.hold_fulfilled", "hold-fulfilled"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_CANCELED, "library.events.loan.hold_canceled", "hold-canceled"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED, "library.events.copy.hold_queued", "hold-queued"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY, "library.events.copy.hold_ready", "hold-ready"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_EXPIRED, "library.events.copy.hold_expired", "hold-expired"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED, "library.events.copy.hold_released", "hold-released"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED, "library.events.loan.fine_assessed", "fine-assessed"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_FINE_PAID, "library.events.loan.fine_paid", "fine-paid"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_FINE_WAIVED, "library.events.loan.fine_waived", "fine-waived"},
    {LIBRARY__EVENTS__V1__EVENT__BODY_EVENTS_RESTATED, EVENTS_RESTATED_SUBJECT, "events-restated"},
};

/* The table's row of type, or -1. */
static int row_of(event_type type) {
    for (size_t i = 0; i < sizeof event_table / sizeof *event_table; i++)
        if (event_table[i].type == type)
            return (int)i;
    return -1;
}

const char *events_subject(event_type type) {
    int row = row_of(type);
    return row < 0 ? NULL : event_table[row].subject;
}

const char *events_kind(event_type type) {
    int row = row_of(type);
    return row < 0 ? NULL : event_table[row].kind;
}

bool events_format_id(char *out, size_t size, event_type type, const char *subject_id, uint32_t attempt) {
    const char *kind = events_kind(type);
    if (kind == NULL)
        return false;
    int n = attempt == 0 ? snprintf(out, size, "%s-%s", kind, subject_id)
                         : snprintf(out, size, "%s-%s-r%u", kind, subject_id, attempt);
    return n >= 0 && (size_t)n < size;
}

uint32_t events_attempt_for_age(int64_t age_ms, int64_t after_ms) {
    if (after_ms <= 0)
        after_ms = 1;
    uint32_t attempt = 0;
    for (int64_t threshold = 2 * after_ms; age_ms >= threshold && threshold <= INT64_MAX / 2; threshold *= 2)
        attempt++;
    return attempt;
}

status_code events_publish_step(nats_connection *connection, event *e, const char *subject_id, uint32_t attempt,
                                const char *correlation_id, const char *traceparent, status *st) {
    char event_id[EVENT_ID_MAX];
    if (!events_format_id(event_id, sizeof event_id, e->body_case, subject_id, attempt))
        return status_set(st, STATUS_INTERNAL, "EVENT_ID_TOO_LONG", "the event id of %.64s is too long", subject_id);
    int64_t now_ms = timestamp_now_ms();
    Google__Protobuf__Timestamp now = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    now.seconds = now_ms / 1000;
    now.nanos = (int32_t)(now_ms % 1000) * 1000000;
    e->event_id = event_id;
    e->attempt = attempt;
    e->occur_time = &now;
    e->correlation_id = (char *)correlation_id;
    e->traceparent = (char *)(traceparent ? traceparent : "");
    status_code code = events_publish(connection, e, st);
    e->event_id = NULL; /* they pointed into this frame */
    e->occur_time = NULL;
    return code;
}

status_code events_publish(nats_connection *connection, const event *e, status *st) {
    const char *subject = events_subject(e->body_case);
    if (subject == NULL)
        return status_set(st, STATUS_INTERNAL, "UNKNOWN_EVENT_TYPE", "no subject for an event of type %d",
                          (int)e->body_case);
    if (!nats_connection_is_up(connection))
        return status_set(st, STATUS_UNAVAILABLE, "NATS_UNAVAILABLE",
                          "cannot publish %s: no connection to NATS", subject);
    size_t size = library__events__v1__event__get_packed_size(e);
    uint8_t stack_buffer[PUBLISH_BUFFER];
    uint8_t *bytes = size <= sizeof stack_buffer ? stack_buffer : malloc(size);
    if (bytes == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    library__events__v1__event__pack(e, bytes);
    natsMsg *message = NULL;
    natsStatus s = natsMsg_Create(&message, subject, NULL, (const char *)bytes, (int)size);
    if (s == NATS_OK && e->traceparent && e->traceparent[0])
        s = natsMsgHeader_Set(message, "traceparent", e->traceparent);
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MsgId = e->event_id;
    options.ExpectStream = EVENTS_STREAM;
    jsPubAck *ack = NULL;
    if (s == NATS_OK)
        s = js_PublishMsg(&ack, nats_connection_jetstream(connection), message, &options, NULL);
    jsPubAck_Destroy(ack);
    natsMsg_Destroy(message);
    if (bytes != stack_buffer)
        free(bytes);
    if (s != NATS_OK) {
        char what[160];
        snprintf(what, sizeof what, "publishing %s", subject);
        return nats_status_to_status(s, what, st);
    }
    metric_add(published_series(subject), 1);
    return STATUS_OK;
}

struct event_consumer {
    nats_connection *connection;
    event_consumer_options options;
    char durable[64];
    char filter[128];
    natsSubscription *subscription;
    pthread_t thread;
    atomic_bool stopping;
    metric_series *handled, *retried, *dropped, *pending;
    /* the batch being handled by the workers (workers > 1) */
    pthread_mutex_t lock;
    pthread_cond_t work, finished;
    natsMsg **batch;
    int batch_count, batch_next, batch_done;
    pthread_t *worker_threads;
    int worker_count;
};

static bool retryable(status_code code) {
    return code == STATUS_UNAVAILABLE || code == STATUS_ABORTED ||
           code == STATUS_DEADLINE_EXCEEDED || code == STATUS_RESOURCE_EXHAUSTED;
}

static void handle_message(event_consumer *consumer, natsMsg *message) {
    uint64_t sequence = 0;
    jsMsgMetaData *meta = NULL;
    if (natsMsg_GetMetaData(&meta, message) == NATS_OK) {
        sequence = meta->Sequence.Stream;
        jsMsgMetaData_Destroy(meta);
    }
    event *e = library__events__v1__event__unpack(NULL, (size_t)natsMsg_GetDataLength(message),
                                                  (const uint8_t *)natsMsg_GetData(message));
    if (e == NULL) {
        metric_add(consumer->dropped, 1);
        LOG_ERROR("%s: message %llu on %s is not an Event; dropping it", consumer->durable,
                  (unsigned long long)sequence, natsMsg_GetSubject(message));
        natsMsg_Term(message, NULL);
        return;
    }
    if (e->traceparent && strlen(e->traceparent) == 55) {
        char trace_id[33];
        memcpy(trace_id, e->traceparent + 3, 32);
        trace_id[32] = '\0';
        log_set_trace_id(trace_id);
    }
    status st;
    status_clear(&st);
    status_code code = consumer->options.handler(consumer->options.arg, e, sequence, &st);
    if (code == STATUS_OK) {
        LOG_DEBUG("%s: handled event %s (stream sequence %llu)", consumer->durable, e->event_id,
                  (unsigned long long)sequence);
        natsMsg_Ack(message, NULL);
        metric_add(consumer->handled, 1);
    } else if (retryable(code)) {
        LOG_WARN("%s: event %s will be retried: %s", consumer->durable, e->event_id, st.message);
        natsMsg_NakWithDelay(message, consumer->options.retry_delay_ms, NULL);
        metric_add(consumer->retried, 1);
    } else {
        LOG_ERROR("%s: event %s cannot be handled (%s): %s; terminating it", consumer->durable,
                  e->event_id, status_code_name(code), st.message);
        natsMsg_Term(message, NULL);
        metric_add(consumer->dropped, 1);
    }
    log_set_trace_id(NULL);
    library__events__v1__event__free_unpacked(e, NULL);
}

/* A worker takes the batch's messages one by one until it is used up. */
static void *worker_main(void *arg) {
    event_consumer *consumer = arg;
    pthread_mutex_lock(&consumer->lock);
    for (;;) {
        while (!atomic_load(&consumer->stopping) &&
               (consumer->batch == NULL || consumer->batch_next >= consumer->batch_count))
            pthread_cond_wait(&consumer->work, &consumer->lock);
        if (consumer->batch == NULL || consumer->batch_next >= consumer->batch_count)
            break; /* stopping, and nothing left to do */
        natsMsg *message = consumer->batch[consumer->batch_next++];
        pthread_mutex_unlock(&consumer->lock);
        handle_message(consumer, message);
        pthread_mutex_lock(&consumer->lock);
        if (++consumer->batch_done == consumer->batch_count)
            pthread_cond_signal(&consumer->finished);
    }
    pthread_mutex_unlock(&consumer->lock);
    return NULL;
}

/* Handles a fetched batch: in this thread, or spread over the workers (and waits for them,
 * so a batch is done before the next fetch and MaxAckPending bounds nothing else). */
static void handle_batch(event_consumer *consumer, natsMsgList *list) {
    if (consumer->worker_count == 0 || list->Count == 1) {
        for (int i = 0; i < list->Count; i++)
            handle_message(consumer, list->Msgs[i]);
        return;
    }
    pthread_mutex_lock(&consumer->lock);
    consumer->batch = list->Msgs;
    consumer->batch_count = list->Count;
    consumer->batch_next = 0;
    consumer->batch_done = 0;
    pthread_cond_broadcast(&consumer->work);
    while (consumer->batch_done < consumer->batch_count)
        pthread_cond_wait(&consumer->finished, &consumer->lock);
    consumer->batch = NULL;
    pthread_mutex_unlock(&consumer->lock);
}

static status_code consumer_declare(nats_connection *connection, event_consumer *consumer, status *st);
static status_code consumer_bind(event_consumer *consumer, natsSubscription **out, status *st);

/* A durable consumer can vanish under a running service (an operator deletes it, the stream
 * is made anew); its pull requests then fail once and time out ever after. So a consumer that
 * got nothing, or an error, checks now and then that it still exists, and when it does not,
 * declares it again and binds a fresh subscription. The old one is retired, not
 * unsubscribed: that would delete the new durable of the same name. */
static void consumer_check(event_consumer *consumer) {
    if (!nats_connection_is_up(consumer->connection))
        return; /* NATS is away: the connection comes back by itself */
    jsConsumerInfo *info = NULL;
    jsErrCode error = 0;
    natsStatus s = js_GetConsumerInfo(&info, nats_connection_jetstream(consumer->connection), EVENTS_STREAM,
                                      consumer->durable, NULL, &error);
    jsConsumerInfo_Destroy(info);
    if (s != NATS_NOT_FOUND && error != JSConsumerNotFoundErr)
        return;
    LOG_WARN("%s: the durable consumer is gone; declaring it again", consumer->durable);
    status st;
    natsSubscription *fresh = NULL;
    if (consumer_declare(consumer->connection, consumer, &st) != STATUS_OK ||
        consumer_bind(consumer, &fresh, &st) != STATUS_OK) {
        LOG_WARN("%s: %s", consumer->durable, st.message);
        return;
    }
    nats_connection_retire_subscription(consumer->connection, consumer->subscription);
    consumer->subscription = fresh;
}

/* The consumer's lag: events of the stream it has not acknowledged yet, not delivered or
 * delivered and still being handled or retried. A message's own metadata counts only the
 * undelivered ones, which stay 0 for a consumer that is given every event at once but cannot
 * handle any (its store down), so the server's view of the consumer is read instead. */
static void lag_read(event_consumer *consumer) {
    if (!nats_connection_is_up(consumer->connection))
        return;
    jsConsumerInfo *info = NULL;
    jsErrCode error = 0;
    if (js_GetConsumerInfo(&info, nats_connection_jetstream(consumer->connection), EVENTS_STREAM,
                           consumer->durable, NULL, &error) == NATS_OK)
        metric_set(consumer->pending, (double)info->NumPending + (double)info->NumAckPending);
    jsConsumerInfo_Destroy(info);
}

static void *consume_main(void *arg) {
    event_consumer *consumer = arg;
    int64_t checked = timestamp_monotonic_ms(), lag_read_at = 0;
    while (!atomic_load(&consumer->stopping)) {
        if (timestamp_monotonic_ms() - lag_read_at >= LAG_READ_MS) {
            lag_read_at = timestamp_monotonic_ms();
            lag_read(consumer);
        }
        natsMsgList list = {0};
        natsStatus s = natsSubscription_Fetch(&list, consumer->subscription, FETCH_BATCH,
                                              FETCH_WAIT_MS, NULL);
        if (s != NATS_OK) {
            if (atomic_load(&consumer->stopping))
                continue;
            bool failed = s != NATS_TIMEOUT;
            if (failed) {
                LOG_DEBUG("%s: fetch failed: %s", consumer->durable, natsStatus_GetText(s));
                timestamp_sleep_ms(200);
            }
            int64_t now = timestamp_monotonic_ms();
            if (now - checked >= (failed ? 1000 : CONSUMER_CHECK_MS)) {
                checked = now;
                consumer_check(consumer);
            }
            continue;
        }
        handle_batch(consumer, &list);
        natsMsgList_Destroy(&list);
    }
    return NULL;
}

static void consumer_free(event_consumer *consumer);

/* With restart_on_new_filter: deletes the durable when it exists with another filter. */
static status_code consumer_refilter(nats_connection *connection, event_consumer *consumer, status *st) {
    jsCtx *js = nats_connection_jetstream(connection);
    jsConsumerInfo *info = NULL;
    jsErrCode error = 0;
    natsStatus s = js_GetConsumerInfo(&info, js, EVENTS_STREAM, consumer->durable, NULL, &error);
    if (s == NATS_NOT_FOUND || error == JSConsumerNotFoundErr)
        return STATUS_OK;
    if (s != NATS_OK)
        return nats_status_to_status(s, "looking up a durable consumer", st);
    const char *filter = info->Config && info->Config->FilterSubject ? info->Config->FilterSubject : "";
    bool other = strcmp(filter, consumer->filter) != 0;
    if (other)
        LOG_WARN("%s: the durable consumer filters %s, not %s: making it anew from the start of the stream "
                 "(it had reached stream sequence %llu; the handler is idempotent)",
                 consumer->durable, filter[0] ? filter : "nothing", consumer->filter,
                 (unsigned long long)info->Delivered.Stream);
    jsConsumerInfo_Destroy(info);
    if (!other)
        return STATUS_OK;
    s = js_DeleteConsumer(js, EVENTS_STREAM, consumer->durable, NULL, &error);
    if (s == NATS_NOT_FOUND || error == JSConsumerNotFoundErr) /* another replica did it first */
        return STATUS_OK;
    return nats_status_to_status(s, "deleting a durable consumer with an old filter", st);
}

/* Creates the durable consumer, or brings an existing one to these settings. */
static status_code consumer_declare(nats_connection *connection, event_consumer *consumer, status *st) {
    if (consumer->options.restart_on_new_filter && consumer_refilter(connection, consumer, st) != STATUS_OK)
        return st->code;
    jsConsumerConfig config;
    jsConsumerConfig_Init(&config);
    config.Durable = consumer->durable;
    config.FilterSubject = consumer->filter;
    config.AckPolicy = js_AckExplicit;
    config.DeliverPolicy = js_DeliverAll;
    config.AckWait = consumer->options.ack_wait_ms * 1000000;
    config.MaxAckPending = 1024;
    jsCtx *js = nats_connection_jetstream(connection);
    jsConsumerInfo *info = NULL;
    jsErrCode error = 0;
    natsStatus s = js_UpdateConsumer(&info, js, EVENTS_STREAM, &config, NULL, &error);
    if (s != NATS_OK) /* not there yet (or an update the server refuses): create it */
        s = js_AddConsumer(&info, js, EVENTS_STREAM, &config, NULL, &error);
    jsConsumerInfo_Destroy(info);
    return nats_status_to_status(s, "declaring a durable consumer", st);
}

/* Binds to the consumer consumer_declare made rather than let the subscribe create one: a
 * durable that exists with other settings (a changed EVENT_ACK_WAIT) is then updated, not
 * refused. */
static status_code consumer_bind(event_consumer *consumer, natsSubscription **out, status *st) {
    jsSubOptions sub_options;
    jsSubOptions_Init(&sub_options);
    sub_options.Stream = EVENTS_STREAM;
    sub_options.Consumer = consumer->durable;
    jsErrCode error = 0;
    natsStatus s = js_PullSubscribe(out, nats_connection_jetstream(consumer->connection), consumer->filter,
                                    consumer->durable, NULL, &sub_options, &error);
    return s == NATS_OK ? STATUS_OK : nats_status_to_status(s, "subscribing to a durable consumer", st);
}

status_code event_consumer_start(nats_connection *connection, const event_consumer_options *options,
                                 event_consumer **out, status *st) {
    event_consumer *consumer = calloc(1, sizeof *consumer);
    if (consumer == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    consumer->connection = connection;
    consumer->options = *options;
    if (consumer->options.ack_wait_ms <= 0)
        consumer->options.ack_wait_ms = 30000;
    if (consumer->options.retry_delay_ms <= 0)
        consumer->options.retry_delay_ms = 500;
    snprintf(consumer->durable, sizeof consumer->durable, "%s", options->durable);
    snprintf(consumer->filter, sizeof consumer->filter, "%s", options->filter_subject);
    atomic_init(&consumer->stopping, false);
    const char *const labels[] = {"consumer", "result", NULL};
    metric_family *consumed = metrics_counter(
        "library_events_consumed_total",
        "Events a durable consumer took: handled (acked), retried (redelivered later) or dropped.",
        labels);
    consumer->handled = metrics_series(consumed, (const char *[]){consumer->durable, "handled", NULL});
    consumer->retried = metrics_series(consumed, (const char *[]){consumer->durable, "retried", NULL});
    consumer->dropped = metrics_series(consumed, (const char *[]){consumer->durable, "dropped", NULL});
    consumer->pending = metrics_series(
        metrics_gauge("library_event_consumer_pending",
                      "Events in the stream the consumer has not acknowledged yet (its lag): not "
                      "delivered, or delivered and still being handled or retried.",
                      (const char *[]){"consumer", NULL}),
        (const char *[]){consumer->durable, NULL});

    status_code code = consumer_declare(connection, consumer, st);
    if (code != STATUS_OK) {
        free(consumer);
        return code;
    }
    code = consumer_bind(consumer, &consumer->subscription, st);
    if (code != STATUS_OK) {
        free(consumer);
        return code;
    }
    pthread_mutex_init(&consumer->lock, NULL);
    pthread_cond_init(&consumer->work, NULL);
    pthread_cond_init(&consumer->finished, NULL);
    int workers = options->workers > 1 ? options->workers : 0;
    consumer->worker_threads = workers ? calloc((size_t)workers, sizeof *consumer->worker_threads) : NULL;
    for (int i = 0; i < workers && consumer->worker_threads; i++) {
        if (pthread_create(&consumer->worker_threads[i], NULL, worker_main, consumer) != 0)
            break;
        consumer->worker_count++;
    }
    if (pthread_create(&consumer->thread, NULL, consume_main, consumer) != 0) {
        consumer_free(consumer);
        return status_set(st, STATUS_INTERNAL, "THREAD", "cannot start a consumer thread");
    }
    *out = consumer;
    return STATUS_OK;
}

/* Stops the workers and frees everything but the fetch thread (joined before, or never
 * started). */
static void consumer_free(event_consumer *consumer) {
    pthread_mutex_lock(&consumer->lock);
    atomic_store(&consumer->stopping, true);
    pthread_cond_broadcast(&consumer->work);
    pthread_mutex_unlock(&consumer->lock);
    for (int i = 0; i < consumer->worker_count; i++)
        pthread_join(consumer->worker_threads[i], NULL);
    free(consumer->worker_threads);
    pthread_mutex_destroy(&consumer->lock);
    pthread_cond_destroy(&consumer->work);
    pthread_cond_destroy(&consumer->finished);
    /* Not unsubscribed: that would delete the durable consumer. */
    nats_connection_retire_subscription(consumer->connection, consumer->subscription);
    free(consumer);
}

void event_consumer_stop(event_consumer *consumer) {
    if (consumer == NULL)
        return;
    atomic_store(&consumer->stopping, true);
    pthread_join(consumer->thread, NULL); /* it finishes its batch first */
    consumer_free(consumer);
}


/* Hands one replayed message to the handler, retrying what may succeed later. */
static status_code replay_one(natsMsg *message, uint64_t sequence, event_handler handler,
                              void *arg, status *st) {
    event *e = library__events__v1__event__unpack(NULL, (size_t)natsMsg_GetDataLength(message),
                                                  (const uint8_t *)natsMsg_GetData(message));
    if (e == NULL) {
        LOG_ERROR("replay: message %llu on %s is not an Event; skipping it",
                  (unsigned long long)sequence, natsMsg_GetSubject(message));
        return STATUS_OK;
    }
    status_code code = STATUS_OK;
    for (int64_t waited = 0;; waited += REPLAY_RETRY_MS) {
        status_clear(st);
        code = handler(arg, e, sequence, st);
        if (code == STATUS_OK || !retryable(code) || waited >= REPLAY_RETRY_LIMIT_MS)
            break;
        if (waited == 0)
            LOG_WARN("replay: event %s will be retried: %s", e->event_id, st->message);
        timestamp_sleep_ms(REPLAY_RETRY_MS);
    }
    library__events__v1__event__free_unpacked(e, NULL);
    return code;
}

/* true when the ordered consumer has nothing more to deliver. */
static bool replay_caught_up(natsSubscription *subscription, bool *known) {
    jsConsumerInfo *info = NULL;
    jsErrCode error = 0;
    *known = natsSubscription_GetConsumerInfo(&info, subscription, NULL, &error) == NATS_OK;
    bool done = *known && info->NumPending == 0;
    jsConsumerInfo_Destroy(info);
    return done;
}

status_code events_replay(nats_connection *connection, const char *filter_subject,
                          event_handler handler, void *arg, uint64_t *count, status *st) {
    jsSubOptions options;
    jsSubOptions_Init(&options);
    options.Stream = EVENTS_STREAM;
    options.Ordered = true;
    options.Config.DeliverPolicy = js_DeliverAll;
    natsSubscription *subscription = NULL;
    jsErrCode error = 0;
    natsStatus s = js_SubscribeSync(&subscription, nats_connection_jetstream(connection),
                                    filter_subject, NULL, &options, &error);
    if (s != NATS_OK)
        return nats_status_to_status(s, "starting a replay of the event stream", st);
    uint64_t handled = 0;
    int64_t idle_ms = 0;
    status_code code = STATUS_OK;
    for (;;) {
        natsMsg *message = NULL;
        s = natsSubscription_NextMsg(&message, subscription, REPLAY_IDLE_MS);
        if (s == NATS_TIMEOUT) {
            bool known = false;
            if (replay_caught_up(subscription, &known))
                break;
            idle_ms = known ? 0 : idle_ms + REPLAY_IDLE_MS;
            if (idle_ms >= REPLAY_STALL_MS) {
                code = status_set(st, STATUS_UNAVAILABLE, "NATS_UNAVAILABLE",
                                  "the replay stalled: NATS did not answer for %d s",
                                  REPLAY_STALL_MS / 1000);
                break;
            }
            continue;
        }
        if (s != NATS_OK) {
            code = nats_status_to_status(s, "replaying the event stream", st);
            break;
        }
        idle_ms = 0;
        jsMsgMetaData *meta = NULL;
        uint64_t sequence = 0, pending = 1;
        if (natsMsg_GetMetaData(&meta, message) == NATS_OK) {
            sequence = meta->Sequence.Stream;
            pending = meta->NumPending;
            jsMsgMetaData_Destroy(meta);
        }
        code = replay_one(message, sequence, handler, arg, st);
        natsMsg_Destroy(message);
        if (code != STATUS_OK)
            break;
        handled++;
        if (pending == 0) /* the last message the stream held when this one was sent */
            break;
    }
    /* Unsubscribe deletes the ephemeral ordered consumer on the server. */
    natsSubscription_Unsubscribe(subscription);
    nats_connection_retire_subscription(connection, subscription);
    if (count)
        *count = handled;
    return code;
}
