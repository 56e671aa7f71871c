/* config.c - reads a service's configuration table from the environment, validating every
 * value at start so that a misconfigured process stops with a message naming the variable. */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

enum {
    /* Values longer than this are cut in error messages: enough to recognise, not a dump. */
    CONFIG_QUOTED_VALUE_MAX = 64,
    /* Worst case: every byte shown as \xNN, plus quotes, the cut mark and the NUL. */
    CONFIG_QUOTED_BUFFER = CONFIG_QUOTED_VALUE_MAX * 4 + 8,
    CONFIG_EXPECTED_MAX = 160,
    CONFIG_PORT_MIN = 1,
    CONFIG_PORT_MAX = 65535,
};

static const char CONFIG_REASON_INVALID[] = "CONFIG_INVALID";
static const char CONFIG_REASON_MISSING[] = "CONFIG_MISSING";
static const char DURATION_EXAMPLES[] = "a duration like 500ms, 30s, 5m, 2h or 14d";

/* A value parsed but not yet stored: targets are written only once the value is valid. */
typedef union parsed_value {
    const char *text;
    int64_t number;
    log_level level;
} parsed_value;

static bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

/* Reads the digits at *cursor into a magnitude, advancing past them. Fails on no digits or
 * on a magnitude above limit. Hand-written rather than strtoll, which skips leading spaces,
 * accepts "0x" prefixes under some bases and reports overflow through errno. */
static bool parse_digits(const char **cursor, uint64_t limit, uint64_t *out) {
    const char *p = *cursor;
    uint64_t value = 0;
    if (!is_digit(*p))
        return false;
    for (; is_digit(*p); p++) {
        uint64_t digit = (uint64_t)(*p - '0');
        if (value > (limit - digit) / 10)
            return false;
        value = value * 10 + digit;
    }
    *cursor = p;
    *out = value;
    return true;
}

int config_parse_int(const char *text, int64_t *out) {
    if (text == NULL)
        return 0;
    bool negative = *text == '-';
    if (*text == '-' || *text == '+')
        text++;
    /* INT64_MIN has no positive counterpart, so the limit depends on the sign. */
    uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t magnitude;
    if (!parse_digits(&text, limit, &magnitude) || *text != '\0')
        return 0;
    if (out != NULL)
        *out = negative ? -(int64_t)(magnitude - 1) - 1 : (int64_t)magnitude;
    return 1;
}

/* Milliseconds per unit, or 0 for an unknown unit. Units are lower case only, so that "M"
 * (months?) and "m" (minutes) cannot be confused. */
static int64_t duration_unit_ms(const char *unit) {
    static const struct {
        const char *name;
        int64_t ms;
    } units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 60 * 60 * 1000}, {"d", 24 * 60 * 60 * 1000},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(unit, units[i].name) == 0)
            return units[i].ms;
    return 0;
}

int config_parse_duration_ms(const char *text, int64_t *out_ms) {
    if (text == NULL)
        return 0;
    uint64_t count;
    if (!parse_digits(&text, INT64_MAX, &count))
        return 0;
    int64_t result;
    if (*text == '\0') {
        /* A bare number is ambiguous (seconds? milliseconds?) unless it is zero. */
        if (count != 0)
            return 0;
        result = 0;
    } else {
        int64_t unit_ms = duration_unit_ms(text);
        if (unit_ms == 0 || count > (uint64_t)(INT64_MAX / unit_ms))
            return 0;
        result = (int64_t)count * unit_ms;
    }
    if (out_ms != NULL)
        *out_ms = result;
    return 1;
}

static bool parse_bool(const char *text, int64_t *out) {
    static const struct {
        const char *name;
        int64_t value;
    } names[] = {
        {"true", 1}, {"false", 0}, {"1", 1}, {"0", 0}, {"yes", 1}, {"no", 0}, {"on", 1}, {"off", 0},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(text, names[i].name) == 0) {
            *out = names[i].value;
            return true;
        }
    }
    return false;
}

/* Parses text as the entry's type; bounds are checked separately. */
static bool parse_value(const config_entry *entry, const char *text, parsed_value *out) {
    switch (entry->type) {
    case CONFIG_STRING: out->text = text; return true;
    case CONFIG_INT: return config_parse_int(text, &out->number);
    case CONFIG_PORT:
        return config_parse_int(text, &out->number) && out->number >= CONFIG_PORT_MIN &&
               out->number <= CONFIG_PORT_MAX;
    case CONFIG_DURATION: return config_parse_duration_ms(text, &out->number);
    case CONFIG_BOOL: return parse_bool(text, &out->number);
    case CONFIG_LOG_LEVEL: return log_level_parse(text, &out->level);
    }
    return false;
}

static bool has_bounds(const config_entry *entry) {
    return entry->max > entry->min || (entry->max == 0 && entry->min != 0);
}

static bool within_bounds(const config_entry *entry, int64_t value) {
    if (entry->max > entry->min)
        return value >= entry->min && value <= entry->max;
    if (entry->max == 0 && entry->min != 0)
        return value >= entry->min;
    return true;
}

static bool is_bounded_type(config_type type) {
    return type == CONFIG_INT || type == CONFIG_DURATION;
}

/* Writes ms in the largest unit that divides it exactly, as a person would write it. */
static void format_duration(int64_t ms, char *out, size_t size) {
    static const struct {
        const char *name;
        int64_t ms;
    } units[] = {
        {"d", 24 * 60 * 60 * 1000}, {"h", 60 * 60 * 1000}, {"m", 60 * 1000}, {"s", 1000},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (ms != 0 && ms % units[i].ms == 0) {
            snprintf(out, size, "%lld%s", (long long)(ms / units[i].ms), units[i].name);
            return;
        }
    }
    snprintf(out, size, "%lldms", (long long)ms);
}

static void describe_bounds(const config_entry *entry, const char *what, char *out, size_t size) {
    char low[32], high[32];
    if (entry->type == CONFIG_DURATION) {
        format_duration(entry->min, low, sizeof low);
        format_duration(entry->max, high, sizeof high);
    } else {
        snprintf(low, sizeof low, "%lld", (long long)entry->min);
        snprintf(high, sizeof high, "%lld", (long long)entry->max);
    }
    if (entry->max > entry->min)
        snprintf(out, size, "%s between %s and %s", what, low, high);
    else
        snprintf(out, size, "%s of at least %s", what, low);
}

/* What a valid value looks like, for the error message. A malformed duration gets examples
 * of the syntax; one out of bounds gets the bounds. */
static void describe_expected(const config_entry *entry, bool malformed, char *out, size_t size) {
    switch (entry->type) {
    case CONFIG_STRING: snprintf(out, size, "a string"); return;
    case CONFIG_INT:
        if (has_bounds(entry))
            describe_bounds(entry, "an integer", out, size);
        else
            snprintf(out, size, "an integer");
        return;
    case CONFIG_PORT:
        snprintf(out, size, "a port number between %d and %d", CONFIG_PORT_MIN, CONFIG_PORT_MAX);
        return;
    case CONFIG_DURATION:
        if (malformed || !has_bounds(entry))
            snprintf(out, size, "%s", DURATION_EXAMPLES);
        else
            describe_bounds(entry, "a duration", out, size);
        return;
    case CONFIG_BOOL: snprintf(out, size, "true/false, 1/0, yes/no or on/off"); return;
    case CONFIG_LOG_LEVEL: snprintf(out, size, "debug, info, warn or error"); return;
    }
    snprintf(out, size, "a supported configuration type (got %d)", (int)entry->type);
}

/* Quotes value for an error message: control bytes, quotes and backslashes are escaped so
 * the message stays on one readable line, and long values are cut and marked with "...". */
static void quote_value(const char *value, char *out, size_t size) {
    size_t length = 0;
    out[length++] = '"';
    size_t i;
    for (i = 0; value[i] != '\0' && i < CONFIG_QUOTED_VALUE_MAX; i++) {
        unsigned char byte = (unsigned char)value[i];
        if (byte == '"' || byte == '\\')
            length += (size_t)snprintf(out + length, size - length, "\\%c", byte);
        else if (byte < 0x20 || byte == 0x7F)
            length += (size_t)snprintf(out + length, size - length, "\\x%02x", byte);
        else
            out[length++] = (char)byte;
    }
    if (value[i] != '\0')
        length += (size_t)snprintf(out + length, size - length, "...");
    snprintf(out + length, size - length, "\"");
}

static void store_value(const config_entry *entry, const parsed_value *value) {
    if (entry->target == NULL)
        return;
    switch (entry->type) {
    case CONFIG_STRING: *(const char **)entry->target = value->text; return;
    case CONFIG_INT:
    case CONFIG_PORT:
    case CONFIG_DURATION:
    case CONFIG_BOOL: *(int64_t *)entry->target = value->number; return;
    case CONFIG_LOG_LEVEL: *(log_level *)entry->target = value->level; return;
    }
}

static status_code invalid_value(const config_entry *entry, const char *text, bool malformed,
                                 status *st) {
    char quoted[CONFIG_QUOTED_BUFFER];
    char expected[CONFIG_EXPECTED_MAX];
    quote_value(text, quoted, sizeof quoted);
    describe_expected(entry, malformed, expected, sizeof expected);
    return status_set(st, STATUS_INVALID_ARGUMENT, CONFIG_REASON_INVALID, "%s=%s: expected %s",
                      entry->name, quoted, expected);
}

static status_code missing_value(const config_entry *entry, status *st) {
    if (entry->help != NULL && entry->help[0] != '\0')
        return status_set(st, STATUS_INVALID_ARGUMENT, CONFIG_REASON_MISSING,
                          "%s is required (%s)", entry->name, entry->help);
    return status_set(st, STATUS_INVALID_ARGUMENT, CONFIG_REASON_MISSING, "%s is required",
                      entry->name);
}

static status_code load_entry(const config_entry *entry, status *st) {
    const char *text = getenv(entry->name);
    /* An empty variable counts as unset: manifests often template "NAME=" for "not given". */
    if (text == NULL || text[0] == '\0') {
        if (entry->default_value == NULL)
            return missing_value(entry, st);
        text = entry->default_value;
    }
    parsed_value value;
    if (!parse_value(entry, text, &value))
        return invalid_value(entry, text, true, st);
    if (is_bounded_type(entry->type) && !within_bounds(entry, value.number))
        return invalid_value(entry, text, false, st);
    store_value(entry, &value);
    return STATUS_OK;
}

status_code config_load(const config_entry *entries, size_t count, status *st) {
    status_clear(st);
    for (size_t i = 0; i < count; i++) {
        status_code code = load_entry(&entries[i], st);
        if (code != STATUS_OK)
            return code;
    }
    return STATUS_OK;
}

void config_print_help(const config_entry *entries, size_t count, void *file) {
    FILE *out = file != NULL ? file : stderr;
    for (size_t i = 0; i < count; i++) {
        const config_entry *entry = &entries[i];
        const char *help = entry->help != NULL ? entry->help : "";
        if (entry->default_value == NULL)
            fprintf(out, "  %s  (required)  %s\n", entry->name, help);
        else if (entry->default_value[0] == '\0')
            fprintf(out, "  %s  (default: \"\")  %s\n", entry->name, help);
        else
            fprintf(out, "  %s  (default: %s)  %s\n", entry->name, entry->default_value, help);
    }
}

void config_exit(const char *program, const status *st) {
    fprintf(stderr, "%s: configuration error: %s\n", program != NULL ? program : "service",
            st->message);
    exit(2);
}

void config_load_or_exit(const char *program, const config_entry *entries, size_t count) {
    status st;
    if (config_load(entries, count, &st) == STATUS_OK)
        return;
    fprintf(stderr, "%s: configuration error: %s\n", program != NULL ? program : "service",
            st.message);
    fprintf(stderr, "environment variables:\n");
    config_print_help(entries, count, stderr);
    exit(2);
}

/* Reads a password file whole; the newline an editor or `echo` adds is not part of it. */
static status_code read_password_file(const char *prefix, const char *path, char *out, size_t size,
                                      status *st) {
    FILE *file = fopen(path, "r");
    if (file == NULL)
        return status_set(st, STATUS_INVALID_ARGUMENT, CONFIG_REASON_INVALID,
                          "%s_PASSWORD_FILE %s cannot be read", prefix, path);
    size_t n = fread(out, 1, size, file);
    fclose(file);
    if (n == size)
        return status_set(st, STATUS_INVALID_ARGUMENT, CONFIG_REASON_INVALID,
                          "%s_PASSWORD_FILE %s is longer than %zu bytes", prefix, path, size - 1);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        n--;
    out[n] = '\0';
    if (n == 0)
        return status_set(st, STATUS_INVALID_ARGUMENT, CONFIG_REASON_INVALID,
                          "%s_PASSWORD_FILE %s is empty", prefix, path);
    return STATUS_OK;
}

status_code config_password(const char *prefix, const char *user, const char *password,
                            const char *password_file, char *out, size_t size, status *st) {
    bool has_user = user != NULL && user[0] != '\0';
    bool has_password = password != NULL && password[0] != '\0';
    bool has_file = password_file != NULL && password_file[0] != '\0';
    out[0] = '\0';
    if (has_password && has_file)
        return status_set(st, STATUS_INVALID_ARGUMENT, CONFIG_REASON_INVALID,
                          "set %s_PASSWORD or %s_PASSWORD_FILE, not both", prefix, prefix);
    if (!has_user && (has_password || has_file))
        return status_set(st, STATUS_INVALID_ARGUMENT, CONFIG_REASON_MISSING,
                          "a %s password is set but %s_USER is not", prefix, prefix);
    if (has_user && !has_password && !has_file)
        return status_set(st, STATUS_INVALID_ARGUMENT, CONFIG_REASON_MISSING,
                          "%s_USER is %s but neither %s_PASSWORD nor %s_PASSWORD_FILE is set",
                          prefix, user, prefix, prefix);
    if (has_file)
        return read_password_file(prefix, password_file, out, size, st);
    if (has_password && snprintf(out, size, "%s", password) >= (int)size)
        return status_set(st, STATUS_INVALID_ARGUMENT, CONFIG_REASON_INVALID,
                          "%s_PASSWORD is longer than %zu bytes", prefix, size - 1);
    return STATUS_OK;
}
