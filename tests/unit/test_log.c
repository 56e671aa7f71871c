/* test_log.c - the JSON log lines: exact format, escaping, level filtering, trace ids, and
 * whole lines under concurrency. Stdout is pointed at a temporary file with dup2 and every
 * line is checked by a small strict JSON parser written here, independent of log.c. */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* ---- capturing stdout ---- */

typedef struct stdout_capture {
    int saved_stdout;
    int file;
} stdout_capture;

static void capture_start(stdout_capture *capture) {
    char path[] = "/tmp/test_log_XXXXXX";
    capture->file = mkstemp(path);
    cr_assert_geq(capture->file, 0, "mkstemp: %s", strerror(errno));
    unlink(path);
    fflush(stdout);
    capture->saved_stdout = dup(STDOUT_FILENO);
    cr_assert_geq(capture->saved_stdout, 0);
    cr_assert_geq(dup2(capture->file, STDOUT_FILENO), 0);
}

/* Restores stdout and returns everything written meanwhile, NUL-terminated; caller frees. */
static char *capture_finish(stdout_capture *capture, size_t *length) {
    dup2(capture->saved_stdout, STDOUT_FILENO);
    close(capture->saved_stdout);
    off_t size = lseek(capture->file, 0, SEEK_END);
    cr_assert_geq(size, 0);
    char *text = malloc((size_t)size + 1);
    cr_assert_not_null(text);
    cr_assert_eq(pread(capture->file, text, (size_t)size, 0), size);
    close(capture->file);
    text[size] = '\0';
    *length = (size_t)size;
    return text;
}

static size_t count_lines(const char *text, size_t length) {
    size_t lines = 0;
    for (size_t i = 0; i < length; i++)
        lines += text[i] == '\n';
    return lines;
}

/* ---- a strict JSON checker for flat objects of strings, which is all a log line is ---- */

enum { JSON_FIELDS_MAX = 8 };

typedef struct json_field {
    char *key;
    char *value; /* decoded, NUL-terminated; value_length counts embedded NULs */
    size_t value_length;
} json_field;

typedef struct json_object {
    json_field fields[JSON_FIELDS_MAX];
    size_t count;
} json_object;

typedef struct json_cursor {
    const unsigned char *p;
    const unsigned char *end;
} json_cursor;

/* Decodes one UTF-8 sequence by arithmetic (not tables, unlike log.c) and returns its length,
 * or 0 when it is malformed, overlong, a surrogate or above U+10FFFF. */
static size_t utf8_decode(const unsigned char *s, size_t available) {
    size_t length;
    unsigned long code, minimum;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xE0) == 0xC0) {
        length = 2, code = s[0] & 0x1F, minimum = 0x80;
    } else if ((s[0] & 0xF0) == 0xE0) {
        length = 3, code = s[0] & 0x0F, minimum = 0x800;
    } else if ((s[0] & 0xF8) == 0xF0) {
        length = 4, code = s[0] & 0x07, minimum = 0x10000;
    } else {
        return 0;
    }
    if (available < length)
        return 0;
    for (size_t i = 1; i < length; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        code = (code << 6) | (s[i] & 0x3F);
    }
    if (code < minimum || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF))
        return 0;
    return length;
}

static size_t utf8_encode(unsigned long code, char *out) {
    if (code < 0x80) {
        out[0] = (char)code;
        return 1;
    }
    if (code < 0x800) {
        out[0] = (char)(0xC0 | (code >> 6));
        out[1] = (char)(0x80 | (code & 0x3F));
        return 2;
    }
    if (code < 0x10000) {
        out[0] = (char)(0xE0 | (code >> 12));
        out[1] = (char)(0x80 | ((code >> 6) & 0x3F));
        out[2] = (char)(0x80 | (code & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (code >> 18));
    out[1] = (char)(0x80 | ((code >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((code >> 6) & 0x3F));
    out[3] = (char)(0x80 | (code & 0x3F));
    return 4;
}

static bool json_hex4(json_cursor *c, unsigned long *out) {
    unsigned long value = 0;
    for (int i = 0; i < 4; i++, c->p++) {
        if (c->p == c->end)
            return false;
        unsigned char h = *c->p;
        int digit = h >= '0' && h <= '9'   ? h - '0'
                    : h >= 'a' && h <= 'f' ? h - 'a' + 10
                    : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                           : -1;
        if (digit < 0)
            return false;
        value = value * 16 + (unsigned long)digit;
    }
    *out = value;
    return true;
}

/* After a backslash: one escape, written decoded to out. */
static bool json_escape(json_cursor *c, char *out, size_t *written) {
    static const char simple_from[] = "\"\\/bfnrt";
    static const char simple_to[] = "\"\\/\b\f\n\r\t";
    if (c->p == c->end)
        return false;
    const char *simple = strchr(simple_from, *c->p);
    if (*c->p != '\0' && simple != NULL) {
        out[0] = simple_to[simple - simple_from];
        *written = 1;
        c->p++;
        return true;
    }
    if (*c->p++ != 'u')
        return false;
    unsigned long code, low;
    if (!json_hex4(c, &code) || (code >= 0xDC00 && code <= 0xDFFF))
        return false;
    if (code >= 0xD800 && code <= 0xDBFF) {
        if (c->end - c->p < 2 || c->p[0] != '\\' || c->p[1] != 'u')
            return false;
        c->p += 2;
        if (!json_hex4(c, &low) || low < 0xDC00 || low > 0xDFFF)
            return false;
        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
    }
    *written = utf8_encode(code, out);
    return true;
}

static bool json_string(json_cursor *c, char **out, size_t *out_length) {
    if (c->p == c->end || *c->p++ != '"')
        return false;
    char *value = malloc((size_t)(c->end - c->p) + 1);
    size_t length = 0;
    for (;;) {
        if (c->p == c->end)
            goto fail;
        unsigned char byte = *c->p;
        if (byte == '"') {
            c->p++;
            break;
        }
        if (byte < 0x20)
            goto fail;
        if (byte == '\\') {
            size_t written;
            c->p++;
            if (!json_escape(c, value + length, &written))
                goto fail;
            length += written;
            continue;
        }
        size_t sequence = utf8_decode(c->p, (size_t)(c->end - c->p));
        if (sequence == 0)
            goto fail;
        memcpy(value + length, c->p, sequence);
        length += sequence;
        c->p += sequence;
    }
    value[length] = '\0';
    *out = value;
    if (out_length != NULL)
        *out_length = length;
    return true;
fail:
    free(value);
    return false;
}

static void json_object_free(json_object *object) {
    for (size_t i = 0; i < object->count; i++) {
        free(object->fields[i].key);
        free(object->fields[i].value);
    }
    object->count = 0;
}

/* Parses exactly one object with string values and nothing after it. */
static bool json_parse_object(const char *text, size_t length, json_object *out) {
    json_cursor c = {(const unsigned char *)text, (const unsigned char *)text + length};
    out->count = 0;
    if (c.p == c.end || *c.p++ != '{')
        return false;
    while (c.p != c.end && *c.p != '}') {
        if (out->count == JSON_FIELDS_MAX)
            goto fail;
        json_field *field = &out->fields[out->count];
        if (!json_string(&c, &field->key, NULL))
            goto fail;
        if (c.p == c.end || *c.p++ != ':' ||
            !json_string(&c, &field->value, &field->value_length)) {
            free(field->key);
            goto fail;
        }
        out->count++;
        if (c.p != c.end && *c.p == ',' && c.p + 1 != c.end && c.p[1] != '}')
            c.p++;
        else if (c.p == c.end || *c.p != '}')
            goto fail;
    }
    if (c.p == c.end || ++c.p != c.end)
        goto fail;
    return true;
fail:
    json_object_free(out);
    return false;
}

static const char *json_get(const json_object *object, const char *key) {
    for (size_t i = 0; i < object->count; i++)
        if (strcmp(object->fields[i].key, key) == 0)
            return object->fields[i].value;
    return NULL;
}

static bool is_rfc3339_millis(const char *text) {
    const char *pattern = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (strlen(text) != strlen(pattern))
        return false;
    for (size_t i = 0; pattern[i] != '\0'; i++) {
        bool ok = pattern[i] == 'd' ? (text[i] >= '0' && text[i] <= '9') : text[i] == pattern[i];
        if (!ok)
            return false;
    }
    return true;
}

/* Checks one captured line: valid JSON, keys in the documented order, a well-formed time.
 * Returns the parsed object (caller frees). */
static void check_line(const char *line, size_t length, json_object *out) {
    cr_assert(json_parse_object(line, length, out), "not valid JSON: %.*s", (int)length, line);
    const char *with_trace[] = {"time", "level", "service", "trace_id", "msg"};
    const char *without_trace[] = {"time", "level", "service", "msg"};
    bool traced = out->count == 5;
    cr_assert(out->count == 4 || traced, "unexpected keys in %.*s", (int)length, line);
    for (size_t i = 0; i < out->count; i++)
        cr_assert_str_eq(out->fields[i].key, traced ? with_trace[i] : without_trace[i]);
    cr_assert(is_rfc3339_millis(out->fields[0].value), "bad time %s", out->fields[0].value);
}

/* Asserts the capture holds exactly one line and parses it. */
static void check_single_line(const char *text, size_t length, json_object *out) {
    cr_assert_eq(count_lines(text, length), 1, "expected one line, got: %s", text);
    cr_assert_eq(text[length - 1], '\n');
    check_line(text, length - 1, out);
}

/* Everything after the time value, for exact comparisons: `,"level":...}\n`. */
static const char *after_time(const char *line) {
    static const char prefix[] = "{\"time\":\"";
    cr_assert_eq(strncmp(line, prefix, strlen(prefix)), 0, "line: %s", line);
    const char *time_end = strchr(line + strlen(prefix), '"');
    cr_assert_not_null(time_end);
    return time_end + 1;
}

/* ---- format ---- */

Test(log, defaults_before_init) {
    cr_assert_eq(log_get_level(), LOG_LEVEL_INFO);
    stdout_capture capture;
    capture_start(&capture);
    LOG_DEBUG("hidden");
    LOG_INFO("hello");
    size_t length;
    char *out = capture_finish(&capture, &length);
    cr_assert_str_eq(after_time(out),
                     ",\"level\":\"info\",\"service\":\"unknown\",\"msg\":\"hello\"}\n");
    free(out);
}

Test(log, one_line_per_call_exact_format) {
    log_init("catalog", LOG_LEVEL_INFO);
    stdout_capture capture;
    capture_start(&capture);
    LOG_INFO("book %s registered", "b-1");
    LOG_WARN("stock %d low", 2);
    LOG_ERROR("failed");
    size_t length;
    char *out = capture_finish(&capture, &length);
    cr_assert_eq(count_lines(out, length), 3, "output: %s", out);

    const char *expected[] = {
        ",\"level\":\"info\",\"service\":\"catalog\",\"msg\":\"book b-1 registered\"}",
        ",\"level\":\"warn\",\"service\":\"catalog\",\"msg\":\"stock 2 low\"}",
        ",\"level\":\"error\",\"service\":\"catalog\",\"msg\":\"failed\"}",
    };
    char *line = out;
    for (size_t i = 0; i < 3; i++) {
        char *end = strchr(line, '\n');
        *end = '\0';
        json_object object;
        check_line(line, (size_t)(end - line), &object);
        json_object_free(&object);
        cr_assert_str_eq(after_time(line), expected[i]);
        line = end + 1;
    }
    free(out);
}

Test(log, service_name_is_escaped) {
    log_init("we\"ird\n", LOG_LEVEL_INFO);
    stdout_capture capture;
    capture_start(&capture);
    LOG_INFO("x");
    size_t length;
    char *out = capture_finish(&capture, &length);
    json_object object;
    check_single_line(out, length, &object);
    cr_assert_str_eq(json_get(&object, "service"), "we\"ird\n");
    json_object_free(&object);
    free(out);
}

/* ---- escaping ---- */

/* Logs message through "%s" and returns the raw msg value as it appears on the line, with
 * the decoded value checked against the input when round_trips is set. */
static char *logged_message(const char *message, bool round_trips) {
    log_init("svc", LOG_LEVEL_INFO);
    stdout_capture capture;
    capture_start(&capture);
    LOG_INFO("%s", message);
    size_t length;
    char *out = capture_finish(&capture, &length);
    json_object object;
    check_single_line(out, length, &object);
    if (round_trips)
        cr_assert_str_eq(json_get(&object, "msg"), message);
    json_object_free(&object);
    static const char key[] = ",\"msg\":\"";
    char *raw = strstr(out, key);
    cr_assert_not_null(raw);
    raw += strlen(key);
    size_t raw_length = length - (size_t)(raw - out) - strlen("\"}\n");
    memmove(out, raw, raw_length);
    out[raw_length] = '\0';
    return out;
}

Test(log, escapes_quotes_backslashes_and_control_bytes) {
    const char *message = "say \"hi\" \\ path/x\n\tnext\r\b\f\x01\x1f\x7f end";
    char *raw = logged_message(message, true);
    cr_assert_str_eq(raw, "say \\\"hi\\\" \\\\ path/x\\n\\tnext\\r\\b\\f\\u0001\\u001f\x7f end");
    free(raw);
}

Test(log, nul_byte_from_format_is_escaped) {
    log_init("svc", LOG_LEVEL_INFO);
    stdout_capture capture;
    capture_start(&capture);
    LOG_INFO("a%cb", 0);
    size_t length;
    char *out = capture_finish(&capture, &length);
    json_object object;
    check_single_line(out, length, &object);
    cr_assert_eq(object.fields[3].value_length, 3);
    cr_assert_eq(memcmp(object.fields[3].value, "a\0b", 3), 0);
    cr_assert_not_null(strstr(out, "\"msg\":\"a\\u0000b\""));
    json_object_free(&object);
    free(out);
}

Test(log, valid_utf8_passes_through) {
    const char *message = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbd \xf4\x8f\xbf\xbf";
    char *raw = logged_message(message, true);
    cr_assert_str_eq(raw, message);
    free(raw);
}

Test(log, invalid_utf8_bytes_become_replacement_characters) {
    /* Each invalid byte is replaced on its own: a stray 0xff; a lead byte followed by a
     * space; an overlong "/"; an encoded surrogate; a code point above U+10FFFF; a sequence
     * cut off at the end. */
    const char *message = "a\xff b\xc3 c\xc0\xaf d\xed\xa0\x80 e\xf4\x90\x80\x80 f\xe2\x82";
    char *raw = logged_message(message, false);
#define R "\\ufffd"
    cr_assert_str_eq(raw, "a" R " b" R " c" R R " d" R R R " e" R R R R " f" R R);
#undef R
    free(raw);
}

/* ---- long messages ---- */

Test(log, long_message_is_cut_and_marked) {
    size_t size = 20000;
    char *message = malloc(size + 1);
    memset(message, 'a', size);
    message[size] = '\0';
    char *raw = logged_message(message, false);
    size_t length = strlen(raw);
    cr_assert(length > 8000 && length <= 8192, "length %zu", length);
    cr_assert_str_eq(raw + length - 3, "...");
    cr_assert_eq(strspn(raw, "a"), length - 3);
    free(raw);
    free(message);
}

Test(log, long_message_of_control_bytes_stays_valid) {
    size_t size = 8000; /* escapes to 48000 bytes, more than a line holds */
    char *message = malloc(size + 1);
    memset(message, '\x01', size);
    message[size] = '\0';
    char *raw = logged_message(message, false);
    size_t length = strlen(raw);
    cr_assert(length < 16384, "length %zu", length);
    cr_assert_str_eq(raw + length - 3, "...");
    cr_assert_eq((length - 3) % 6, 0, "cut inside an escape");
    free(raw);
    free(message);
}

Test(log, cutting_never_splits_a_utf8_character) {
    /* Shift a run of 3-byte characters so the limit falls on every position inside one. */
    for (size_t shift = 0; shift < 3; shift++) {
        size_t count = 4000;
        char *message = malloc(shift + count * 3 + 1);
        memset(message, 'a', shift);
        for (size_t i = 0; i < count; i++)
            memcpy(message + shift + i * 3, "\xe2\x82\xac", 3);
        message[shift + count * 3] = '\0';
        char *raw = logged_message(message, false);
        cr_assert_null(strstr(raw, "\\ufffd"), "shift %zu gave a replacement character", shift);
        cr_assert_str_eq(raw + strlen(raw) - 3, "...");
        free(raw);
        free(message);
    }
}

/* ---- levels ---- */

Test(log, disabled_levels_print_nothing_and_skip_arguments) {
    log_init("svc", LOG_LEVEL_INFO);
    int evaluated = 0;
    stdout_capture capture;
    capture_start(&capture);
    LOG_DEBUG("%d", ++evaluated);
    log_write(LOG_LEVEL_DEBUG, "called directly");
    size_t length;
    char *out = capture_finish(&capture, &length);
    cr_assert_eq(evaluated, 0, "LOG_DEBUG evaluated its arguments");
    cr_assert_eq(length, 0, "printed: %s", out);
    free(out);

    log_set_level(LOG_LEVEL_ERROR);
    capture_start(&capture);
    LOG_INFO("no");
    LOG_WARN("no");
    LOG_ERROR("yes");
    out = capture_finish(&capture, &length);
    json_object object;
    check_single_line(out, length, &object);
    cr_assert_str_eq(json_get(&object, "level"), "error");
    json_object_free(&object);
    free(out);

    log_set_level(LOG_LEVEL_DEBUG);
    capture_start(&capture);
    LOG_DEBUG("%d", ++evaluated);
    out = capture_finish(&capture, &length);
    cr_assert_eq(evaluated, 1);
    check_single_line(out, length, &object);
    cr_assert_str_eq(json_get(&object, "level"), "debug");
    cr_assert_str_eq(json_get(&object, "msg"), "1");
    json_object_free(&object);
    free(out);
}

Test(log, enabled_follows_the_level) {
    log_init("svc", LOG_LEVEL_WARN);
    cr_assert_eq(log_get_level(), LOG_LEVEL_WARN);
    cr_assert_not(log_enabled(LOG_LEVEL_DEBUG));
    cr_assert_not(log_enabled(LOG_LEVEL_INFO));
    cr_assert(log_enabled(LOG_LEVEL_WARN));
    cr_assert(log_enabled(LOG_LEVEL_ERROR));
    log_set_level((log_level)42);
    cr_assert_eq(log_get_level(), LOG_LEVEL_ERROR);
    log_set_level((log_level)-3);
    cr_assert_eq(log_get_level(), LOG_LEVEL_DEBUG);
}

Test(log, level_parse_accepts_names_in_any_case) {
    const struct {
        const char *text;
        log_level level;
    } good[] = {
        {"debug", LOG_LEVEL_DEBUG}, {"DEBUG", LOG_LEVEL_DEBUG}, {"info", LOG_LEVEL_INFO},
        {"Info", LOG_LEVEL_INFO},   {"warn", LOG_LEVEL_WARN},   {"WARNING", LOG_LEVEL_WARN},
        {"wArNiNg", LOG_LEVEL_WARN}, {"error", LOG_LEVEL_ERROR}, {"ERROR", LOG_LEVEL_ERROR},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        log_level level = (log_level)-1;
        cr_assert(log_level_parse(good[i].text, &level), "%s", good[i].text);
        cr_assert_eq(level, good[i].level, "%s", good[i].text);
    }
    const char *bad[] = {"", "verbose", "err", "info ", " info", "fatal", "2", "debugx"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        log_level level = LOG_LEVEL_ERROR;
        cr_assert_not(log_level_parse(bad[i], &level), "accepted \"%s\"", bad[i]);
        cr_assert_eq(level, LOG_LEVEL_ERROR, "changed the output on \"%s\"", bad[i]);
    }
    cr_assert_not(log_level_parse(NULL, NULL));
}

Test(log, level_names) {
    cr_assert_str_eq(log_level_name(LOG_LEVEL_DEBUG), "debug");
    cr_assert_str_eq(log_level_name(LOG_LEVEL_INFO), "info");
    cr_assert_str_eq(log_level_name(LOG_LEVEL_WARN), "warn");
    cr_assert_str_eq(log_level_name(LOG_LEVEL_ERROR), "error");
    cr_assert_str_eq(log_level_name((log_level)9), "unknown");
}

Test(log, logging_keeps_errno) {
    log_init("svc", LOG_LEVEL_INFO);
    stdout_capture capture;
    capture_start(&capture);
    errno = ENOENT;
    LOG_INFO("open failed: %s", strerror(errno));
    int after = errno;
    size_t length;
    free(capture_finish(&capture, &length));
    cr_assert_eq(after, ENOENT);
}

/* ---- trace ids ---- */

/* Logs one line and returns its trace_id (NULL when absent); caller frees. */
static char *logged_trace_id(void) {
    stdout_capture capture;
    capture_start(&capture);
    LOG_INFO("traced?");
    size_t length;
    char *out = capture_finish(&capture, &length);
    json_object object;
    check_single_line(out, length, &object);
    const char *trace = json_get(&object, "trace_id");
    char *copy = trace != NULL ? strdup(trace) : NULL;
    json_object_free(&object);
    free(out);
    return copy;
}

Test(log, trace_id_only_when_set) {
    log_init("svc", LOG_LEVEL_INFO);
    cr_assert_str_eq(log_get_trace_id(), "");
    cr_assert_null(logged_trace_id());

    log_set_trace_id("4bf92f3577b34da6a3ce929d0e0e4736");
    cr_assert_str_eq(log_get_trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    char *trace = logged_trace_id();
    cr_assert_str_eq(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    free(trace);

    log_set_trace_id("");
    cr_assert_null(logged_trace_id());
    log_set_trace_id("abc");
    log_set_trace_id(NULL);
    cr_assert_null(logged_trace_id());
    cr_assert_str_eq(log_get_trace_id(), "");
}

Test(log, trace_id_is_copied_truncated_and_escaped) {
    log_init("svc", LOG_LEVEL_INFO);
    char source[] = "first";
    log_set_trace_id(source);
    source[0] = 'X';
    cr_assert_str_eq(log_get_trace_id(), "first");

    char long_id[101];
    memset(long_id, 'f', 100);
    long_id[100] = '\0';
    log_set_trace_id(long_id);
    cr_assert_eq(strlen(log_get_trace_id()), 64);

    log_set_trace_id("a\"b\nc");
    char *trace = logged_trace_id();
    cr_assert_str_eq(trace, "a\"b\nc");
    free(trace);
}

static void *log_from_other_thread(void *unused) {
    /* Runs without Criterion asserts (they belong to the test's thread); reports instead. */
    bool *ok = malloc(sizeof *ok);
    *ok = log_get_trace_id()[0] == '\0';
    log_set_trace_id("thread-trace");
    *ok = *ok && strcmp(log_get_trace_id(), "thread-trace") == 0;
    return ok;
}

Test(log, trace_id_is_per_thread) {
    log_init("svc", LOG_LEVEL_INFO);
    log_set_trace_id("main-trace");
    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, log_from_other_thread, NULL), 0);
    void *result;
    pthread_join(thread, &result);
    cr_assert(*(bool *)result, "the other thread saw this thread's trace id");
    free(result);
    cr_assert_str_eq(log_get_trace_id(), "main-trace");
}

/* ---- concurrency ---- */

enum { WRITER_THREADS = 8, LINES_PER_THREAD = 1000 };

static void *write_many_lines(void *argument) {
    int thread = (int)(intptr_t)argument;
    char trace[32];
    snprintf(trace, sizeof trace, "trace-%d", thread);
    log_set_trace_id(trace);
    /* Long enough, with escapes, that a torn write would show inside a line. */
    char padding[301];
    memset(padding, 'a' + thread, 300);
    padding[0] = '"';
    padding[150] = '\n';
    padding[300] = '\0';
    for (int line = 0; line < LINES_PER_THREAD; line++)
        LOG_INFO("%d %d %s", thread, line, padding);
    return NULL;
}

Test(log, concurrent_lines_never_interleave, .timeout = 60) {
    log_init("svc", LOG_LEVEL_INFO);
    stdout_capture capture;
    capture_start(&capture);
    pthread_t threads[WRITER_THREADS];
    for (int i = 0; i < WRITER_THREADS; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, write_many_lines, (void *)(intptr_t)i), 0);
    for (int i = 0; i < WRITER_THREADS; i++)
        pthread_join(threads[i], NULL);
    size_t length;
    char *out = capture_finish(&capture, &length);
    cr_assert_eq(count_lines(out, length), WRITER_THREADS * LINES_PER_THREAD);

    static bool seen[WRITER_THREADS][LINES_PER_THREAD];
    char *line = out;
    for (char *end; (end = strchr(line, '\n')) != NULL; line = end + 1) {
        json_object object;
        check_line(line, (size_t)(end - line), &object);
        int thread = -1, number = -1, consumed = 0;
        const char *msg = json_get(&object, "msg");
        cr_assert_eq(sscanf(msg, "%d %d %n", &thread, &number, &consumed), 2, "msg %s", msg);
        cr_assert(thread >= 0 && thread < WRITER_THREADS && number >= 0 &&
                  number < LINES_PER_THREAD);
        cr_assert_not(seen[thread][number], "line %d of thread %d twice", number, thread);
        seen[thread][number] = true;
        char trace[32];
        snprintf(trace, sizeof trace, "trace-%d", thread);
        cr_assert_str_eq(json_get(&object, "trace_id"), trace);
        cr_assert_eq(strlen(msg + consumed), 300);
        json_object_free(&object);
    }
    free(out);
}
