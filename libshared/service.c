/* service.c - the shared main(): start in order, drain and stop in reverse order. */
#include "service.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api_descriptor.h"
#include "auth.h"
#include "builtins.h"
#include "metrics.h"
#include "timestamp.h"

static service_settings settings;
/* NATS_PASSWORD, or the content of NATS_PASSWORD_FILE */
static char nats_password[512];

static const config_entry common_config[] = {
    {"GRPC_PORT", CONFIG_PORT, NULL, "gRPC listen port", &settings.grpc_port, 0, 0},
    {"METRICS_PORT", CONFIG_INT, NULL, "Prometheus /metrics HTTP port; 0 turns it off",
     &settings.metrics_port, 0, 65535},
    {"LOG_LEVEL", CONFIG_LOG_LEVEL, "info", "debug, info, warn or error", &settings.log_level, 0, 0},
    {"LOG_LEVEL_FILE", CONFIG_STRING, "",
     "a file holding the log level (a mounted ConfigMap key); read at start, on SIGHUP and "
     "every 2 s, and wins over LOG_LEVEL",
     &settings.log_level_file, 0, 0},
    {"JWT_PUBLIC_KEY_FILE", CONFIG_STRING, NULL,
     "PEM public key (RSA for RS256, EC P-256 for ES256) that verifies bearer tokens, or a "
     "directory of them named <kid>.pem (a token's kid picks its key); re-read when the files "
     "change and on SIGHUP",
     &settings.jwt_public_key_file, 0, 0},
    {"JWT_ISSUER", CONFIG_STRING, "library", "required iss claim", &settings.jwt_issuer, 0, 0},
    {"JWT_AUDIENCE", CONFIG_STRING, "library-api", "required aud claim", &settings.jwt_audience,
     0, 0},
    {"JWT_LEEWAY", CONFIG_DURATION, "30s", "clock skew allowed for exp and nbf",
     &settings.jwt_leeway_ms, 0, 300000},
    {"NATS_URL", CONFIG_STRING, NULL,
     "NATS server URL, or a cluster's URLs separated by commas, e.g. nats://nats:4222",
     &settings.nats_url, 0, 0},
    {"NATS_USER", CONFIG_STRING, "", "user to authenticate to NATS as (\"\": none)",
     &settings.nats_user, 0, 0},
    {"NATS_PASSWORD", CONFIG_STRING, "", "NATS_USER's password (or NATS_PASSWORD_FILE)",
     &settings.nats_password, 0, 0},
    {"NATS_PASSWORD_FILE", CONFIG_STRING, "",
     "file holding NATS_USER's password, e.g. a mounted Secret", &settings.nats_password_file, 0, 0},
    {"NATS_TLS_CA_FILE", CONFIG_STRING, "",
     "CA certificate (PEM) that signed NATS's; set: TLS to NATS, \"\": plain TCP",
     &settings.nats_tls_ca_file, 0, 0},
    {"NATS_TIMEOUT", CONFIG_DURATION, "2s", "timeout of one JetStream request",
     &settings.nats_timeout_ms, 10, 60000},
    {"NATS_CONNECT_TIMEOUT", CONFIG_DURATION, "30s", "how long to keep trying NATS at start",
     &settings.nats_connect_timeout_ms, 100, 600000},
    {"NATS_REPLICAS", CONFIG_INT, "1", "replicas of streams and buckets this service creates",
     &settings.nats_replicas, 1, 5},
    {"EVENT_ACK_WAIT", CONFIG_DURATION, "10s",
     "how long an event may stay unacknowledged before it is delivered again",
     &settings.event_ack_wait_ms, 500, 3600000},
    {"EVENT_WORKERS", CONFIG_INT, "8", "threads that handle the events of one fetched batch at once",
     &settings.event_workers, 1, 256},
    {"MAX_IN_FLIGHT", CONFIG_INT, "256",
     "calls queued or running at once; more are refused with RESOURCE_EXHAUSTED",
     &settings.max_in_flight, 1, 100000},
    {"MAX_PUBLIC_STREAMS", CONFIG_INT, "256",
     "health Watch and reflection streams (no token needed) open at once; more are refused "
     "with RESOURCE_EXHAUSTED",
     &settings.max_public_streams, 1, 100000},
    {"MAX_PUBLIC_STREAMS_PER_CONNECTION", CONFIG_INT, "64",
     "the same per client connection (behind a proxy, per connection of the proxy)",
     &settings.max_public_streams_per_connection, 1, 100000},
    {"WRITE_RATE", CONFIG_INT, "5",
     "writes (borrow, return, ...) one user may make per second on one replica; more are "
     "refused with RESOURCE_EXHAUSTED (RATE_LIMITED); administrators are not limited; 0: no limit",
     &settings.write_rate, 0, 100000},
    {"WRITE_BURST", CONFIG_INT, "20", "writes one user may make at once after a pause",
     &settings.write_burst, 1, 100000},
    {"WORKER_THREADS", CONFIG_INT, "16", "threads that run handlers", &settings.worker_threads, 1,
     1024},
    {"DRAIN_GRACE", CONFIG_DURATION, "10s", "time calls in flight get to finish on SIGTERM",
     &settings.drain_grace_ms, 1, 3600000},
    {"RETRY_PUSHBACK", CONFIG_DURATION, "100ms", "grpc-retry-pushback-ms sent with a shed call",
     &settings.retry_pushback_ms, 1, 60000},
    {"GRPC_KEEPALIVE", CONFIG_DURATION, "1m",
     "how often a connection with a call open is pinged",
     &settings.grpc_keepalive_ms, 1000, 7200000},
    {"GRPC_KEEPALIVE_TIMEOUT", CONFIG_DURATION, "20s",
     "a connection whose ping goes unanswered this long is closed and its calls cancelled",
     &settings.grpc_keepalive_timeout_ms, 1000, 600000},
};
enum { COMMON_CONFIG_COUNT = sizeof common_config / sizeof common_config[0] };

/* The common table with this service's own defaults (GRPC_PORT, METRICS_PORT) filled in. */
static void common_table(const service_definition *definition, config_entry out[]) {
    memcpy(out, common_config, sizeof common_config);
    out[0].default_value = definition->default_grpc_port;
    out[1].default_value = definition->default_metrics_port ? definition->default_metrics_port : "0";
}

static void print_help(const service_definition *definition) {
    printf("usage: %s [--help]\n", definition->name);
    for (size_t i = 0; i < definition->command_count; i++)
        printf("       %s %-12s %s\n", definition->name, definition->commands[i].option,
               definition->commands[i].help);
    printf("Configuration comes from the environment:\n");
    config_entry common[COMMON_CONFIG_COUNT];
    common_table(definition, common);
    config_print_help(common, COMMON_CONFIG_COUNT, stdout);
    if (definition->config_count)
        config_print_help(definition->config, definition->config_count, stdout);
}

static void load_config(const service_definition *definition) {
    config_entry common[COMMON_CONFIG_COUNT];
    common_table(definition, common);
    config_load_or_exit(definition->name, common, COMMON_CONFIG_COUNT);
    if (definition->config_count)
        config_load_or_exit(definition->name, definition->config, definition->config_count);
    status st;
    if (config_password("NATS", settings.nats_user, settings.nats_password,
                        settings.nats_password_file, nats_password, sizeof nats_password,
                        &st) != STATUS_OK)
        config_exit(definition->name, &st);
    if (definition->configure != NULL && definition->configure(&st) != STATUS_OK)
        config_exit(definition->name, &st);
}

/* --- signals ---------------------------------------------------------------------- */

static void signal_set(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

void service_block_signals(void) {
    sigset_t set;
    signal_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int service_wait_for_signal(void (*on_hangup)(void *arg), void *arg) {
    sigset_t set;
    signal_set(&set);
    for (;;) {
        int signal_number = 0;
        if (sigwait(&set, &signal_number) != 0)
            continue;
        if (signal_number == SIGHUP) {
            if (on_hangup)
                on_hangup(arg);
            continue;
        }
        return signal_number;
    }
}

/* --- the log level from a file ------------------------------------------------------------- */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
    char last_text[64]; /* the file's last content, so a bad value is reported once */
} level_watch = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

/* Reads LOG_LEVEL_FILE and applies its level if it is valid and new. */
static void log_level_file_apply(void) {
    if (settings.log_level_file == NULL || settings.log_level_file[0] == '\0')
        return;
    char text[64] = "";
    FILE *file = fopen(settings.log_level_file, "r");
    if (file == NULL) {
        if (strcmp(level_watch.last_text, "<unreadable>") != 0)
            LOG_WARN("cannot read LOG_LEVEL_FILE %s; keeping level %s", settings.log_level_file,
                     log_level_name(log_get_level()));
        snprintf(level_watch.last_text, sizeof level_watch.last_text, "<unreadable>");
        return;
    }
    size_t n = fread(text, 1, sizeof text - 1, file);
    fclose(file);
    text[n] = '\0';
    while (n > 0 && strchr(" \t\r\n", text[n - 1]))
        text[--n] = '\0';
    bool seen = strcmp(text, level_watch.last_text) == 0;
    snprintf(level_watch.last_text, sizeof level_watch.last_text, "%s", text);
    log_level level;
    if (!log_level_parse(text, &level)) {
        if (!seen)
            LOG_WARN("LOG_LEVEL_FILE %s says \"%s\", which is not debug, info, warn or error; "
                     "keeping level %s", settings.log_level_file, text, log_level_name(log_get_level()));
        return;
    }
    log_level old = log_get_level();
    if (level == old)
        return;
    /* said at the more verbose of the two levels, so the line shows either way */
    if (level < old)
        log_set_level(level);
    log_write(level < old ? level : old, "log level is now %s (from %s)", log_level_name(level),
              settings.log_level_file);
    log_set_level(level);
}

static void *log_level_watch_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&level_watch.lock);
    while (!level_watch.stopping) {
        struct timespec until = timestamp_deadline(2000);
        pthread_cond_timedwait(&level_watch.wake, &level_watch.lock, &until);
        if (!level_watch.stopping)
            log_level_file_apply();
    }
    pthread_mutex_unlock(&level_watch.lock);
    return NULL;
}

/* SIGHUP: the log level file and the JWT keys are read again. */
static void on_hangup(void *arg) {
    auth_verifier *verifier = arg;
    pthread_mutex_lock(&level_watch.lock);
    log_level_file_apply();
    pthread_mutex_unlock(&level_watch.lock);
    status st;
    status_clear(&st);
    if (auth_verifier_reload(verifier, &st) != STATUS_OK)
        LOG_ERROR("SIGHUP: %s", st.message);
}

/* Refused credentials (NATS_AUTH, REDIS_AUTH) and settings a service checks itself are bad
 * settings too: retrying them only hides the mistake. */
static bool bad_setting(const status *st) {
    return (st->code == STATUS_FAILED_PRECONDITION && strcmp(st->reason, "NATS_REPLICAS") == 0) ||
           st->code == STATUS_UNAUTHENTICATED ||
           (st->code == STATUS_INVALID_ARGUMENT && strncmp(st->reason, "CONFIG_", 7) == 0);
}

static int run(const service_definition *definition) {
    status st;
    status_clear(&st);
    auth_verifier *verifier = NULL;
    metrics_server *metrics = NULL;
    rpc_server *server = NULL;
    rpc_builtins builtins = {0};
    pthread_t level_thread;
    bool level_thread_running = false;
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
        .max_public_streams = (int)settings.max_public_streams,
        .max_public_streams_per_connection = (int)settings.max_public_streams_per_connection,
        .write_rate = (double)settings.write_rate,
        .write_burst = (int)settings.write_burst,
        .worker_threads = (int)settings.worker_threads,
        .drain_grace_ms = settings.drain_grace_ms,
        .retry_pushback_ms = (int)settings.retry_pushback_ms,
        .keepalive_ms = (int)settings.grpc_keepalive_ms,
        .keepalive_timeout_ms = (int)settings.grpc_keepalive_timeout_ms,
    };
    if (settings.log_level_file[0] != '\0') {
        log_level_file_apply();
        level_thread_running = pthread_create(&level_thread, NULL, log_level_watch_main, NULL) == 0;
    }
    if (settings.metrics_port > 0 &&
        metrics_server_start((int)settings.metrics_port, &metrics, &st) != STATUS_OK)
        goto done;
    if (auth_verifier_create(settings.jwt_public_key_file, settings.jwt_issuer,
                             settings.jwt_audience, settings.jwt_leeway_ms / 1000, &verifier,
                             &st) != STATUS_OK)
        goto done;
    options.verifier = verifier;
    if (rpc_server_create(&options, &server, &st) != STATUS_OK ||
        rpc_builtins_add(server, library_api_descriptor_set, library_api_descriptor_set_size, &builtins, &st) !=
            STATUS_OK)
        goto done;
    nats_connection_options nats_options = {
        .url = settings.nats_url,
        .client_name = definition->name,
        .user = settings.nats_user,
        .password = nats_password,
        .tls_ca_file = settings.nats_tls_ca_file,
        .health = builtins.health,
        .connect_timeout_ms = settings.nats_connect_timeout_ms,
        .request_timeout_ms = settings.nats_timeout_ms,
    };
    if (nats_connection_open(&nats_options, &nats, &st) != STATUS_OK)
        goto done;
    service_context context = {.settings = &settings, .server = server, .nats = nats,
                               .health = builtins.health};
    if (definition->start(&context, &state, &st) != STATUS_OK)
        goto done;
    started = true;
    if (rpc_server_start(server, &st) != STATUS_OK)
        goto done;
    rpc_builtins_serving(&builtins, server);
    if (metrics)
        LOG_INFO("%s serving gRPC on port %d, metrics on http://0.0.0.0:%d/metrics", definition->name,
                 rpc_server_port(server), metrics_server_port(metrics));
    else
        LOG_INFO("%s serving gRPC on port %d", definition->name, rpc_server_port(server));

    int signal_number = service_wait_for_signal(on_hangup, verifier);
    LOG_INFO("received %s; draining", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
    rpc_builtins_draining(&builtins); /* NOT_SERVING first: probes see it while calls drain */
    rpc_server_shutdown(server);
    exit_status = 0;

done:
    if (exit_status != 0)
        LOG_ERROR("%s could not start: %s", definition->name, st.message);
    /* a setting the environment cannot satisfy is a bad setting: no restart will help */
    if (exit_status != 0 && bad_setting(&st))
        exit_status = 2;
    if (started && definition->stop)
        definition->stop(state);
    nats_connection_close(nats);
    rpc_server_destroy(server);
    rpc_builtins_destroy(&builtins);
    auth_verifier_destroy(verifier);
    metrics_server_stop(metrics);
    if (level_thread_running) {
        pthread_mutex_lock(&level_watch.lock);
        level_watch.stopping = true;
        pthread_cond_signal(&level_watch.wake);
        pthread_mutex_unlock(&level_watch.lock);
        pthread_join(level_thread, NULL);
    }
    if (exit_status == 0)
        LOG_INFO("%s stopped", definition->name);
    return exit_status;
}

/* A one-shot command whose work is done must end: if closing NATS (NATS.c joins its threads)
 * has not let it exit within COMMAND_EXIT_GRACE_S, the process ends with the command's status.
 * A `mypage --rebuild` that had printed its result hung there once under the sanitizers, and a
 * Kubernetes Job would then never complete. */
enum { COMMAND_EXIT_GRACE_S = 10 };

static void *exit_watchdog(void *arg) {
    int exit_status = (int)(intptr_t)arg;
    struct timespec pause = {.tv_sec = COMMAND_EXIT_GRACE_S};
    while (nanosleep(&pause, &pause) != 0) {
    }
    LOG_WARN("closing the NATS connection took more than %d s; exiting with status %d", COMMAND_EXIT_GRACE_S,
             exit_status);
    fflush(NULL);
    _exit(exit_status);
    return NULL;
}

/* Runs a one-shot command with the configuration and a NATS connection. */
static int run_command(const service_definition *definition, const service_command *command) {
    status st;
    status_clear(&st);
    nats_connection *nats = NULL;
    nats_connection_options nats_options = {
        .url = settings.nats_url,
        .client_name = definition->name,
        .user = settings.nats_user,
        .password = nats_password,
        .tls_ca_file = settings.nats_tls_ca_file,
        .connect_timeout_ms = settings.nats_connect_timeout_ms,
        .request_timeout_ms = settings.nats_timeout_ms,
    };
    if (nats_connection_open(&nats_options, &nats, &st) != STATUS_OK) {
        LOG_ERROR("%s %s: %s", definition->name, command->option, st.message);
        return bad_setting(&st) ? 2 : 1;
    }
    service_context context = {.settings = &settings, .nats = nats};
    int exit_status = command->run(&context);
    pthread_t watchdog;
    if (pthread_create(&watchdog, NULL, exit_watchdog, (void *)(intptr_t)exit_status) == 0)
        pthread_detach(watchdog);
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
        service_block_signals();
    load_config(definition);
    log_init(definition->name, settings.log_level);
    return command ? run_command(definition, command) : run(definition);
}
