/* fuzz_config.c - configuration values as an operator (or a bad manifest) writes them:
 * config_parse_int, config_parse_duration_ms, log_level_parse, and config_load over a table
 * with one entry of each type read from the environment, so the error messages that quote a
 * bad value are exercised too.
 *
 * Input: the value. */
#include <stdbool.h>

#include "config.h"
#include "fuzz.h"
#include "log.h"
#include "status.h"

#define VARIABLE "LIBRARY_FUZZ_VALUE"

static void parse_alone(const char *text) {
    int64_t number = 0;
    if (config_parse_int(text, &number)) {
        char again[32];
        snprintf(again, sizeof again, "%lld", (long long)number);
        int64_t reparsed = 0;
        FUZZ_CHECK(config_parse_int(again, &reparsed) && reparsed == number);
    }
    int64_t ms = -1;
    if (config_parse_duration_ms(text, &ms))
        FUZZ_CHECK(ms >= 0);
    log_level level;
    (void)log_level_parse(text, &level);
}

static void load(const char *text) {
    static int64_t integer, bounded, port, duration, bounded_duration, flag;
    static const char *string;
    static log_level level;
    const config_entry entries[] = {
        {VARIABLE, CONFIG_STRING, NULL, "a string", &string, 0, 0},
        {VARIABLE, CONFIG_INT, "1", "an integer", &integer, 0, 0},
        {VARIABLE, CONFIG_INT, "1", "a bounded integer", &bounded, -5, 100000},
        {VARIABLE, CONFIG_INT, "1", "an integer with a minimum", &bounded, 1, 0},
        {VARIABLE, CONFIG_PORT, "50051", "a port", &port, 0, 0},
        {VARIABLE, CONFIG_DURATION, "14d", "a duration", &duration, 0, 0},
        {VARIABLE, CONFIG_DURATION, "2s", "a bounded duration", &bounded_duration, 1, 86400000},
        {VARIABLE, CONFIG_BOOL, "false", "a flag", &flag, 0, 0},
        {VARIABLE, CONFIG_LOG_LEVEL, "info", "a log level", &level, 0, 0},
    };
    if (setenv(VARIABLE, text, 1) != 0)
        return;
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
        status st;
        status_code code = config_load(&entries[i], 1, &st);
        if (code == STATUS_OK)
            continue;
        FUZZ_CHECK(code == STATUS_INVALID_ARGUMENT);
        size_t length = strnlen(st.message, sizeof st.message);
        FUZZ_CHECK(length > 0 && length < sizeof st.message);
        FUZZ_CHECK(strncmp(st.message, VARIABLE, strlen(VARIABLE)) == 0);
    }
    unsetenv(VARIABLE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_string(data, size);
    parse_alone(text);
    load(text);
    free(text);
    return 0;
}
