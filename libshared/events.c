/* events.c - JetStream publishing and pull consumers over NATS.c. */
#include "events.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

enum { FETCH_BATCH = 64, FETCH_WAIT_MS = 500, PUBLISH_BUFFER = 4096 };

status_code events_ensure_stream(nats_connection *connection, int replicas, status *st) {
    jsCtx *js = nats_connection_jetstream(connection);
    jsStreamInfo *info = NULL;
    jsErrCode error = 0;
    natsStatus s = js_GetStreamInfo(&info, js, EVENTS_STREAM, NULL, &error);
    if (s == NATS_OK) {
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
    s = js_AddStream(&info, js, &config, NULL, &error);
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(info);
        return STATUS_OK;
    }
    /* another replica may have created it at the same moment */
    if (js_GetStreamInfo(&info, js, EVENTS_STREAM, NULL, &error) == NATS_OK) {
        jsStreamInfo_Destroy(info);
        return STATUS_OK;
    }
    return nats_status_to_status(s, "creating the event stream", st);
}

status_code events_publish(nats_connection *connection, const char *subject, const event *e,
                           status *st) {
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
        natsMsg_Ack(message, NULL);
    } else if (retryable(code)) {
        LOG_WARN("%s: event %s will be retried: %s", consumer->durable, e->event_id, st.message);
        natsMsg_NakWithDelay(message, consumer->options.retry_delay_ms, NULL);
    } else {
        LOG_ERROR("%s: event %s cannot be handled (%s): %s; terminating it", consumer->durable,
                  e->event_id, status_code_name(code), st.message);
        natsMsg_Term(message, NULL);
    }
    log_set_trace_id(NULL);
    library__events__v1__event__free_unpacked(e, NULL);
}

static void *consume_main(void *arg) {
    event_consumer *consumer = arg;
    while (!atomic_load(&consumer->stopping)) {
        natsMsgList list = {0};
        natsStatus s = natsSubscription_Fetch(&list, consumer->subscription, FETCH_BATCH,
                                              FETCH_WAIT_MS, NULL);
        if (s == NATS_TIMEOUT)
            continue;
        if (s != NATS_OK) {
            if (!atomic_load(&consumer->stopping)) {
                LOG_DEBUG("%s: fetch failed: %s", consumer->durable, natsStatus_GetText(s));
                struct timespec pause = {.tv_sec = 0, .tv_nsec = 200000000};
                nanosleep(&pause, NULL);
            }
            continue;
        }
        for (int i = 0; i < list.Count; i++)
            handle_message(consumer, list.Msgs[i]);
        natsMsgList_Destroy(&list);
    }
    return NULL;
}

/* Creates the durable consumer, or brings an existing one to these settings. */
static status_code consumer_declare(nats_connection *connection, event_consumer *consumer, status *st) {
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

    status_code code = consumer_declare(connection, consumer, st);
    if (code != STATUS_OK) {
        free(consumer);
        return code;
    }
    /* Bind to the consumer declared above rather than let the subscribe create one: a
     * durable that exists with other settings (a changed EVENT_ACK_WAIT) is then updated,
     * not refused. */
    jsSubOptions sub_options;
    jsSubOptions_Init(&sub_options);
    sub_options.Stream = EVENTS_STREAM;
    sub_options.Consumer = consumer->durable;
    jsErrCode error = 0;
    natsStatus s = js_PullSubscribe(&consumer->subscription, nats_connection_jetstream(connection),
                                    consumer->filter, consumer->durable, NULL, &sub_options, &error);
    if (s != NATS_OK) {
        free(consumer);
        return nats_status_to_status(s, "subscribing to a durable consumer", st);
    }
    if (pthread_create(&consumer->thread, NULL, consume_main, consumer) != 0) {
        natsSubscription_Destroy(consumer->subscription);
        free(consumer);
        return status_set(st, STATUS_INTERNAL, "THREAD", "cannot start a consumer thread");
    }
    *out = consumer;
    return STATUS_OK;
}

void event_consumer_stop(event_consumer *consumer) {
    if (consumer == NULL)
        return;
    atomic_store(&consumer->stopping, true);
    pthread_join(consumer->thread, NULL);
    /* Destroy, not Unsubscribe: unsubscribing would delete the durable consumer. */
    natsSubscription_Destroy(consumer->subscription);
    free(consumer);
}
