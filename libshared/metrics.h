/* metrics.h - Prometheus metrics: counters, gauges and histograms with labels, rendered in
 * the text exposition format (version 0.0.4) and served on /metrics over HTTP.
 *
 * Families live in one registry per process, like the default registry of the Prometheus
 * client libraries: registering the same name twice returns the same family, so modules
 * declare what they need where they need it. A series (one set of label values) is looked
 * up once and then updated without locks:
 *
 *   static metric_family *published;
 *   published = metrics_counter("library_events_published_total", "Events published.",
 *                               (const char *[]){"subject", NULL});
 *   metric_series *s = metrics_series(published, (const char *[]){"library.events.x", NULL});
 *   metric_add(s, 1);
 *
 * Series are never freed: label values must come from a small, fixed set (method names,
 * status codes), never from user input. */
#ifndef LIBSHARED_METRICS_H
#define LIBSHARED_METRICS_H

#include <stddef.h>

#include "status.h"

typedef struct metric_family metric_family;
typedef struct metric_series metric_series;
typedef struct metrics_server metrics_server;

/* label_names: NULL-terminated, may be NULL for none. NULL when out of memory, or when the
 * name is registered already as another type or with other labels (a programming error,
 * logged). */
metric_family *metrics_counter(const char *name, const char *help, const char *const *label_names);
metric_family *metrics_gauge(const char *name, const char *help, const char *const *label_names);
/* bucket upper bounds, increasing; +Inf is implied. */
metric_family *metrics_histogram(const char *name, const char *help, const char *const *label_names,
                                 const double *buckets, size_t bucket_count);

/* The series for these label values (NULL-terminated, as many as the family's names),
 * created on first use. NULL family or out of memory gives NULL, which every update below
 * accepts and ignores. */
metric_series *metrics_series(metric_family *family, const char *const *label_values);

void metric_add(metric_series *series, double value);     /* counters (value >= 0) and gauges */
void metric_set(metric_series *series, double value);     /* gauges */
void metric_observe(metric_series *series, double value); /* histograms */

/* Buckets for durations in seconds, from 0.5 ms to 10 s. */
extern const double metrics_duration_buckets[];
extern const size_t metrics_duration_bucket_count;

/* The whole registry in the text format; malloc'd, the caller frees it. */
char *metrics_render(size_t *size);

/* Serves GET /metrics on 0.0.0.0:port (port 0: any free one, see metrics_server_port). */
status_code metrics_server_start(int port, metrics_server **out, status *st);
int metrics_server_port(const metrics_server *server);
void metrics_server_stop(metrics_server *server); /* NULL is a no-op */

#endif
