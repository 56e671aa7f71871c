/* reference.c - R3 (JetStream publish + ack) and R4 (Redis GET), timed like the load client
 * times a call: from send to answer, counted when the answer lands in the window. */
#include "reference.h"

#include <hiredis.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "load.h"

enum { PAYLOAD_BYTES = 128 };

typedef struct window {
    int64_t measure_start_ns;
    int64_t end_ns;
} window;

static window window_make(const reference_options *o) {
    window w;
    w.measure_start_ns = load_now_ns() + (int64_t)(o->warmup_seconds * 1e9);
    w.end_ns = w.measure_start_ns + (int64_t)(o->seconds * 1e9);
    return w;
}

static void count(bench_result *r, const window *w, int64_t sent, int64_t now, bool ok) {
    if (!ok)
        r->errors++;
    if (now >= w->measure_start_ns && now <= w->end_ns) {
        r->operations++;
        r->calls++;
        histogram_record(&r->latency, (uint64_t)(now - sent) / 1000);
    }
}

static void merge(bench_result *into, const bench_result *from) {
    into->operations += from->operations;
    into->calls += from->calls;
    into->errors += from->errors;
    for (int i = 0; i < RESULT_CODES; i++)
        into->errors_by_code[i] += from->errors_by_code[i];
    if (into->first_error[0] == '\0')
        memcpy(into->first_error, from->first_error, sizeof into->first_error);
    histogram_merge(&into->latency, &from->latency);
}

static void result_begin(bench_result *r, const char *name, const reference_options *o) {
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->connections = o->connections;
    r->streams = o->streams;
    r->seconds = o->seconds;
}

/* --- R3: JetStream ------------------------------------------------------------------- */

typedef struct publisher {
    pthread_t thread;
    natsConnection *connection;
    const window *w;
    bench_result counts;
} publisher;

static void *publisher_main(void *arg) {
    publisher *p = arg;
    jsCtx *js = NULL;
    if (natsConnection_JetStream(&js, p->connection, NULL) != NATS_OK) {
        p->counts.errors++;
        snprintf(p->counts.first_error, sizeof p->counts.first_error, "no JetStream context");
        return NULL;
    }
    char payload[PAYLOAD_BYTES];
    memset(payload, 'x', sizeof payload);
    while (load_now_ns() < p->w->end_ns) {
        int64_t sent = load_now_ns();
        jsPubAck *ack = NULL;
        jsErrCode error = 0;
        natsStatus s = js_Publish(&ack, js, "bench.r3", payload, sizeof payload, NULL, &error);
        jsPubAck_Destroy(ack);
        if (s != NATS_OK && p->counts.first_error[0] == '\0')
            snprintf(p->counts.first_error, sizeof p->counts.first_error, "js_Publish: %s (%d)",
                     natsStatus_GetText(s), (int)error);
        if (s != NATS_OK)
            p->counts.errors_by_code[14]++; /* as UNAVAILABLE */
        count(&p->counts, p->w, sent, load_now_ns(), s == NATS_OK);
    }
    jsCtx_Destroy(js);
    return NULL;
}

int reference_jetstream_publish(const char *nats_url, const reference_options *o,
                                bench_result *result) {
    result_begin(result, "R3 JetStream publish", o);
    natsConnection **connections = calloc((size_t)o->connections, sizeof *connections);
    publisher *publishers = calloc((size_t)(o->connections * o->streams), sizeof *publishers);
    int status = -1;
    if (connections == NULL || publishers == NULL)
        goto done;
    for (int c = 0; c < o->connections; c++) {
        if (natsConnection_ConnectTo(&connections[c], nats_url) != NATS_OK) {
            snprintf(result->first_error, sizeof result->first_error, "cannot connect to %s",
                     nats_url);
            goto done;
        }
    }
    jsCtx *js = NULL;
    if (natsConnection_JetStream(&js, connections[0], NULL) == NATS_OK) {
        jsStreamConfig config;
        jsStreamConfig_Init(&config);
        const char *subjects[] = {"bench.r3"};
        config.Name = "BENCH_R3";
        config.Subjects = subjects;
        config.SubjectsLen = 1;
        config.Storage = js_FileStorage;
        config.MaxMsgs = 100000;
        jsStreamInfo *info = NULL;
        jsErrCode error = 0;
        js_AddStream(&info, js, &config, NULL, &error); /* fails harmlessly if it exists */
        jsStreamInfo_Destroy(info);
        jsCtx_Destroy(js);
    }
    window w = window_make(o);
    int total = o->connections * o->streams;
    for (int i = 0; i < total; i++) {
        publishers[i].connection = connections[i % o->connections];
        publishers[i].w = &w;
        pthread_create(&publishers[i].thread, NULL, publisher_main, &publishers[i]);
    }
    for (int i = 0; i < total; i++) {
        pthread_join(publishers[i].thread, NULL);
        merge(result, &publishers[i].counts);
    }
    status = 0;
done:
    for (int c = 0; connections && c < o->connections; c++)
        natsConnection_Destroy(connections[c]);
    free(connections);
    free(publishers);
    return status;
}

/* --- R4: Redis ----------------------------------------------------------------------- */

typedef struct getter {
    pthread_t thread;
    const char *host;
    int port;
    int depth;
    const window *w;
    bench_result counts;
} getter;

static void *getter_main(void *arg) {
    getter *g = arg;
    struct timeval timeout = {.tv_sec = 5};
    redisContext *redis = redisConnectWithTimeout(g->host, g->port, timeout);
    int64_t *sent = calloc((size_t)g->depth, sizeof *sent);
    if (redis == NULL || redis->err || sent == NULL) {
        g->counts.errors++;
        snprintf(g->counts.first_error, sizeof g->counts.first_error, "cannot connect to redis: %s",
                 redis ? redis->errstr : "out of memory");
        redisFree(redis);
        free(sent);
        return NULL;
    }
    /* `depth` GETs in flight: a ring of send times, oldest answered first. */
    int head = 0, in_flight = 0;
    for (; in_flight < g->depth; in_flight++) {
        sent[(head + in_flight) % g->depth] = load_now_ns();
        redisAppendCommand(redis, "GET bench:r4");
    }
    while (in_flight > 0) {
        redisReply *reply = NULL;
        if (redisGetReply(redis, (void **)&reply) != REDIS_OK) {
            g->counts.errors++;
            snprintf(g->counts.first_error, sizeof g->counts.first_error, "redis: %s", redis->errstr);
            break;
        }
        int64_t now = load_now_ns();
        bool ok = reply->type == REDIS_REPLY_STRING && reply->len == PAYLOAD_BYTES;
        freeReplyObject(reply);
        if (!ok) {
            g->counts.bad_replies++;
            if (g->counts.first_error[0] == '\0')
                snprintf(g->counts.first_error, sizeof g->counts.first_error, "GET: unexpected reply");
        }
        count(&g->counts, g->w, sent[head], now, ok);
        head = (head + 1) % g->depth;
        in_flight--;
        if (now < g->w->end_ns) {
            sent[(head + in_flight) % g->depth] = now;
            redisAppendCommand(redis, "GET bench:r4");
            in_flight++;
        }
    }
    redisFree(redis);
    free(sent);
    return NULL;
}

int reference_redis_get(const char *host, int port, const reference_options *o,
                        bench_result *result) {
    result_begin(result, "R4 Redis GET", o);
    struct timeval timeout = {.tv_sec = 5};
    redisContext *redis = redisConnectWithTimeout(host, port, timeout);
    if (redis == NULL || redis->err) {
        snprintf(result->first_error, sizeof result->first_error, "cannot connect to %s:%d", host,
                 port);
        redisFree(redis);
        return -1;
    }
    char payload[PAYLOAD_BYTES + 1];
    memset(payload, 'x', PAYLOAD_BYTES);
    payload[PAYLOAD_BYTES] = '\0';
    freeReplyObject(redisCommand(redis, "SET bench:r4 %s", payload));
    redisFree(redis);

    getter *getters = calloc((size_t)o->connections, sizeof *getters);
    if (getters == NULL)
        return -1;
    window w = window_make(o);
    for (int i = 0; i < o->connections; i++) {
        getters[i] = (getter){.host = host, .port = port, .depth = o->streams, .w = &w};
        pthread_create(&getters[i].thread, NULL, getter_main, &getters[i]);
    }
    for (int i = 0; i < o->connections; i++) {
        pthread_join(getters[i].thread, NULL);
        merge(result, &getters[i].counts);
        result->bad_replies += getters[i].counts.bad_replies;
    }
    free(getters);
    return 0;
}
