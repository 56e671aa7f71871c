/* log.c - structured logs: one JSON object per line on stdout, built in a stack buffer and
 * written with one write(2) so that lines from concurrent threads never interleave. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

enum {
    /* Longer messages are cut and marked with "...": a log line is not a file transfer. */
    LOG_MESSAGE_MAX = 8192,
    /* Plain text escapes to about its own size, so a full message fits; a message of control
     * bytes (six output bytes each) is cut where the line is full instead. Stays well under
     * a thread's stack. */
    LOG_LINE_MAX = 16384,
    LOG_TRACE_ID_MAX = 64,
    LOG_SERVICE_MAX = 64,
    /* The longest JSON escape of one input byte is \u00XX or \ufffd. */
    LOG_ESCAPE_MAX = 6,
};

/* What closes a line whose message was cut: the mark, the string, the object, the newline. */
static const char LOG_CUT_MARK[] = "...";
static const char LOG_LINE_END[] = "\"}\n";

static _Atomic int current_level = LOG_LEVEL_INFO;
/* Escaped once at log_init rather than on every line; "Call once, first" makes it safe to
 * read without a lock. */
static char service_json[LOG_SERVICE_MAX * LOG_ESCAPE_MAX + 1] = "unknown";
static _Thread_local char thread_trace_id[LOG_TRACE_ID_MAX + 1];

/* A bounded output buffer: appends that do not fit fail and leave it unchanged. */
typedef struct line_buffer {
    char *data;
    size_t length;
    size_t capacity;
} line_buffer;

static bool line_append(line_buffer *line, const char *bytes, size_t count) {
    if (count > line->capacity - line->length)
        return false;
    memcpy(line->data + line->length, bytes, count);
    line->length += count;
    return true;
}

static bool line_append_text(line_buffer *line, const char *text) {
    return line_append(line, text, strlen(text));
}

/* Length of the well-formed UTF-8 sequence at s, or 0 when it is not one (stray continuation
 * byte, overlong form, surrogate, above U+10FFFF, cut short). Follows RFC 3629's table. */
static size_t utf8_sequence_length(const unsigned char *s, size_t available) {
    unsigned char second_min = 0x80, second_max = 0xBF;
    size_t length;
    if (s[0] < 0x80)
        return 1;
    if (s[0] < 0xC2)
        return 0;
    if (s[0] < 0xE0) {
        length = 2;
    } else if (s[0] < 0xF0) {
        length = 3;
        if (s[0] == 0xE0)
            second_min = 0xA0;
        else if (s[0] == 0xED)
            second_max = 0x9F;
    } else if (s[0] < 0xF5) {
        length = 4;
        if (s[0] == 0xF0)
            second_min = 0x90;
        else if (s[0] == 0xF4)
            second_max = 0x8F;
    } else {
        return 0;
    }
    if (available < length || s[1] < second_min || s[1] > second_max)
        return 0;
    for (size_t i = 2; i < length; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return length;
}

static bool is_plain_ascii(unsigned char byte) {
    return byte >= 0x20 && byte < 0x80 && byte != '"' && byte != '\\';
}

/* Writes the JSON form of the character at s into piece; returns how many input bytes it
 * used. Invalid UTF-8 becomes U+FFFD one byte at a time, so the line is always valid JSON. */
static size_t escape_character(const unsigned char *s, size_t available, char *piece,
                               size_t *piece_length) {
    static const char hex[] = "0123456789abcdef";
    const char *short_form = NULL;
    switch (s[0]) {
    case '"': short_form = "\\\""; break;
    case '\\': short_form = "\\\\"; break;
    case '\b': short_form = "\\b"; break;
    case '\f': short_form = "\\f"; break;
    case '\n': short_form = "\\n"; break;
    case '\r': short_form = "\\r"; break;
    case '\t': short_form = "\\t"; break;
    default: break;
    }
    if (short_form != NULL) {
        *piece_length = strlen(short_form);
        memcpy(piece, short_form, *piece_length);
        return 1;
    }
    if (s[0] < 0x20) {
        memcpy(piece, "\\u00", 4);
        piece[4] = hex[s[0] >> 4];
        piece[5] = hex[s[0] & 0x0F];
        *piece_length = 6;
        return 1;
    }
    size_t sequence = utf8_sequence_length(s, available);
    if (sequence == 0) {
        memcpy(piece, "\\ufffd", 6);
        *piece_length = 6;
        return 1;
    }
    memcpy(piece, s, sequence);
    *piece_length = sequence;
    return sequence;
}

/* Appends text as the inside of a JSON string. When the line fills up it stops on a
 * character boundary and returns false. */
static bool line_append_escaped(line_buffer *line, const char *text, size_t length) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < length) {
        /* Runs of ordinary ASCII, nearly all of a typical message, are copied in one go. */
        size_t run = 0;
        while (i + run < length && is_plain_ascii(s[i + run]))
            run++;
        size_t room = line->capacity - line->length;
        if (run > room) {
            line_append(line, text + i, room);
            return false;
        }
        line_append(line, text + i, run);
        i += run;
        if (i == length)
            break;
        char piece[LOG_ESCAPE_MAX];
        size_t piece_length;
        size_t used = escape_character(s + i, length - i, piece, &piece_length);
        if (!line_append(line, piece, piece_length))
            return false;
        i += used;
    }
    return true;
}

void log_init(const char *service, log_level level) {
    if (service == NULL || service[0] == '\0')
        service = "unknown";
    line_buffer line = {service_json, 0, sizeof service_json - 1};
    line_append_escaped(&line, service, strnlen(service, LOG_SERVICE_MAX));
    service_json[line.length] = '\0';
    log_set_level(level);
}

void log_set_level(log_level level) {
    /* An out-of-range level would silently mute or flood the logs; clamp it instead. */
    if ((int)level < LOG_LEVEL_DEBUG)
        level = LOG_LEVEL_DEBUG;
    if ((int)level > LOG_LEVEL_ERROR)
        level = LOG_LEVEL_ERROR;
    atomic_store_explicit(&current_level, (int)level, memory_order_relaxed);
}

log_level log_get_level(void) {
    return (log_level)atomic_load_explicit(&current_level, memory_order_relaxed);
}

bool log_enabled(log_level level) {
    return (int)level >= atomic_load_explicit(&current_level, memory_order_relaxed);
}

bool log_level_parse(const char *text, log_level *out) {
    static const struct {
        const char *name;
        log_level level;
    } names[] = {
        {"debug", LOG_LEVEL_DEBUG}, {"info", LOG_LEVEL_INFO},   {"warn", LOG_LEVEL_WARN},
        {"warning", LOG_LEVEL_WARN}, {"error", LOG_LEVEL_ERROR},
    };
    if (text == NULL)
        return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(text, names[i].name) == 0) {
            if (out != NULL)
                *out = names[i].level;
            return true;
        }
    }
    return false;
}

const char *log_level_name(log_level level) {
    switch (level) {
    case LOG_LEVEL_DEBUG: return "debug";
    case LOG_LEVEL_INFO: return "info";
    case LOG_LEVEL_WARN: return "warn";
    case LOG_LEVEL_ERROR: return "error";
    }
    return "unknown";
}

void log_set_trace_id(const char *trace_id) {
    size_t length = trace_id == NULL ? 0 : strnlen(trace_id, LOG_TRACE_ID_MAX);
    if (length > 0)
        memcpy(thread_trace_id, trace_id, length);
    thread_trace_id[length] = '\0';
}

const char *log_get_trace_id(void) {
    return thread_trace_id;
}

/* RFC 3339 UTC with milliseconds: 2026-11-25T06:30:00.123Z (24 characters). */
static void format_time(char *out, size_t size) {
    struct timespec now;
    struct tm utc;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &utc);
    size_t length = strftime(out, size, "%Y-%m-%dT%H:%M:%S", &utc);
    snprintf(out + length, size - length, ".%03dZ", (int)(now.tv_nsec / 1000000));
}

/* Formats into message (LOG_MESSAGE_MAX bytes) and returns the length. The length comes
 * from vsnprintf, not strlen, so a NUL produced by %c still shows up (as \u0000). */
__attribute__((format(printf, 2, 0))) /* clang's -Wformat-nonliteral wants it */
static size_t format_message(char *message, const char *format, va_list args) {
    int length = vsnprintf(message, LOG_MESSAGE_MAX, format, args);
    if (length < 0) {
        snprintf(message, LOG_MESSAGE_MAX, "(unformattable log message: %s)", format);
        return strlen(message);
    }
    if (length < LOG_MESSAGE_MAX)
        return (size_t)length;
    /* Cut before the character the limit falls in, so no stray UTF-8 bytes precede the mark. */
    size_t cut = LOG_MESSAGE_MAX - sizeof LOG_CUT_MARK;
    for (int back = 0; back < 3 && ((unsigned char)message[cut] & 0xC0) == 0x80; back++)
        cut--;
    memcpy(message + cut, LOG_CUT_MARK, sizeof LOG_CUT_MARK);
    return cut + sizeof LOG_CUT_MARK - 1;
}

/* Builds the whole line into buffer (LOG_LINE_MAX bytes) and returns its length. */
static size_t build_line(char *buffer, log_level level, const char *message, size_t length) {
    char time_text[32];
    format_time(time_text, sizeof time_text);
    /* Keep room for the cut mark and the line end, so closing the line cannot fail. */
    line_buffer line = {buffer, 0, LOG_LINE_MAX - (sizeof LOG_CUT_MARK - 1) -
                                       (sizeof LOG_LINE_END - 1)};
    /* The prefix is bounded (time, level, service and trace id) and far below the capacity. */
    line_append_text(&line, "{\"time\":\"");
    line_append_text(&line, time_text);
    line_append_text(&line, "\",\"level\":\"");
    line_append_text(&line, log_level_name(level));
    line_append_text(&line, "\",\"service\":\"");
    line_append_text(&line, service_json);
    if (thread_trace_id[0] != '\0') {
        line_append_text(&line, "\",\"trace_id\":\"");
        line_append_escaped(&line, thread_trace_id, strlen(thread_trace_id));
    }
    line_append_text(&line, "\",\"msg\":\"");
    bool complete = line_append_escaped(&line, message, length);
    line.capacity = LOG_LINE_MAX;
    if (!complete)
        line_append_text(&line, LOG_CUT_MARK);
    line_append_text(&line, LOG_LINE_END);
    return line.length;
}

/* One write(2) per line is what keeps lines whole. The loop only resumes after a signal or
 * a short write; a log line that cannot be written has nowhere to be reported, so it is
 * dropped. */
static void write_line(const char *data, size_t length) {
    while (length > 0) {
        ssize_t written = write(STDOUT_FILENO, data, length);
        if (written < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        data += written;
        length -= (size_t)written;
    }
}

void log_write(log_level level, const char *format, ...) {
    /* Callers often log a failure and then inspect errno; logging must not change it. */
    int saved_errno = errno;
    if (log_enabled(level)) {
        char message[LOG_MESSAGE_MAX];
        char buffer[LOG_LINE_MAX];
        va_list args;
        va_start(args, format);
        size_t message_length = format_message(message, format, args);
        va_end(args);
        write_line(buffer, build_line(buffer, level, message, message_length));
    }
    errno = saved_errno;
}
