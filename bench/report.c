/* report.c - plain text for people, JSON for tools. */
#include "report.h"

#include <string.h>

static const char *const code_names[RESULT_CODES] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
};

static double ms(uint64_t microseconds) {
    return (double)microseconds / 1000.0;
}

static void shape(const bench_result *r, char *out, size_t size) {
    snprintf(out, size, "%dx%d", r->connections, r->streams);
}

static void errors_text(const bench_result *r, char *out, size_t size) {
    size_t used = 0;
    out[0] = '\0';
    for (int c = 1; c < RESULT_CODES; c++)
        if (r->errors_by_code[c] && used < size)
            used += (size_t)snprintf(out + used, size - used, "%s%s:%llu", used ? " " : "",
                                     code_names[c], (unsigned long long)r->errors_by_code[c]);
    if (r->bad_replies && used < size)
        snprintf(out + used, size - used, "%sbad-reply:%llu", used ? " " : "",
                 (unsigned long long)r->bad_replies);
    if (out[0] == '\0')
        snprintf(out, size, "%s", r->errors ? "yes" : "0");
}

void report_table(FILE *out, const bench_result *results, int count) {
    fprintf(out, "%-34s %-6s %9s %8s %8s %8s %8s %8s  %s\n", "measurement", "shape", "ops/s",
            "p50 ms", "p90 ms", "p99 ms", "max ms", "ops", "errors");
    for (int i = 0; i < count; i++) {
        const bench_result *r = &results[i];
        char s[16], e[160], name[64];
        shape(r, s, sizeof s);
        snprintf(name, sizeof name, "%s%s", r->name, r->target_rate > 0 ? " (paced)" : "");
        if (r->skipped) {
            fprintf(out, "%-34s %-6s %9s  skipped: %s\n", name, s, "-", r->first_error);
            continue;
        }
        errors_text(r, e, sizeof e);
        fprintf(out, "%-34s %-6s %9.0f %8.2f %8.2f %8.2f %8.1f %8llu  %s\n", name, s,
                result_rate(r), ms(histogram_quantile(&r->latency, 0.50)),
                ms(histogram_quantile(&r->latency, 0.90)), ms(histogram_quantile(&r->latency, 0.99)),
                ms(r->latency.max_us), (unsigned long long)r->operations, e);
    }
}

static void ratio_values(const ratio *q, char *measured, char *target, size_t size) {
    if (strcmp(q->unit, "%") == 0) {
        snprintf(measured, size, "%.0f%%", q->measured * 100);
        snprintf(target, size, "%s %.0f%%", q->at_most ? "<=" : ">=", q->target * 100);
    } else {
        snprintf(measured, size, "%.1f %s", q->measured, q->unit);
        snprintf(target, size, "%s %.0f %s", q->at_most ? "<" : ">=", q->target, q->unit);
    }
}

void report_ratios(FILE *out, const ratio *ratios, int count) {
    fprintf(out, "%-46s %-6s %10s %10s  %s\n", "target", "shape", "measured", "target", "met");
    for (int i = 0; i < count; i++) {
        const ratio *q = &ratios[i];
        if (!q->available) {
            fprintf(out, "%-46s %-6s %10s %10s  %s\n", q->what, q->shape, "-", "-", q->note);
            continue;
        }
        char m[32], t[32];
        ratio_values(q, m, t, sizeof m);
        bool met = q->at_most ? q->measured <= q->target : q->measured >= q->target;
        fprintf(out, "%-46s %-6s %10s %10s  %s%s%s\n", q->what, q->shape, m, t, met ? "yes" : "NO",
                q->note[0] ? "  " : "", q->note);
    }
}

void report_rss(FILE *out, const rss_sample *samples, int count) {
    fprintf(out, "%-8s %10s %22s %22s %8s\n", "service", "idle MB", "after N calls (MB)",
            "after M calls (MB)", "growth");
    for (int i = 0; i < count; i++) {
        const rss_sample *s = &samples[i];
        if (!s->measured) {
            fprintf(out, "%-8s %10s  not running\n", s->service, "-");
            continue;
        }
        char small[40] = "-", large[40] = "-", growth[16] = "-";
        if (s->small_calls) {
            snprintf(small, sizeof small, "%.1f @ %llu", s->small_kb / 1024.0,
                     (unsigned long long)s->small_calls);
            snprintf(large, sizeof large, "%.1f @ %llu", s->large_kb / 1024.0,
                     (unsigned long long)s->large_calls);
            snprintf(growth, sizeof growth, "%+.1f%%",
                     s->small_kb ? 100.0 * (double)(s->large_kb - s->small_kb) / (double)s->small_kb : 0.0);
        }
        fprintf(out, "%-8s %10.1f %22s %22s %8s\n", s->service, s->idle_kb / 1024.0, small, large,
                growth);
    }
}

static void json_string(FILE *out, const char *text) {
    fputc('"', out);
    for (const char *p = text; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if ((unsigned char)*p < 0x20)
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

bool report_json(const char *path, const char *machine, bool smoke, const bench_result *results,
                 int result_count, const ratio *ratios, int ratio_count, const rss_sample *samples,
                 int sample_count) {
    FILE *out = fopen(path, "w");
    if (out == NULL)
        return false;
    fprintf(out, "{\n  \"machine\": ");
    json_string(out, machine ? machine : "");
    fprintf(out, ",\n  \"smoke\": %s,\n  \"results\": [\n", smoke ? "true" : "false");
    for (int i = 0; i < result_count; i++) {
        const bench_result *r = &results[i];
        fprintf(out, "    {\"name\": ");
        json_string(out, r->name);
        fprintf(out, ", \"connections\": %d, \"streams\": %d, \"target_rate\": %.0f, \"skipped\": %s",
                r->connections, r->streams, r->target_rate, r->skipped ? "true" : "false");
        fprintf(out, ", \"seconds\": %.3f, \"operations\": %llu, \"calls\": %llu, \"ops_per_second\": %.1f",
                r->seconds, (unsigned long long)r->operations, (unsigned long long)r->calls,
                result_rate(r));
        fprintf(out, ", \"latency_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"max\": %.3f}",
                ms(histogram_quantile(&r->latency, 0.5)), ms(histogram_quantile(&r->latency, 0.9)),
                ms(histogram_quantile(&r->latency, 0.99)), ms(r->latency.max_us));
        fprintf(out, ", \"errors\": %llu, \"bad_replies\": %llu, \"errors_by_code\": {",
                (unsigned long long)r->errors, (unsigned long long)r->bad_replies);
        bool first = true;
        for (int c = 1; c < RESULT_CODES; c++)
            if (r->errors_by_code[c]) {
                fprintf(out, "%s\"%s\": %llu", first ? "" : ", ", code_names[c],
                        (unsigned long long)r->errors_by_code[c]);
                first = false;
            }
        fprintf(out, "}, \"first_error\": ");
        json_string(out, r->first_error);
        fprintf(out, "}%s\n", i + 1 < result_count ? "," : "");
    }
    fprintf(out, "  ],\n  \"ratios\": [\n");
    for (int i = 0; i < ratio_count; i++) {
        const ratio *q = &ratios[i];
        bool met = q->at_most ? q->measured <= q->target : q->measured >= q->target;
        fprintf(out, "    {\"target\": ");
        json_string(out, q->what);
        fprintf(out, ", \"shape\": ");
        json_string(out, q->shape);
        if (q->available)
            fprintf(out, ", \"measured\": %.4f, \"goal\": %.4f, \"at_most\": %s, \"unit\": \"%s\", \"met\": %s",
                    q->measured, q->target, q->at_most ? "true" : "false", q->unit,
                    met ? "true" : "false");
        else
            fprintf(out, ", \"measured\": null, \"met\": null");
        fprintf(out, ", \"note\": ");
        json_string(out, q->note);
        fprintf(out, "}%s\n", i + 1 < ratio_count ? "," : "");
    }
    fprintf(out, "  ],\n  \"rss\": [\n");
    for (int i = 0; i < sample_count; i++) {
        const rss_sample *s = &samples[i];
        fprintf(out, "    {\"service\": \"%s\", \"measured\": %s, \"idle_kb\": %ld, \"workload\": ",
                s->service, s->measured ? "true" : "false", s->idle_kb);
        json_string(out, s->workload ? s->workload : "");
        fprintf(out, ", \"small_calls\": %llu, \"small_kb\": %ld, \"large_calls\": %llu, \"large_kb\": %ld}%s\n",
                (unsigned long long)s->small_calls, s->small_kb,
                (unsigned long long)s->large_calls, s->large_kb, i + 1 < sample_count ? "," : "");
    }
    fprintf(out, "  ]\n}\n");
    return fclose(out) == 0;
}
