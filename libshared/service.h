/* service.h - the main() every service shares: configuration (the common table plus the
 * service's own), logs, token verification, the gRPC server, the NATS connection, signals
 * and the graceful drain. A service supplies its name, its settings and a start function
 * that opens its stores and adds its gRPC services:
 *
 *   int main(int argc, char **argv) { return service_main(&catalog_definition, argc, argv); }
 */
#ifndef LIBSHARED_SERVICE_H
#define LIBSHARED_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "health.h"
#include "log.h"
#include "nats_connection.h"
#include "rpc_server.h"
#include "status.h"

/* Settings every service reads from the environment. */
typedef struct service_settings {
    int64_t grpc_port;
    int64_t metrics_port;
    log_level log_level;
    const char *log_level_file;
    const char *jwt_public_key_file;
    const char *jwt_issuer;
    const char *jwt_audience;
    int64_t jwt_leeway_ms;
    const char *nats_url;
    const char *nats_user, *nats_password, *nats_password_file, *nats_tls_ca_file;
    int64_t nats_timeout_ms;
    int64_t nats_connect_timeout_ms;
    int64_t nats_replicas;
    int64_t event_ack_wait_ms;
    int64_t event_workers;
    int64_t max_in_flight;
    int64_t max_public_streams;
    int64_t max_public_streams_per_connection;
    int64_t write_rate, write_burst;
    int64_t worker_threads;
    int64_t drain_grace_ms;
    int64_t retry_pushback_ms;
    int64_t grpc_keepalive_ms;
    int64_t grpc_keepalive_timeout_ms;
} service_settings;

typedef struct service_context {
    const service_settings *settings;
    rpc_server *server;
    nats_connection *nats;
    health *health;
} service_context;

/* A one-shot command of a service ("mypage --rebuild"): it runs instead of the server, with
 * the same configuration and the NATS connection open (context->server and ->health are
 * NULL), and returns the process exit status. */
typedef struct service_command {
    const char *option; /* "--rebuild" */
    const char *help;
    int (*run)(const service_context *context);
} service_command;

typedef struct service_definition {
    const char *name;              /* "catalog": logs, error domain, NATS client name */
    const char *default_grpc_port; /* "50051" */
    const char *default_metrics_port; /* "9464" */
    const config_entry *config;    /* the service's own settings (may be NULL) */
    size_t config_count;
    /* May be NULL. Called once the settings are read, before anything is opened or logged
     * to: checks what the table cannot (a file the settings name). An error stops the process
     * with its message and exit 2, as a bad setting does. */
    status_code (*configure)(status *st);
    /* Opens what the service needs and adds its gRPC services to context->server.
     * *state is passed back to stop. */
    status_code (*start)(const service_context *context, void **state, status *st);
    /* Called after the server has drained: stop consumers, free state. */
    void (*stop)(void *state);
    const service_command *commands; /* may be NULL */
    size_t command_count;
} service_definition;

/* Runs the service until SIGTERM or SIGINT, or the command named by argv[1]; returns the
 * process exit status (0 after a clean drain, 1 when it could not start, 2 for bad
 * configuration or an unknown argument). */
int service_main(const service_definition *definition, int argc, char **argv);

/* Blocks SIGTERM, SIGINT and SIGHUP in the calling thread; call first in main, before any
 * thread exists, so every thread inherits the mask and service_wait_for_signal sees them. */
void service_block_signals(void);
/* Waits for SIGTERM or SIGINT (returns it). SIGHUP calls on_hangup(arg) and keeps waiting. */
int service_wait_for_signal(void (*on_hangup)(void *arg), void *arg);

#endif
