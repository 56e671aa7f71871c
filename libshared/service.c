/* service.c - the shared main(): start in order, drain and stop in reverse order. */
#include "service.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_descriptor.h"
#include "auth.h"

static service_settings settings;

static const config_entry common_config[] = {
    {"GRPC_PORT", CONFIG_PORT, NULL, "gRPC listen port", &settings.grpc_port, 0, 0},
    {"LOG_LEVEL", CONFIG_LOG_LEVEL, "info", "debug, info, warn or error", &settings.log_level, 0, 0},
    {"JWT_PUBLIC_KEY_FILE", CONFIG_STRING, NULL,
     "PEM public key (RSA for RS256, EC P-256 for ES256) that verifies bearer tokens",
     &settings.jwt_public_key_file, 0, 0},
    {"JWT_ISSUER", CONFIG_STRING, "library", "required iss claim", &settings.jwt_issuer, 0, 0},
    {"JWT_AUDIENCE", CONFIG_STRING, "library-api", "required aud claim", &settings.jwt_audience,
     0, 0},
    {"JWT_LEEWAY", CONFIG_DURATION, "30s", "clock skew allowed for exp and nbf",
     &settings.jwt_leeway_ms, 0, 300000},
    {"NATS_URL", CONFIG_STRING, NULL, "NATS server URL, e.g. nats://nats:4222", &settings.nats_url,
     0, 0},
    {"NATS_TIMEOUT", CONFIG_DURATION, "2s", "timeout of one JetStream request",
     &settings.nats_timeout_ms, 10, 60000},
    {"NATS_CONNECT_TIMEOUT", CONFIG_DURATION, "30s", "how long to keep trying NATS at start",
     &settings.nats_connect_timeout_ms, 0, 600000},
    {"NATS_REPLICAS", CONFIG_INT, "1", "replicas of streams and buckets this service creates",
     &settings.nats_replicas, 1, 5},
    {"EVENT_ACK_WAIT", CONFIG_DURATION, "10s",
     "how long an event may stay unacknowledged before it is delivered again",
     &settings.event_ack_wait_ms, 500, 3600000},
    {"MAX_IN_FLIGHT", CONFIG_INT, "256",
     "calls queued or running at once; more are refused with RESOURCE_EXHAUSTED",
     &settings.max_in_flight, 1, 100000},
    {"WORKER_THREADS", CONFIG_INT, "16", "threads that run handlers", &settings.worker_threads, 1,
     1024},
    {"DRAIN_GRACE", CONFIG_DURATION, "10s", "time calls in flight get to finish on SIGTERM",
     &settings.drain_grace_ms, 1, 3600000},
    {"RETRY_PUSHBACK", CONFIG_DURATION, "100ms", "grpc-retry-pushback-ms sent with a shed call",
     &settings.retry_pushback_ms, 1, 60000},
};
enum { COMMON_CONFIG_COUNT = sizeof common_config / sizeof common_config[0] };

static void print_help(const service_definition *definition) {
    printf("usage: %s [--help]\n", definition->name);
    for (size_t i = 0; i < definition->command_count; i++)
        printf("       %s %-12s %s\n", definition->name, definition->commands[i].option,
               definition->commands[i].help);
    printf("Configuration comes from the environment:\n");
    config_print_help(common_config, COMMON_CONFIG_COUNT, stdout);
    if (definition->config_count)
        config_print_help(definition->config, definition->config_count, stdout);
}

static void load_config(const service_definition *definition) {
    /* GRPC_PORT defaults per service: the table's default is filled in here. */
    config_entry common[COMMON_CONFIG_COUNT];
    memcpy(common, common_config, sizeof common);
    common[0].default_value = definition->default_grpc_port;
    config_load_or_exit(definition->name, common, COMMON_CONFIG_COUNT);
    if (definition->config_count)
        config_load_or_exit(definition->name, definition->config, definition->config_count);
}

static int run(const service_definition *definition) {
    status st;
    status_clear(&st);
    auth_verifier *verifier = NULL;
    rpc_server *server = NULL;
    nats_connection *nats = NULL;
    void *state = NULL;
    bool started = false;
    int exit_status = 1;

    char listen_address[32];
    snprintf(listen_address, sizeof listen_address, "0.0.0.0:%lld", (long long)settings.grpc_port);
    char domain[64];
    snprintf(domain, sizeof domain, "%s.library", definition->name);
    rpc_server_options options = {
        .listen_address = listen_address,
        .error_domain = domain,
        .max_in_flight = (int)settings.max_in_flight,
        .worker_threads = (int)settings.worker_threads,
        .drain_grace_ms = settings.drain_grace_ms,
        .retry_pushback_ms = (int)settings.retry_pushback_ms,
        .descriptor_set = library_api_descriptor_set,
        .descriptor_set_size = library_api_descriptor_set_size,
    };
    if (auth_verifier_create(settings.jwt_public_key_file, settings.jwt_issuer,
                             settings.jwt_audience, settings.jwt_leeway_ms / 1000, &verifier,
                             &st) != STATUS_OK)
        goto done;
    options.verifier = verifier;
    if (rpc_server_create(&options, &server, &st) != STATUS_OK)
        goto done;
    nats_connection_options nats_options = {
        .url = settings.nats_url,
        .client_name = definition->name,
        .health = rpc_server_health(server),
        .connect_timeout_ms = settings.nats_connect_timeout_ms,
        .request_timeout_ms = settings.nats_timeout_ms,
    };
    if (nats_connection_open(&nats_options, &nats, &st) != STATUS_OK)
        goto done;
    service_context context = {.settings = &settings, .server = server, .nats = nats,
                               .health = rpc_server_health(server)};
    if (definition->start(&context, &state, &st) != STATUS_OK)
        goto done;
    started = true;
    if (rpc_server_start(server, &st) != STATUS_OK)
        goto done;
    LOG_INFO("%s serving gRPC on port %d", definition->name, rpc_server_port(server));

    int signal_number = rpc_wait_for_signal(NULL, NULL);
    LOG_INFO("received %s; draining", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
    rpc_server_shutdown(server);
    exit_status = 0;

done:
    if (exit_status != 0)
        LOG_ERROR("%s could not start: %s", definition->name, st.message);
    if (started && definition->stop)
        definition->stop(state);
    nats_connection_close(nats);
    rpc_server_destroy(server);
    auth_verifier_destroy(verifier);
    if (exit_status == 0)
        LOG_INFO("%s stopped", definition->name);
    return exit_status;
}

/* Runs a one-shot command with the configuration and a NATS connection. */
static int run_command(const service_definition *definition, const service_command *command) {
    status st;
    status_clear(&st);
    nats_connection *nats = NULL;
    nats_connection_options nats_options = {
        .url = settings.nats_url,
        .client_name = definition->name,
        .connect_timeout_ms = settings.nats_connect_timeout_ms,
        .request_timeout_ms = settings.nats_timeout_ms,
    };
    if (nats_connection_open(&nats_options, &nats, &st) != STATUS_OK) {
        LOG_ERROR("%s %s: %s", definition->name, command->option, st.message);
        return 1;
    }
    service_context context = {.settings = &settings, .nats = nats};
    int exit_status = command->run(&context);
    nats_connection_close(nats);
    return exit_status;
}

int service_main(const service_definition *definition, int argc, char **argv) {
    const service_command *command = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_help(definition);
            return 0;
        }
        for (size_t c = 0; c < definition->command_count && command == NULL; c++)
            if (i == 1 && strcmp(argv[i], definition->commands[c].option) == 0)
                command = &definition->commands[c];
        if (command == NULL || i > 1) {
            fprintf(stderr, "%s: unknown argument %s (try --help)\n", definition->name, argv[i]);
            return 2;
        }
    }
    if (command == NULL) /* the server waits for signals; a command just dies of them */
        rpc_block_signals();
    load_config(definition);
    log_init(definition->name, settings.log_level);
    return command ? run_command(definition, command) : run(definition);
}
