/* log.h - structured logs: one JSON object per line on stdout, e.g.
 *   {"time":"2026-11-25T06:30:00.123Z","level":"info","service":"catalog",
 *    "trace_id":"4bf9...","msg":"book registered"}
 * The level check comes before any formatting, so a disabled LOG_DEBUG costs one load.
 * The trace id is per thread: the rpc framework sets it around each handler. */
#ifndef LIBSHARED_LOG_H
#define LIBSHARED_LOG_H

#include <stdbool.h>

typedef enum log_level {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO = 1,
    LOG_LEVEL_WARN = 2,
    LOG_LEVEL_ERROR = 3,
} log_level;

/* Sets the service name written on every line and the starting level. Call once, first,
 * before other threads log. Until then the service is "unknown" and the level INFO. */
void log_init(const char *service, log_level level);
/* Thread-safe; takes effect for the next line logged (used for live level changes).
 * Levels outside the enum are clamped to DEBUG..ERROR. */
void log_set_level(log_level level);
log_level log_get_level(void);
bool log_enabled(log_level level);
/* Parses "debug", "info", "warn"/"warning", "error" (any case). Returns false otherwise. */
bool log_level_parse(const char *text, log_level *out);
/* "debug", "info", "warn", "error"; "unknown" for values outside the enum. */
const char *log_level_name(log_level level);

/* The trace id written on this thread's lines; NULL or "" for none. The string is copied
 * (at most 64 bytes). */
void log_set_trace_id(const char *trace_id);
/* This thread's trace id, "" when none is set; never NULL. Valid until the next set. */
const char *log_get_trace_id(void);

/* Writes one line (atomically, one write(2)) when level is enabled. Messages longer than
 * about 8 KiB are cut and end in "...". Leaves errno unchanged. Prefer the macros below. */
void log_write(log_level level, const char *format, ...) __attribute__((format(printf, 2, 3)));

#define LOG_AT(level, ...)                                                                      \
    do {                                                                                        \
        if (log_enabled(level))                                                                 \
            log_write(level, __VA_ARGS__);                                                      \
    } while (0)
#define LOG_DEBUG(...) LOG_AT(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define LOG_INFO(...) LOG_AT(LOG_LEVEL_INFO, __VA_ARGS__)
#define LOG_WARN(...) LOG_AT(LOG_LEVEL_WARN, __VA_ARGS__)
#define LOG_ERROR(...) LOG_AT(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
