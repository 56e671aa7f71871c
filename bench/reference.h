/* reference.h - the physical limits the services are compared with, measured with the same
 * shape (connections x concurrent operations each) and the same window as the workloads:
 *   R3  JetStream synchronous publish + ack (NATS.c js_Publish), one thread per operation
 *       in flight, `streams` threads sharing each connection;
 *   R4  Redis GET (hiredis), each connection keeping `streams` GETs in flight (pipelined). */
#ifndef BENCH_REFERENCE_H
#define BENCH_REFERENCE_H

#include "result.h"

typedef struct reference_options {
    int connections;
    int streams;
    double warmup_seconds;
    double seconds;
} reference_options;

/* nats_url: "nats://127.0.0.1:port". Creates (or reuses) stream BENCH_R3 on bench.r3. */
int reference_jetstream_publish(const char *nats_url, const reference_options *options,
                                bench_result *result);
/* host, port of redis-server. Sets key bench:r4 first. */
int reference_redis_get(const char *host, int port, const reference_options *options,
                        bench_result *result);

#endif
