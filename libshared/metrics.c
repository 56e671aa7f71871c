/* metrics.c - the process's metric registry, the text format, and the /metrics endpoint. */
#include "metrics.h"

#include <math.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

enum { MAX_LABELS = 8 };

typedef enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM } metric_type;

static const char *const type_names[] = {"counter", "gauge", "histogram"};

struct metric_series {
    metric_series *next;
    const struct metric_family *family;
    char **label_values;
    char *labels;          /* rendered: `a="x",b="y"` (escaped), "" without labels */
    _Atomic uint64_t bits; /* the value of a counter or gauge, as the bits of a double */
    _Atomic uint64_t sum_bits;
    _Atomic uint64_t *bucket_counts; /* per bucket (not cumulative), then +Inf */
};

struct metric_family {
    metric_family *next;
    char *name;
    char *help;
    metric_type type;
    char *label_names[MAX_LABELS];
    size_t label_count;
    double *buckets;
    size_t bucket_count;
    metric_series *series, *last_series;
};

const double metrics_duration_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                           0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const size_t metrics_duration_bucket_count =
    sizeof metrics_duration_buckets / sizeof metrics_duration_buckets[0];

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static metric_family *families, *last_family;

/* --- atomic doubles ----------------------------------------------------------------- */

static uint64_t double_bits(double value) {
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

static double bits_double(uint64_t bits) {
    double value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static void atomic_double_add(_Atomic uint64_t *target, double value) {
    uint64_t old = atomic_load_explicit(target, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(target, &old, double_bits(bits_double(old) + value),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* --- registration --------------------------------------------------------------------- */

static bool same_labels(const metric_family *f, const char *const *names) {
    size_t n = 0;
    for (; names && names[n]; n++)
        if (n >= f->label_count || strcmp(f->label_names[n], names[n]) != 0)
            return false;
    return n == f->label_count;
}

static void family_free(metric_family *f) {
    free(f->name);
    free(f->help);
    for (size_t i = 0; i < f->label_count; i++)
        free(f->label_names[i]);
    free(f->buckets);
    free(f);
}

static metric_family *family_register(const char *name, const char *help, metric_type type,
                                      const char *const *label_names, const double *buckets,
                                      size_t bucket_count) {
    pthread_mutex_lock(&registry_lock);
    for (metric_family *f = families; f != NULL; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            bool same = f->type == type && same_labels(f, label_names);
            pthread_mutex_unlock(&registry_lock);
            if (!same)
                LOG_ERROR("metric %s is registered twice with different types or labels", name);
            return same ? f : NULL;
        }
    }
    metric_family *f = calloc(1, sizeof *f);
    bool ok = f != NULL;
    if (ok) {
        f->type = type;
        f->name = strdup(name);
        f->help = strdup(help);
        ok = f->name && f->help;
        for (size_t i = 0; ok && label_names && label_names[i]; i++) {
            ok = i < MAX_LABELS && (f->label_names[i] = strdup(label_names[i])) != NULL;
            f->label_count += ok;
        }
        if (ok && type == METRIC_HISTOGRAM) {
            f->bucket_count = bucket_count;
            f->buckets = malloc((bucket_count + 1) * sizeof *f->buckets);
            ok = f->buckets != NULL;
            if (ok)
                memcpy(f->buckets, buckets, bucket_count * sizeof *buckets);
        }
    }
    if (!ok) {
        pthread_mutex_unlock(&registry_lock);
        if (f)
            family_free(f);
        return NULL;
    }
    if (last_family)
        last_family->next = f;
    else
        families = f;
    last_family = f;
    pthread_mutex_unlock(&registry_lock);
    return f;
}

metric_family *metrics_counter(const char *name, const char *help, const char *const *label_names) {
    return family_register(name, help, METRIC_COUNTER, label_names, NULL, 0);
}

metric_family *metrics_gauge(const char *name, const char *help, const char *const *label_names) {
    return family_register(name, help, METRIC_GAUGE, label_names, NULL, 0);
}

metric_family *metrics_histogram(const char *name, const char *help, const char *const *label_names,
                                 const double *buckets, size_t bucket_count) {
    return family_register(name, help, METRIC_HISTOGRAM, label_names, buckets, bucket_count);
}

/* --- series ---------------------------------------------------------------------------- */

/* A growing text buffer; on allocation failure it stays failed and the result is NULL. */
typedef struct text_buffer {
    char *data;
    size_t length, capacity;
    bool failed;
} text_buffer;

static void buffer_append(text_buffer *b, const char *text, size_t length) {
    if (b->failed)
        return;
    if (b->length + length + 1 > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 256;
        while (b->length + length + 1 > capacity)
            capacity *= 2;
        char *data = realloc(b->data, capacity);
        if (data == NULL) {
            b->failed = true;
            return;
        }
        b->data = data;
        b->capacity = capacity;
    }
    memcpy(b->data + b->length, text, length);
    b->length += length;
    b->data[b->length] = '\0';
}

static void buffer_puts(text_buffer *b, const char *text) {
    buffer_append(b, text, strlen(text));
}

static void buffer_printf(text_buffer *b, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void buffer_printf(text_buffer *b, const char *format, ...) {
    char line[512];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(line, sizeof line, format, args);
    va_end(args);
    if (n > 0)
        buffer_append(b, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* Label values escape backslash, double quote and newline; HELP text backslash and newline. */
static void buffer_escaped(text_buffer *b, const char *text, bool quotes) {
    for (const char *p = text; *p; p++) {
        if (*p == '\\')
            buffer_puts(b, "\\\\");
        else if (*p == '\n')
            buffer_puts(b, "\\n");
        else if (*p == '"' && quotes)
            buffer_puts(b, "\\\"");
        else
            buffer_append(b, p, 1);
    }
}

static metric_series *series_create(const metric_family *f, const char *const *values) {
    metric_series *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->family = f;
    s->label_values = calloc(f->label_count + 1, sizeof *s->label_values);
    text_buffer labels = {0};
    buffer_puts(&labels, "");
    bool ok = s->label_values != NULL;
    for (size_t i = 0; ok && i < f->label_count; i++) {
        ok = (s->label_values[i] = strdup(values[i])) != NULL;
        buffer_printf(&labels, "%s%s=\"", i ? "," : "", f->label_names[i]);
        buffer_escaped(&labels, values[i], true);
        buffer_puts(&labels, "\"");
    }
    if (ok && f->type == METRIC_HISTOGRAM)
        ok = (s->bucket_counts = calloc(f->bucket_count + 1, sizeof *s->bucket_counts)) != NULL;
    s->labels = labels.data;
    if (!ok || labels.failed) {
        for (size_t i = 0; s->label_values && i < f->label_count; i++)
            free(s->label_values[i]);
        free(s->label_values);
        free(s->labels);
        free(s->bucket_counts);
        free(s);
        return NULL;
    }
    return s;
}

static bool series_matches(const metric_family *f, const metric_series *s, const char *const *values) {
    for (size_t i = 0; i < f->label_count; i++)
        if (strcmp(s->label_values[i], values[i]) != 0)
            return false;
    return true;
}

metric_series *metrics_series(metric_family *family, const char *const *label_values) {
    if (family == NULL)
        return NULL;
    size_t given = 0;
    while (label_values && label_values[given])
        given++;
    if (given != family->label_count) {
        LOG_ERROR("metric %s wants %zu label values, not %zu", family->name, family->label_count, given);
        return NULL;
    }
    pthread_mutex_lock(&registry_lock);
    metric_series *found = NULL;
    for (metric_series *s = family->series; s != NULL && found == NULL; s = s->next)
        if (series_matches(family, s, label_values))
            found = s;
    if (found == NULL && (found = series_create(family, label_values)) != NULL) {
        if (family->last_series)
            family->last_series->next = found;
        else
            family->series = found;
        family->last_series = found;
    }
    pthread_mutex_unlock(&registry_lock);
    return found;
}

void metric_add(metric_series *series, double value) {
    if (series)
        atomic_double_add(&series->bits, value);
}

void metric_set(metric_series *series, double value) {
    if (series)
        atomic_store_explicit(&series->bits, double_bits(value), memory_order_relaxed);
}

void metric_observe(metric_series *series, double value) {
    if (series == NULL || series->bucket_counts == NULL)
        return;
    const metric_family *f = series->family;
    size_t lo = 0, hi = f->bucket_count; /* the first bucket whose bound is >= value */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (f->buckets[mid] < value)
            lo = mid + 1;
        else
            hi = mid;
    }
    atomic_fetch_add_explicit(&series->bucket_counts[lo], 1, memory_order_relaxed);
    atomic_double_add(&series->sum_bits, value);
}

/* --- rendering --------------------------------------------------------------------------- */

static void buffer_number(text_buffer *b, double value) {
    if (isnan(value))
        buffer_puts(b, "NaN");
    else if (isinf(value))
        buffer_puts(b, value > 0 ? "+Inf" : "-Inf");
    else if (value == floor(value) && fabs(value) < 1e15)
        buffer_printf(b, "%.0f", value);
    else
        buffer_printf(b, "%.9g", value);
}

/* name{labels[,extra]} */
static void buffer_sample_name(text_buffer *b, const char *name, const char *suffix,
                               const metric_series *s, const char *extra) {
    buffer_puts(b, name);
    buffer_puts(b, suffix);
    bool has_labels = s->labels[0] != '\0';
    if (has_labels || extra) {
        buffer_puts(b, "{");
        buffer_puts(b, s->labels);
        if (extra) {
            if (has_labels)
                buffer_puts(b, ",");
            buffer_puts(b, extra);
        }
        buffer_puts(b, "}");
    }
    buffer_puts(b, " ");
}

static void render_histogram(text_buffer *b, const metric_family *f, const metric_series *s) {
    uint64_t cumulative = 0;
    char le[64];
    for (size_t i = 0; i <= f->bucket_count; i++) {
        cumulative += atomic_load_explicit(&s->bucket_counts[i], memory_order_relaxed);
        if (i < f->bucket_count)
            snprintf(le, sizeof le, "le=\"%g\"", f->buckets[i]);
        else
            snprintf(le, sizeof le, "le=\"+Inf\"");
        buffer_sample_name(b, f->name, "_bucket", s, le);
        buffer_printf(b, "%llu\n", (unsigned long long)cumulative);
    }
    buffer_sample_name(b, f->name, "_sum", s, NULL);
    buffer_number(b, bits_double(atomic_load_explicit(&s->sum_bits, memory_order_relaxed)));
    buffer_puts(b, "\n");
    /* _count equals the +Inf bucket, read once above, so the two always agree */
    buffer_sample_name(b, f->name, "_count", s, NULL);
    buffer_printf(b, "%llu\n", (unsigned long long)cumulative);
}

char *metrics_render(size_t *size) {
    text_buffer b = {0};
    buffer_puts(&b, "");
    pthread_mutex_lock(&registry_lock);
    for (const metric_family *f = families; f != NULL; f = f->next) {
        buffer_printf(&b, "# HELP %s ", f->name);
        buffer_escaped(&b, f->help, false);
        buffer_printf(&b, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
        for (const metric_series *s = f->series; s != NULL; s = s->next) {
            if (f->type == METRIC_HISTOGRAM) {
                render_histogram(&b, f, s);
            } else {
                buffer_sample_name(&b, f->name, "", s, NULL);
                buffer_number(&b, bits_double(atomic_load_explicit(&s->bits, memory_order_relaxed)));
                buffer_puts(&b, "\n");
            }
        }
    }
    pthread_mutex_unlock(&registry_lock);
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    if (size)
        *size = b.length;
    return b.data;
}

/* --- the HTTP endpoint ------------------------------------------------------------------- */

struct metrics_server {
    struct MHD_Daemon *daemon;
    int port;
};

static enum MHD_Result send_text(struct MHD_Connection *connection, unsigned int code, char *body,
                                 size_t size, enum MHD_ResponseMemoryMode mode) {
    struct MHD_Response *response = MHD_create_response_from_buffer(size, body, mode);
    if (response == NULL)
        return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                            code == MHD_HTTP_OK ? "text/plain; version=0.0.4; charset=utf-8"
                                                : "text/plain; charset=utf-8");
    enum MHD_Result result = MHD_queue_response(connection, code, response);
    MHD_destroy_response(response);
    return result;
}

static enum MHD_Result on_request(void *closure, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **request_state) {
    (void)closure;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)request_state;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static char text[] = "only GET\n";
        return send_text(connection, MHD_HTTP_METHOD_NOT_ALLOWED, text, sizeof text - 1,
                         MHD_RESPMEM_PERSISTENT);
    }
    if (strcmp(url, "/metrics") != 0) {
        static char text[] = "not found: metrics are at /metrics\n";
        return send_text(connection, MHD_HTTP_NOT_FOUND, text, sizeof text - 1, MHD_RESPMEM_PERSISTENT);
    }
    size_t size = 0;
    char *body = metrics_render(&size);
    if (body == NULL) {
        static char text[] = "out of memory\n";
        return send_text(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, text, sizeof text - 1,
                         MHD_RESPMEM_PERSISTENT);
    }
    return send_text(connection, MHD_HTTP_OK, body, size, MHD_RESPMEM_MUST_FREE);
}

status_code metrics_server_start(int port, metrics_server **out, status *st) {
    metrics_server *server = calloc(1, sizeof *server);
    if (server == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    server->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL, NULL,
                                      on_request, NULL, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                                      MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_END);
    if (server->daemon == NULL) {
        free(server);
        return status_set(st, STATUS_UNAVAILABLE, "METRICS_PORT_BUSY",
                          "cannot serve metrics on port %d (in use?)", port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(server->daemon, MHD_DAEMON_INFO_BIND_PORT);
    server->port = info ? info->port : port;
    *out = server;
    return STATUS_OK;
}

int metrics_server_port(const metrics_server *server) {
    return server->port;
}

void metrics_server_stop(metrics_server *server) {
    if (server == NULL)
        return;
    MHD_stop_daemon(server->daemon);
    free(server);
}
