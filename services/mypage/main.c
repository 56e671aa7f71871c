/* main.c - the mypage service: the CQRS read model of each user's loans, in Redis. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "handlers.h"
#include "projection.h"
#include "retention.h"
#include "service.h"

static struct {
    const char *redis_url, *redis_user, *redis_password, *redis_password_file;
    int64_t redis_timeout_ms, redis_check_interval_ms, max_watchers, max_watchers_per_user, retention_ms;
} settings;

static const config_entry mypage_config[] = {
    {"REDIS_URL", CONFIG_STRING, NULL, "Redis URL, redis://host:port[/db] (standalone, not Cluster)",
     &settings.redis_url, 0, 0},
    {"REDIS_USER", CONFIG_STRING, "",
     "Redis ACL user (\"\": the default user, with REDIS_PASSWORD as requirepass, or none)",
     &settings.redis_user, 0, 0},
    {"REDIS_PASSWORD", CONFIG_STRING, "", "the Redis password (or REDIS_PASSWORD_FILE)",
     &settings.redis_password, 0, 0},
    {"REDIS_PASSWORD_FILE", CONFIG_STRING, "", "file holding the Redis password, e.g. a mounted Secret",
     &settings.redis_password_file, 0, 0},
    {"REDIS_TIMEOUT", CONFIG_DURATION, "500ms", "connect and command timeout for Redis",
     &settings.redis_timeout_ms, 10, 60000},
    {"REDIS_CHECK_INTERVAL", CONFIG_DURATION, "1s", "how often Redis is pinged for health",
     &settings.redis_check_interval_ms, 100, 600000},
    {"MAX_WATCHERS", CONFIG_INT, "10000", "WatchMypage streams one server keeps open",
     &settings.max_watchers, 1, 1000000},
    {"MAX_WATCHERS_PER_USER", CONFIG_INT, "8",
     "WatchMypage streams on one user's page that one server keeps open (a reader's devices)",
     &settings.max_watchers_per_user, 1, 1000000},
    {"RETENTION", CONFIG_DURATION, "365d",
     "how long a returned or canceled loan stays on its page after it settled (\"0\": for ever)",
     &settings.retention_ms, 0, 36500LL * 24 * 60 * 60 * 1000},
};

/* The Redis login from the settings; a bad combination is a configuration error. */
static status_code redis_login_load(redis_login *login, status *st) {
    static char password[512];
    /* requirepass has no user: a password alone is allowed, for Redis's "default" user */
    bool has_password = settings.redis_password[0] || settings.redis_password_file[0];
    const char *user = settings.redis_user[0] || !has_password ? settings.redis_user : "default";
    status_code code = config_password("REDIS", user, settings.redis_password,
                                       settings.redis_password_file, password, sizeof password, st);
    *login = (redis_login){.user = settings.redis_user, .password = password};
    return code;
}

/* Credentials Redis refuses stop the start (a bad setting, exit 2); Redis merely down does
 * not: the service starts NOT_SERVING and keeps trying. */
static status_code redis_check_login(page_store *store, status *st) {
    status ping;
    status_clear(&ping);
    if (page_store_ping(store, &ping) != STATUS_OK && strcmp(ping.reason, "REDIS_AUTH") == 0)
        return status_set(st, STATUS_UNAUTHENTICATED, "REDIS_AUTH", "%s", ping.message);
    return STATUS_OK;
}

typedef struct mypage_service {
    page_store *store;
    projection *projection;
    retention_sweeper *sweeper;
    mypage_handlers handlers;
    bool handlers_ready;
    pthread_t checker;
    bool checker_running;
    atomic_bool stopping;
} mypage_service;

/* Pings Redis so health follows it even when no call or event touches it. */
static void *redis_checker_main(void *arg) {
    mypage_service *m = arg;
    while (!atomic_load(&m->stopping)) {
        status st;
        status_clear(&st);
        page_store_ping(m->store, &st);
        for (int64_t slept = 0; slept < settings.redis_check_interval_ms && !atomic_load(&m->stopping);
             slept += 50) {
            struct timespec pause = {.tv_sec = 0, .tv_nsec = 50 * 1000000};
            nanosleep(&pause, NULL);
        }
    }
    return NULL;
}

static void mypage_stop(void *state) {
    mypage_service *m = state;
    if (m == NULL)
        return;
    atomic_store(&m->stopping, true);
    if (m->checker_running)
        pthread_join(m->checker, NULL);
    retention_stop(m->sweeper);
    projection_stop(m->projection);
    if (m->handlers_ready)
        mypage_handlers_destroy(&m->handlers);
    page_store_close(m->store);
    free(m);
}

static status_code mypage_start(const service_context *context, void **state, status *st) {
    mypage_service *m = calloc(1, sizeof *m);
    if (m == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    atomic_init(&m->stopping, false);
    redis_login login;
    status_code code = redis_login_load(&login, st);
    if (code == STATUS_OK)
        code = events_ensure_stream(context->nats, (int)context->settings->nats_replicas, st);
    if (code == STATUS_OK)
        code = page_store_open(settings.redis_url, &login, settings.redis_timeout_ms, context->health,
                               &m->store, st);
    if (code == STATUS_OK)
        code = redis_check_login(m->store, st);
    if (code == STATUS_OK) {
        m->handlers.store = m->store;
        m->handlers.max_watchers = (int)settings.max_watchers;
        m->handlers.max_watchers_per_user = (int)settings.max_watchers_per_user;
        code = mypage_handlers_init(&m->handlers, context->nats, st);
        m->handlers_ready = code == STATUS_OK;
    }
    if (code == STATUS_OK)
        code = rpc_server_add_service(context->server, &m->handlers.service, st);
    if (code == STATUS_OK)
        code = projection_start(context->nats, m->store, context->settings->event_ack_wait_ms,
                                (int)context->settings->event_workers, &m->projection, st);
    if (code == STATUS_OK)
        code = retention_start(context->nats, m->store, settings.retention_ms, &m->sweeper, st);
    if (code == STATUS_OK) {
        if (pthread_create(&m->checker, NULL, redis_checker_main, m) == 0)
            m->checker_running = true;
        else
            code = status_set(st, STATUS_INTERNAL, "THREAD", "cannot start the Redis checker");
    }
    if (code != STATUS_OK) {
        mypage_stop(m);
        return code;
    }
    *state = m;
    return STATUS_OK;
}

/* mypage --rebuild: replays the event stream into fresh pages, then switches to them. */
static int mypage_rebuild(const service_context *context) {
    status st;
    status_clear(&st);
    page_store *store = NULL;
    uint64_t events = 0;
    redis_login login;
    status_code code = redis_login_load(&login, &st);
    if (code == STATUS_OK)
        code = page_store_open(settings.redis_url, &login, settings.redis_timeout_ms, NULL, &store, &st);
    if (code == STATUS_OK) {
        /* the replay leaves out what the live pages no longer show (page_store.h) */
        page_store_set_retention(store, settings.retention_ms);
        code = projection_rebuild(context->nats, store, &events, &st);
    }
    page_store_close(store);
    if (code != STATUS_OK) {
        LOG_ERROR("rebuild failed: %s", st.message);
        return st.code == STATUS_INVALID_ARGUMENT ? 2 : 1;
    }
    printf("mypage rebuilt from %llu events\n", (unsigned long long)events);
    return 0;
}

static const service_command mypage_commands[] = {
    {"--rebuild", "replay the event stream into fresh pages, switch to them, and exit", mypage_rebuild},
};

static const service_definition mypage_definition = {
    .name = "mypage",
    .default_grpc_port = "50053",
    .default_metrics_port = "9466",
    .config = mypage_config,
    .config_count = sizeof mypage_config / sizeof mypage_config[0],
    .start = mypage_start,
    .stop = mypage_stop,
    .commands = mypage_commands,
    .command_count = sizeof mypage_commands / sizeof mypage_commands[0],
};

int main(int argc, char **argv) {
    return service_main(&mypage_definition, argc, argv);
}
