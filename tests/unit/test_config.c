/* test_config.c - the configuration table: every type's parser, bounds, required entries and
 * defaults, the error messages, the help table, and config_load_or_exit's exit status 2. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* ---- parsers ---- */

Test(config_parse_int, accepts_decimal_int64) {
    const struct {
        const char *text;
        int64_t value;
    } good[] = {
        {"0", 0},
        {"42", 42},
        {"-42", -42},
        {"+7", 7},
        {"007", 7},
        {"-0", 0},
        {"9223372036854775807", INT64_MAX},
        {"-9223372036854775808", INT64_MIN},
    };
    for (size_t i = 0; i < COUNT(good); i++) {
        int64_t value = -1;
        cr_assert_eq(config_parse_int(good[i].text, &value), 1, "rejected \"%s\"", good[i].text);
        cr_assert_eq(value, good[i].value, "\"%s\" gave %lld", good[i].text, (long long)value);
    }
}

Test(config_parse_int, rejects_malformed_and_overflow) {
    const char *bad[] = {
        "",
        " ",
        "-",
        "+",
        " 1",
        "1 ",
        "\t1",
        "1\n",
        "1a",
        "a1",
        "0x10",
        "1e3",
        "1.0",
        "1_000",
        "--1",
        "+-1",
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551616",
        "99999999999999999999999999999999",
        "\xef\xbc\x91", /* a full-width digit one */
    };
    for (size_t i = 0; i < COUNT(bad); i++) {
        int64_t value = 12345;
        cr_assert_eq(config_parse_int(bad[i], &value), 0, "accepted \"%s\"", bad[i]);
        cr_assert_eq(value, 12345, "wrote the output for \"%s\"", bad[i]);
    }
    cr_assert_eq(config_parse_int(NULL, NULL), 0);
}

Test(config_parse_duration_ms, accepts_every_unit) {
    const struct {
        const char *text;
        int64_t ms;
    } good[] = {
        {"0", 0},
        {"0ms", 0},
        {"0s", 0},
        {"1ms", 1},
        {"500ms", 500},
        {"30s", 30000},
        {"5m", 300000},
        {"2h", 7200000},
        {"14d", 1209600000},
        {"9223372036854775807ms", INT64_MAX},
        {"106751991167d", 106751991167LL * 86400000},
    };
    for (size_t i = 0; i < COUNT(good); i++) {
        int64_t ms = -1;
        cr_assert_eq(config_parse_duration_ms(good[i].text, &ms), 1, "rejected \"%s\"",
                     good[i].text);
        cr_assert_eq(ms, good[i].ms, "\"%s\" gave %lld", good[i].text, (long long)ms);
    }
}

Test(config_parse_duration_ms, rejects_malformed_negative_and_overflow) {
    const char *bad[] = {
        "",
        " ",
        "5",      /* no unit: seconds or milliseconds? */
        "-1s",
        "+1s",
        "-0",
        "1.5s",
        "10x",
        "10sec",
        "10 s",
        " 10s",
        "10s ",
        "10S",
        "10MS",
        "s",
        "ms",
        "1h30m",
        "0x10s",
        "9223372036854775808ms",
        "9223372036854775807s",
        "106751991168d",
        "99999999999999999999999999d",
    };
    for (size_t i = 0; i < COUNT(bad); i++) {
        int64_t ms = 12345;
        cr_assert_eq(config_parse_duration_ms(bad[i], &ms), 0, "accepted \"%s\"", bad[i]);
        cr_assert_eq(ms, 12345, "wrote the output for \"%s\"", bad[i]);
    }
    cr_assert_eq(config_parse_duration_ms(NULL, NULL), 0);
}

/* ---- loading: one entry at a time ---- */

/* Sets (or, with NULL, unsets) the variable and loads the single entry. */
static status_code load_one(const config_entry *entry, const char *value, status *st) {
    if (value != NULL)
        setenv(entry->name, value, 1);
    else
        unsetenv(entry->name);
    return config_load(entry, 1, st);
}

/* Loads a value expected to be rejected and checks the message. */
static void expect_rejected(const config_entry *entry, const char *value, const char *message) {
    status st;
    cr_assert_eq(load_one(entry, value, &st), STATUS_INVALID_ARGUMENT, "accepted \"%s\"", value);
    cr_assert_eq(st.code, STATUS_INVALID_ARGUMENT);
    if (message != NULL)
        cr_assert_str_eq(st.message, message);
}

Test(config_load, string_default_and_override) {
    const char *url = NULL;
    config_entry entry = {"TEST_NATS_URL", CONFIG_STRING, "nats://localhost:4222", "NATS URL",
                          &url, 0, 0};
    status st;
    cr_assert_eq(load_one(&entry, NULL, &st), STATUS_OK);
    cr_assert_str_eq(url, "nats://localhost:4222");
    cr_assert_eq(st.code, STATUS_OK);
    cr_assert_str_eq(st.message, "");

    cr_assert_eq(load_one(&entry, "nats://nats:4222", &st), STATUS_OK);
    cr_assert_str_eq(url, "nats://nats:4222");

    /* Empty means "not given", so the default applies. */
    cr_assert_eq(load_one(&entry, "", &st), STATUS_OK);
    cr_assert_str_eq(url, "nats://localhost:4222");

    /* Strings are taken as they are, spaces included. */
    cr_assert_eq(load_one(&entry, " spaced ", &st), STATUS_OK);
    cr_assert_str_eq(url, " spaced ");
}

Test(config_load, required_entry_missing_or_empty) {
    const char *url = "untouched";
    config_entry entry = {"NATS_URL", CONFIG_STRING, NULL, "NATS server URL", &url, 0, 0};
    expect_rejected(&entry, NULL, "NATS_URL is required (NATS server URL)");
    expect_rejected(&entry, "", "NATS_URL is required (NATS server URL)");
    cr_assert_str_eq(url, "untouched");

    status st;
    load_one(&entry, NULL, &st);
    cr_assert_str_eq(st.reason, "CONFIG_MISSING");

    config_entry no_help = {"TEST_SECRET", CONFIG_STRING, NULL, NULL, &url, 0, 0};
    expect_rejected(&no_help, NULL, "TEST_SECRET is required");

    cr_assert_eq(load_one(&entry, "nats://nats:4222", &st), STATUS_OK);
    cr_assert_str_eq(url, "nats://nats:4222");
}

Test(config_load, required_int_uses_the_value) {
    int64_t workers = -1;
    config_entry entry = {"TEST_WORKERS", CONFIG_INT, NULL, "worker threads", &workers, 0, 0};
    expect_rejected(&entry, NULL, "TEST_WORKERS is required (worker threads)");
    status st;
    cr_assert_eq(load_one(&entry, "4", &st), STATUS_OK);
    cr_assert_eq(workers, 4);
}

Test(config_load, int_without_bounds) {
    int64_t value = 0;
    config_entry entry = {"TEST_INT", CONFIG_INT, "10", "a number", &value, 0, 0};
    status st;
    cr_assert_eq(load_one(&entry, NULL, &st), STATUS_OK);
    cr_assert_eq(value, 10);
    cr_assert_eq(load_one(&entry, "-5", &st), STATUS_OK);
    cr_assert_eq(value, -5);
    cr_assert_eq(load_one(&entry, "9223372036854775807", &st), STATUS_OK);
    cr_assert_eq(value, INT64_MAX);

    value = 77;
    expect_rejected(&entry, "abc", "TEST_INT=\"abc\": expected an integer");
    expect_rejected(&entry, "99999999999999999999",
                    "TEST_INT=\"99999999999999999999\": expected an integer");
    expect_rejected(&entry, " 5", "TEST_INT=\" 5\": expected an integer");
    expect_rejected(&entry, "5 ", "TEST_INT=\"5 \": expected an integer");
    expect_rejected(&entry, "1.5", NULL);
    cr_assert_eq(value, 77, "a rejected value was stored");
    load_one(&entry, "abc", &st);
    cr_assert_str_eq(st.reason, "CONFIG_INVALID");
}

Test(config_load, int_with_range) {
    int64_t value = 0;
    config_entry entry = {"TEST_RANGE", CONFIG_INT, "5", "", &value, .min = 1, .max = 10};
    status st;
    cr_assert_eq(load_one(&entry, "1", &st), STATUS_OK);
    cr_assert_eq(value, 1);
    cr_assert_eq(load_one(&entry, "10", &st), STATUS_OK);
    cr_assert_eq(value, 10);
    expect_rejected(&entry, "0", "TEST_RANGE=\"0\": expected an integer between 1 and 10");
    expect_rejected(&entry, "11", "TEST_RANGE=\"11\": expected an integer between 1 and 10");
    expect_rejected(&entry, "-9223372036854775808", NULL);
    expect_rejected(&entry, "ten", "TEST_RANGE=\"ten\": expected an integer between 1 and 10");
    cr_assert_eq(value, 10);
}

Test(config_load, int_with_lower_bound_only) {
    int64_t value = 0;
    config_entry entry = {"TEST_LOWER", CONFIG_INT, "5", "", &value, .min = 5};
    status st;
    cr_assert_eq(load_one(&entry, "5", &st), STATUS_OK);
    cr_assert_eq(load_one(&entry, "9223372036854775807", &st), STATUS_OK);
    cr_assert_eq(value, INT64_MAX);
    expect_rejected(&entry, "4", "TEST_LOWER=\"4\": expected an integer of at least 5");

    /* With a negative min, max == 0 is greater than min: that is the range [min, 0]. */
    config_entry negative = {"TEST_NEGATIVE", CONFIG_INT, "0", "", &value, .min = -3};
    cr_assert_eq(load_one(&negative, "-3", &st), STATUS_OK);
    expect_rejected(&negative, "1", "TEST_NEGATIVE=\"1\": expected an integer between -3 and 0");
}

Test(config_load, int_bounds_ignored_when_not_a_range) {
    /* max < min (and max != 0) is not a range; the header only defines the two cases. */
    int64_t value = 0;
    config_entry entry = {"TEST_ODD_BOUNDS", CONFIG_INT, "0", "", &value, .min = 10, .max = 5};
    status st;
    cr_assert_eq(load_one(&entry, "100", &st), STATUS_OK);
    cr_assert_eq(load_one(&entry, "-100", &st), STATUS_OK);
    cr_assert_eq(value, -100);
}

Test(config_load, port) {
    int64_t port = 0;
    config_entry entry = {"GRPC_PORT", CONFIG_PORT, "50051", "gRPC listen port", &port, 0, 0};
    status st;
    cr_assert_eq(load_one(&entry, NULL, &st), STATUS_OK);
    cr_assert_eq(port, 50051);
    cr_assert_eq(load_one(&entry, "1", &st), STATUS_OK);
    cr_assert_eq(port, 1);
    cr_assert_eq(load_one(&entry, "65535", &st), STATUS_OK);
    cr_assert_eq(port, 65535);
    const char *expected = "expected a port number between 1 and 65535";
    const char *bad[] = {"70000", "65536", "0", "-1", "http", "80 ", "99999999999999999999"};
    for (size_t i = 0; i < COUNT(bad); i++) {
        char message[256];
        snprintf(message, sizeof message, "GRPC_PORT=\"%s\": %s", bad[i], expected);
        expect_rejected(&entry, bad[i], message);
    }
    cr_assert_eq(port, 65535);
}

Test(config_load, duration) {
    int64_t ms = 0;
    config_entry entry = {"LOAN_PERIOD", CONFIG_DURATION, "14d", "how long a loan lasts", &ms,
                          .min = 1};
    status st;
    cr_assert_eq(load_one(&entry, NULL, &st), STATUS_OK);
    cr_assert_eq(ms, 14LL * 24 * 3600 * 1000);
    cr_assert_eq(load_one(&entry, "500ms", &st), STATUS_OK);
    cr_assert_eq(ms, 500);
    cr_assert_eq(load_one(&entry, "1ms", &st), STATUS_OK);
    cr_assert_eq(ms, 1);

    const char *examples = "expected a duration like 500ms, 30s, 5m, 2h or 14d";
    const char *bad[] = {"abc", "1.5s", "10x", "-5s", "5", " 5s", "9223372036854775807s"};
    for (size_t i = 0; i < COUNT(bad); i++) {
        char message[256];
        snprintf(message, sizeof message, "LOAN_PERIOD=\"%s\": %s", bad[i], examples);
        expect_rejected(&entry, bad[i], message);
    }
    expect_rejected(&entry, "0", "LOAN_PERIOD=\"0\": expected a duration of at least 1ms");
    cr_assert_eq(ms, 1);
}

Test(config_load, duration_range_is_shown_in_units) {
    int64_t ms = 0;
    config_entry entry = {"TEST_TIMEOUT", CONFIG_DURATION, "5s", "", &ms, .min = 100,
                          .max = 2 * 3600 * 1000};
    status st;
    cr_assert_eq(load_one(&entry, "2h", &st), STATUS_OK);
    cr_assert_eq(ms, 7200000);
    expect_rejected(&entry, "121m",
                    "TEST_TIMEOUT=\"121m\": expected a duration between 100ms and 2h");
    expect_rejected(&entry, "99ms",
                    "TEST_TIMEOUT=\"99ms\": expected a duration between 100ms and 2h");

    config_entry minutes = {"TEST_MINUTES", CONFIG_DURATION, "5m", "", &ms, .min = 90 * 1000,
                            .max = 86400000};
    expect_rejected(&minutes, "1m", "TEST_MINUTES=\"1m\": expected a duration between 90s and 1d");
}

Test(config_load, bool_spellings) {
    int64_t flag = -1;
    config_entry entry = {"TEST_FLAG", CONFIG_BOOL, "false", "", &flag, 0, 0};
    status st;
    cr_assert_eq(load_one(&entry, NULL, &st), STATUS_OK);
    cr_assert_eq(flag, 0);
    const char *truthy[] = {"true", "TRUE", "True", "1", "yes", "YES", "on", "On"};
    for (size_t i = 0; i < COUNT(truthy); i++) {
        flag = -1;
        cr_assert_eq(load_one(&entry, truthy[i], &st), STATUS_OK, "rejected %s", truthy[i]);
        cr_assert_eq(flag, 1, "%s", truthy[i]);
    }
    const char *falsy[] = {"false", "FALSE", "0", "no", "No", "off", "OFF"};
    for (size_t i = 0; i < COUNT(falsy); i++) {
        flag = -1;
        cr_assert_eq(load_one(&entry, falsy[i], &st), STATUS_OK, "rejected %s", falsy[i]);
        cr_assert_eq(flag, 0, "%s", falsy[i]);
    }
    const char *bad[] = {"2", "tru", "yess", " true", "true ", "y", "enabled", "-1"};
    for (size_t i = 0; i < COUNT(bad); i++) {
        char message[256];
        snprintf(message, sizeof message,
                 "TEST_FLAG=\"%s\": expected true/false, 1/0, yes/no or on/off", bad[i]);
        expect_rejected(&entry, bad[i], message);
    }
}

Test(config_load, log_level) {
    log_level level = LOG_LEVEL_ERROR;
    config_entry entry = {"LOG_LEVEL", CONFIG_LOG_LEVEL, "info", "log level", &level, 0, 0};
    status st;
    cr_assert_eq(load_one(&entry, NULL, &st), STATUS_OK);
    cr_assert_eq(level, LOG_LEVEL_INFO);
    cr_assert_eq(load_one(&entry, "WARNING", &st), STATUS_OK);
    cr_assert_eq(level, LOG_LEVEL_WARN);
    cr_assert_eq(load_one(&entry, "Debug", &st), STATUS_OK);
    cr_assert_eq(level, LOG_LEVEL_DEBUG);
    expect_rejected(&entry, "verbose",
                    "LOG_LEVEL=\"verbose\": expected debug, info, warn or error");
    cr_assert_eq(level, LOG_LEVEL_DEBUG);
}

Test(config_load, bad_default_is_reported_like_a_bad_value) {
    int64_t port = 0;
    config_entry entry = {"TEST_DEFAULT_PORT", CONFIG_PORT, "none", "", &port, 0, 0};
    expect_rejected(&entry, NULL,
                    "TEST_DEFAULT_PORT=\"none\": expected a port number between 1 and 65535");
}

Test(config_load, long_values_are_cut_in_messages) {
    char value[201];
    memset(value, 'x', 200);
    value[200] = '\0';
    int64_t number = 0;
    config_entry entry = {"TEST_LONG", CONFIG_INT, "0", "", &number, 0, 0};
    char expected[256];
    snprintf(expected, sizeof expected, "TEST_LONG=\"%.64s...\": expected an integer", value);
    expect_rejected(&entry, value, expected);

    /* Exactly 64 characters is shown whole. */
    value[64] = '\0';
    snprintf(expected, sizeof expected, "TEST_LONG=\"%s\": expected an integer", value);
    expect_rejected(&entry, value, expected);
}

Test(config_load, control_bytes_and_quotes_are_escaped_in_messages) {
    int64_t number = 0;
    config_entry entry = {"TEST_ESCAPED", CONFIG_INT, "0", "", &number, 0, 0};
    expect_rejected(&entry, "1\n\"2\"\\",
                    "TEST_ESCAPED=\"1\\x0a\\\"2\\\"\\\\\": expected an integer");
}

Test(config_load, stops_at_first_error_and_leaves_later_targets) {
    const char *name = "before";
    int64_t port = 1111, workers = 2222;
    config_entry entries[] = {
        {"TEST_NAME", CONFIG_STRING, "catalog", "", &name, 0, 0},
        {"TEST_BAD_PORT", CONFIG_PORT, "50051", "", &port, 0, 0},
        {"TEST_WORKERS_LATER", CONFIG_INT, "8", "", &workers, 0, 0},
    };
    setenv("TEST_BAD_PORT", "0", 1);
    unsetenv("TEST_NAME");
    unsetenv("TEST_WORKERS_LATER");
    status st;
    cr_assert_eq(config_load(entries, COUNT(entries), &st), STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(st.message,
                     "TEST_BAD_PORT=\"0\": expected a port number between 1 and 65535");
    cr_assert_str_eq(name, "catalog");
    cr_assert_eq(port, 1111);
    cr_assert_eq(workers, 2222);

    setenv("TEST_BAD_PORT", "8080", 1);
    cr_assert_eq(config_load(entries, COUNT(entries), &st), STATUS_OK);
    cr_assert_eq(port, 8080);
    cr_assert_eq(workers, 8);
}

Test(config_load, empty_table_and_null_status) {
    cr_assert_eq(config_load(NULL, 0, NULL), STATUS_OK);
    int64_t port = 0;
    config_entry entry = {"TEST_NULL_STATUS", CONFIG_PORT, "1", "", &port, 0, 0};
    setenv("TEST_NULL_STATUS", "x", 1);
    cr_assert_eq(config_load(&entry, 1, NULL), STATUS_INVALID_ARGUMENT);
}

/* ---- help and exiting ---- */

static const char *help_program_url;
static const char *help_program_prefix;
static int64_t help_program_port;
static const config_entry help_entries[] = {
    {"GRPC_PORT", CONFIG_PORT, "50051", "gRPC listen port", &help_program_port, 0, 0},
    {"NATS_URL", CONFIG_STRING, NULL, "NATS server URL", &help_program_url, 0, 0},
    {"TEST_PREFIX", CONFIG_STRING, "", "key prefix", &help_program_prefix, 0, 0},
};

Test(config_help, one_line_per_entry) {
    char *text = NULL;
    size_t length = 0;
    FILE *file = open_memstream(&text, &length);
    cr_assert_not_null(file);
    config_print_help(help_entries, COUNT(help_entries), file);
    fclose(file);
    cr_assert_str_eq(text, "  GRPC_PORT  (default: 50051)  gRPC listen port\n"
                           "  NATS_URL  (required)  NATS server URL\n"
                           "  TEST_PREFIX  (default: \"\")  key prefix\n");
    free(text);
}

Test(config_load_or_exit, returns_when_valid) {
    setenv("NATS_URL", "nats://nats:4222", 1);
    setenv("GRPC_PORT", "6000", 1);
    config_load_or_exit("catalog", help_entries, COUNT(help_entries));
    cr_assert_eq(help_program_port, 6000);
    cr_assert_str_eq(help_program_url, "nats://nats:4222");
    cr_assert_str_eq(help_program_prefix, "");
}

/* Runs config_load_or_exit in a child and returns what it wrote to stderr; caller frees. */
static char *run_load_or_exit(int *exit_status) {
    int pipe_fds[2];
    cr_assert_eq(pipe(pipe_fds), 0);
    fflush(NULL);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) {
        dup2(pipe_fds[1], STDERR_FILENO);
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        config_load_or_exit("catalog", help_entries, COUNT(help_entries));
        _exit(99); /* only reached if it did not exit */
    }
    close(pipe_fds[1]);
    size_t capacity = 4096, length = 0;
    char *text = malloc(capacity);
    ssize_t got;
    while ((got = read(pipe_fds[0], text + length, capacity - length - 1)) > 0) {
        length += (size_t)got;
        if (capacity - length == 1)
            text = realloc(text, capacity *= 2);
    }
    close(pipe_fds[0]);
    text[length] = '\0';
    int wait_status;
    cr_assert_eq(waitpid(child, &wait_status, 0), child);
    cr_assert(WIFEXITED(wait_status), "child did not exit normally");
    *exit_status = WEXITSTATUS(wait_status);
    return text;
}

Test(config_load_or_exit, bad_value_exits_2_naming_the_variable) {
    setenv("NATS_URL", "nats://nats:4222", 1);
    setenv("GRPC_PORT", "70000", 1);
    int exit_status;
    char *text = run_load_or_exit(&exit_status);
    cr_assert_eq(exit_status, 2, "exit status %d, stderr: %s", exit_status, text);
    const char *first_line = "catalog: configuration error: GRPC_PORT=\"70000\": expected a port "
                             "number between 1 and 65535\n";
    cr_assert_eq(strncmp(text, first_line, strlen(first_line)), 0, "stderr: %s", text);
    cr_assert_not_null(strstr(text, "  NATS_URL  (required)  NATS server URL\n"), "%s", text);
    free(text);
}

Test(config_load_or_exit, missing_required_exits_2) {
    unsetenv("NATS_URL");
    unsetenv("GRPC_PORT");
    int exit_status;
    char *text = run_load_or_exit(&exit_status);
    cr_assert_eq(exit_status, 2);
    cr_assert_not_null(
        strstr(text, "catalog: configuration error: NATS_URL is required (NATS server URL)\n"),
        "stderr: %s", text);
    free(text);
}

/* --- credentials ------------------------------------------------------------------------------ */

static status_code password_of(const char *user, const char *password, const char *file, char *out,
                               status *st) {
    return config_password("NATS", user, password, file, out, 64, st);
}

Test(config_password, none_at_all_is_no_credentials) {
    char out[64] = "x";
    status st;
    cr_assert_eq(password_of("", "", "", out, &st), STATUS_OK);
    cr_assert_str_empty(out);
}

Test(config_password, from_the_environment_or_a_file_without_its_newline) {
    char out[64], path[] = "/tmp/test-config-password-XXXXXX";
    status st;
    cr_assert_eq(password_of("catalog", "s3cret", "", out, &st), STATUS_OK);
    cr_assert_str_eq(out, "s3cret");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "from-file\n", 10), 10);
    close(fd);
    cr_assert_eq(password_of("catalog", "", path, out, &st), STATUS_OK, "%s", st.message);
    cr_assert_str_eq(out, "from-file");
    unlink(path);
}

Test(config_password, incomplete_or_conflicting_settings_are_named) {
    char out[64];
    status st;
    cr_assert_eq(password_of("catalog", "", "", out, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(st.message, "NATS_USER is catalog but neither NATS_PASSWORD nor NATS_PASSWORD_FILE is set");
    cr_assert_eq(password_of("", "s3cret", "", out, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(st.message, "a NATS password is set but NATS_USER is not");
    cr_assert_eq(password_of("catalog", "s3cret", "/etc/hostname", out, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(st.message, "set NATS_PASSWORD or NATS_PASSWORD_FILE, not both");
    cr_assert_eq(password_of("catalog", "", "/nonexistent/password", out, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(st.message, "NATS_PASSWORD_FILE /nonexistent/password cannot be read");
}
