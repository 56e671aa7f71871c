/* config.h - service configuration from the environment, declared as one table per service
 * and validated at start. A bad value stops the process with a clear message and exit code 2
 * (config_load_or_exit), so a misconfigured pod fails fast instead of misbehaving.
 *
 *   static int64_t port; static int64_t loan_period_ms; static const char *nats_url;
 *   static const config_entry entries[] = {
 *       {"GRPC_PORT", CONFIG_PORT, "50051", "gRPC listen port", &port, 0, 0},
 *       {"LOAN_PERIOD", CONFIG_DURATION, "14d", "how long a loan lasts", &loan_period_ms, 1, 0},
 *       {"NATS_URL", CONFIG_STRING, NULL, "NATS server URL (required)", &nats_url, 0, 0},
 *   };
 */
#ifndef LIBSHARED_CONFIG_H
#define LIBSHARED_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum config_type {
    CONFIG_STRING,    /* target: const char ** (points into the environment or the default) */
    CONFIG_INT,       /* target: int64_t *, decimal, checked against [min, max] when max > min */
    CONFIG_PORT,      /* target: int64_t *, 1..65535 */
    CONFIG_DURATION,  /* target: int64_t * in milliseconds; "500ms", "30s", "5m", "2h", "14d" */
    CONFIG_BOOL,      /* target: int64_t *, 0/1; "true/false/1/0/yes/no/on/off" */
    CONFIG_LOG_LEVEL, /* target: log_level *; see log_level_parse */
} config_type;

typedef struct config_entry {
    const char *name;          /* environment variable */
    config_type type;
    const char *default_value; /* NULL: required, missing is an error */
    const char *help;
    void *target;
    int64_t min, max;          /* inclusive bounds for INT and DURATION (ms) when max > min;
                                  min alone (max == 0) is a lower bound */
} config_entry;

/* Reads every entry from the environment (or its default) into its target. On the first bad
 * or missing value returns STATUS_INVALID_ARGUMENT with a message naming the variable, the
 * value and what is expected; targets of later entries are then untouched. */
status_code config_load(const config_entry *entries, size_t count, status *st);

/* config_load, and on error prints "<program>: configuration error: <message>" plus the
 * table's help to stderr and exits with status 2. */
void config_load_or_exit(const char *program, const config_entry *entries, size_t count);

/* Writes "  NAME  (default: X | required)  help" lines, for --help. An empty variable counts
 * as unset. */
void config_print_help(const config_entry *entries, size_t count, void *file /* FILE * */);

/* A client's credentials: a user and its password, given in the environment (<prefix>_PASSWORD)
 * or in a file (<prefix>_PASSWORD_FILE, e.g. a mounted Secret; trailing newlines are dropped),
 * never on the command line. No user and no password: no credentials (*password is "").
 * A user without a password, a password without a user, both password settings, or a file
 * that cannot be read or is empty: STATUS_INVALID_ARGUMENT naming the settings. */
status_code config_password(const char *prefix, const char *user, const char *password,
                            const char *password_file, char *out, size_t size, status *st);

/* Prints "<program>: configuration error: <message>" to stderr and exits with status 2. */
void config_exit(const char *program, const status *st);

/* Parsers, exposed for tests and other callers. Return 1 on success, 0 on malformed input. */
int config_parse_duration_ms(const char *text, int64_t *out_ms); /* 1 ok, 0 bad */
int config_parse_int(const char *text, int64_t *out);             /* 1 ok, 0 bad */

#endif
