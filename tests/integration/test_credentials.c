/* test_credentials.c - NATS and Redis want credentials, and each service may do only its own
 * part: real nats-server and redis-server started by the harness with the users of
 * charts/library/files/ (nats-users.conf, redis-mypage.acl), real service binaries. Credentials
 * that are refused stop a service at start with a log line saying which user was refused
 * (exit 2, as for any bad setting), well before the NATS connect budget would have run out. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"

static char dir[512];
static harness_process nats, redis;
static char nats_env[160], redis_env[160];

static void setup(void) {
    cr_assert(harness_temp_dir(dir, sizeof dir) != NULL);
    cr_assert(harness_keys_create(dir));
    cr_assert(harness_nats_start(dir, 0, &nats), "nats-server did not start: %s", nats.log_path);
    cr_assert(harness_redis_start(dir, 0, &redis), "redis-server did not start: %s", redis.log_path);
    snprintf(nats_env, sizeof nats_env, "NATS_URL=%s", nats.url);
    snprintf(redis_env, sizeof redis_env, "REDIS_URL=%s", redis.url);
}

static void teardown(void) {
    harness_process_stop(&redis, SIGTERM, 5000);
    harness_process_stop(&nats, SIGTERM, 5000);
}

TestSuite(credentials, .init = setup, .fini = teardown, .timeout = 120);

/* A file's text from a (the service's log), "" when unreadable. */
static char *file_text(arena *a, const char *path) {
    char command[700];
    snprintf(command, sizeof command, "cat '%s'", path);
    int code = 0;
    char *text = harness_command_output(a, command, &code);
    return text != NULL ? text : "";
}

/* Starts a service that must not start; asserts it exits with status 2 well within the connect
 * budget (60 s here: a retry would take that long) and that its log says `expected`. */
static void expect_refused_start(const char *service, const char *const *env, const char *expected) {
    harness_process process;
    cr_assert(harness_service_spawn(service, dir, env, &process));
    int64_t started = harness_now_ms();
    int code = harness_process_stop(&process, 0, 30000);
    int64_t took = harness_now_ms() - started;
    arena *a = arena_create(0);
    const char *log = file_text(a, process.log_path);
    cr_assert_eq(code, 2, "%s exited with %d after %lld ms (want 2, no retry); log:\n%s", service, code,
                 (long long)took, log);
    cr_assert(strstr(log, expected) != NULL, "%s's log does not say \"%s\":\n%s", service, expected, log);
    cr_log_info("%s refused in %lld ms: %s", service, (long long)took, expected);
    arena_destroy(a);
}

Test(credentials, wrong_nats_password_stops_the_service_at_once) {
    const char *env[] = {nats_env, "NATS_PASSWORD=not-the-password", "NATS_CONNECT_TIMEOUT=60s", NULL};
    expect_refused_start("catalog", env, "refused user 'catalog'");
}

Test(credentials, no_nats_credentials_are_refused) {
    const char *env[] = {nats_env, "NATS_USER=", "NATS_PASSWORD=", "NATS_CONNECT_TIMEOUT=60s",
                         "CATALOG_ADDR=127.0.0.1:1", NULL};
    expect_refused_start("lending", env, "refused a client without credentials");
}

Test(credentials, a_nats_user_without_a_password_is_a_configuration_error) {
    const char *env[] = {nats_env, "NATS_PASSWORD=", NULL};
    expect_refused_start("catalog", env,
                         "NATS_USER is catalog but neither NATS_PASSWORD nor NATS_PASSWORD_FILE is set");
}

Test(credentials, the_nats_password_can_come_from_a_file) {
    char path[600], setting[700];
    snprintf(path, sizeof path, "%s/catalog-nats-password", dir);
    FILE *file = fopen(path, "w");
    cr_assert_not_null(file);
    fprintf(file, "%s\n", harness_password("catalog")); /* the newline `echo` adds is not part of it */
    fclose(file);
    snprintf(setting, sizeof setting, "NATS_PASSWORD_FILE=%s", path);
    const char *env[] = {nats_env, "NATS_PASSWORD=", setting, NULL};
    harness_process catalog;
    cr_assert(harness_service_start("catalog", dir, env, &catalog), "catalog did not serve: %s",
              catalog.log_path);
    cr_assert_eq(harness_process_stop(&catalog, SIGTERM, 10000), 0);
}

/* --- NATS permissions ------------------------------------------------------------------------- */

typedef struct refusal {
    pthread_mutex_t lock;
    char text[512];
} refusal;

static void on_refused(natsConnection *nc, natsSubscription *subscription, natsStatus error, void *closure) {
    (void)subscription;
    (void)error;
    refusal *r = closure;
    const char *text = NULL;
    natsConnection_GetLastError(nc, &text);
    pthread_mutex_lock(&r->lock);
    snprintf(r->text, sizeof r->text, "%s", text ? text : "");
    pthread_mutex_unlock(&r->lock);
}

static natsConnection *connect_as(const char *user, refusal *r) {
    natsOptions *options = NULL;
    natsConnection *connection = NULL;
    cr_assert_eq(natsOptions_Create(&options), NATS_OK);
    natsOptions_SetURL(options, nats.url);
    natsOptions_SetUserInfo(options, user, harness_password(user));
    natsOptions_SetSecure(options, true);
    natsOptions_LoadCATrustedCertificates(options, harness_nats_ca_file());
    natsOptions_SetErrorHandler(options, on_refused, r);
    natsStatus s = natsConnection_Connect(&connection, options);
    natsOptions_Destroy(options);
    cr_assert_eq(s, NATS_OK, "cannot connect as %s: %s", user, natsStatus_GetText(s));
    return connection;
}

/* What the server said about a publish by user to subject ("" when it took it). */
static void server_answer(const char *user, const char *subject, char *out, size_t size) {
    refusal r = {.lock = PTHREAD_MUTEX_INITIALIZER};
    natsConnection *connection = connect_as(user, &r);
    cr_assert_eq(natsConnection_PublishString(connection, subject, "forged"), NATS_OK);
    natsConnection_FlushTimeout(connection, 2000);
    int64_t until = harness_now_ms() + 2000; /* the refusal comes after the flush's PONG */
    for (bool told = false; !told && harness_now_ms() < until; harness_sleep_ms(20)) {
        pthread_mutex_lock(&r.lock);
        told = r.text[0] != '\0';
        pthread_mutex_unlock(&r.lock);
    }
    natsConnection_Destroy(connection);
    pthread_mutex_lock(&r.lock);
    snprintf(out, size, "%s", r.text);
    pthread_mutex_unlock(&r.lock);
}

static void expect_refused(const char *user, const char *subject) {
    char answer[512], expected[300];
    server_answer(user, subject, answer, sizeof answer);
    snprintf(expected, sizeof expected, "Permissions Violation for Publish to \"%s\"", subject);
    cr_assert(strstr(answer, expected) != NULL, "%s published to %s; the server said \"%s\"", user, subject,
              answer);
}

Test(credentials, a_service_cannot_publish_what_another_service_owns) {
    expect_refused("mypage", "library.events.copy.reserved");
    expect_refused("mypage", "library.events.loan.requested");
    expect_refused("catalog", "library.events.loan.activated");
    expect_refused("catalog", "$KV.loans.forged");
    expect_refused("lending", "library.events.copy.reserved");
    expect_refused("lending", "$KV.books.forged");
    /* and each may publish its own */
    char answer[512];
    server_answer("catalog", "library.events.copy.reserved", answer, sizeof answer);
    cr_assert_str_empty(answer, "catalog may publish its own events; the server said \"%s\"", answer);
}

Test(credentials, the_event_stream_keeps_no_event_mypage_forged) {
    natsConnection *admin = NULL;
    jsCtx *js = NULL;
    cr_assert_eq(harness_nats_connect(&admin, nats.url), NATS_OK);
    cr_assert_eq(natsConnection_JetStream(&js, admin, NULL), NATS_OK);
    jsStreamConfig config;
    jsStreamConfig_Init(&config);
    const char *subjects[] = {"library.events.>"};
    config.Name = "LIBRARY";
    config.Subjects = subjects;
    config.SubjectsLen = 1;
    jsStreamInfo *info = NULL;
    cr_assert_eq(js_AddStream(&info, js, &config, NULL, NULL), NATS_OK);
    jsStreamInfo_Destroy(info);

    refusal r = {.lock = PTHREAD_MUTEX_INITIALIZER};
    natsConnection *mypage = connect_as("mypage", &r);
    jsCtx *mypage_js = NULL;
    jsOptions options;
    jsOptions_Init(&options);
    options.Wait = 1000;
    cr_assert_eq(natsConnection_JetStream(&mypage_js, mypage, &options), NATS_OK);
    jsPubAck *ack = NULL;
    natsStatus s = js_Publish(&ack, mypage_js, "library.events.copy.reserved", "forged", 6, NULL, NULL);
    cr_assert_neq(s, NATS_OK, "JetStream acknowledged mypage's forged event");
    jsPubAck_Destroy(ack);

    natsMsg *stored = NULL;
    s = js_GetLastMsg(&stored, js, "LIBRARY", "library.events.copy.reserved", NULL, NULL);
    cr_assert_eq(s, NATS_NOT_FOUND, "the stream holds an event mypage published (%s)", natsStatus_GetText(s));
    natsMsg_Destroy(stored);
    jsCtx_Destroy(mypage_js);
    natsConnection_Destroy(mypage);
    jsCtx_Destroy(js);
    natsConnection_Destroy(admin);
}

/* --- Redis ----------------------------------------------------------------------------------- */

/* The reply to a command, as text ("" for a non-error), on connection c. */
static void redis_answer(redisContext *c, const char *command, char *out, size_t size) {
    redisReply *reply = redisCommand(c, command);
    cr_assert_not_null(reply, "Redis did not answer %s", command);
    snprintf(out, size, "%s", reply->type == REDIS_REPLY_ERROR ? reply->str : "");
    freeReplyObject(reply);
}

Test(credentials, redis_refuses_a_client_without_credentials) {
    redisContext *c = redisConnect("127.0.0.1", redis.port);
    cr_assert(c != NULL && c->err == 0);
    char answer[256];
    redis_answer(c, "SET mypage:forged 1", answer, sizeof answer);
    cr_assert(strncmp(answer, "NOAUTH", 6) == 0, "an anonymous SET got \"%s\"", answer);
    redis_answer(c, "AUTH mypage not-the-password", answer, sizeof answer);
    cr_assert(strncmp(answer, "WRONGPASS", 9) == 0, "a wrong password got \"%s\"", answer);
    redisFree(c);
}

Test(credentials, mypage_may_touch_only_its_own_keys) {
    redisContext *c = redisConnect("127.0.0.1", redis.port);
    cr_assert(c != NULL && c->err == 0);
    char answer[256], command[200];
    snprintf(command, sizeof command, "AUTH mypage %s", harness_password("mypage"));
    redis_answer(c, command, answer, sizeof answer);
    cr_assert_str_empty(answer, "mypage's own password was refused: %s", answer);
    redis_answer(c, "SET mypage:allowed 1", answer, sizeof answer);
    cr_assert_str_empty(answer, "mypage may write its keys: %s", answer);
    redis_answer(c, "SET session:other 1", answer, sizeof answer);
    cr_assert(strncmp(answer, "NOPERM", 6) == 0, "mypage wrote another's key: \"%s\"", answer);
    redis_answer(c, "FLUSHALL", answer, sizeof answer);
    cr_assert(strncmp(answer, "NOPERM", 6) == 0, "mypage may FLUSHALL: \"%s\"", answer);
    redisFree(c);
}

Test(credentials, wrong_redis_password_stops_mypage_at_once) {
    const char *env[] = {nats_env, redis_env, "REDIS_PASSWORD=not-the-password", NULL};
    expect_refused_start("mypage", env, "Redis refused the password of user 'mypage'");
}

/* --- TLS --------------------------------------------------------------------------------------- */

/* A dev CA and a certificate for 127.0.0.1 it signed, in dir/<name> (ca.pem, nats.pem, nats.key):
 * tools/lib/credentials.sh's lib_dev_tls, as ./tools/run makes them. */
static void make_certificates(const char *name) {
    char command[1600];
    snprintf(command, sizeof command,
             "bash -c 'LIB_ROOT=\"$1\"; source \"$1/tools/lib/credentials.sh\" && lib_dev_tls \"$2\"' _ '%s' '%s/%s'",
             getenv("LIBRARY_SOURCE_ROOT") ? getenv("LIBRARY_SOURCE_ROOT") : ".", dir, name);
    cr_assert_eq(system(command), 0, "no dev CA in %s/%s (openssl.log there)", dir, name);
}

Test(credentials, nats_over_tls_with_the_servers_ca_and_refused_without_it) {
    make_certificates("server");
    make_certificates("other"); /* a CA that did not sign the server's certificate */
    char tls_dir[600], tls_config[1600];
    snprintf(tls_dir, sizeof tls_dir, "%s/tls", dir);
    mkdir(tls_dir, 0755);
    snprintf(tls_config, sizeof tls_config,
             "tls { cert_file: \"%s/server/nats.pem\", key_file: \"%s/server/nats.key\" }", dir, dir);
    harness_process secure;
    cr_assert(harness_nats_start_with(tls_dir, 0, tls_config, &secure), "nats-server with TLS did not start: %s",
              secure.log_path);
    char url[160], ca[700], wrong_ca[700];
    snprintf(url, sizeof url, "NATS_URL=tls://127.0.0.1:%d", secure.port);
    snprintf(ca, sizeof ca, "NATS_TLS_CA_FILE=%s/server/ca.pem", dir);
    snprintf(wrong_ca, sizeof wrong_ca, "NATS_TLS_CA_FILE=%s/other/ca.pem", dir);

    const char *trusted[] = {url, ca, NULL};
    harness_process catalog;
    cr_assert(harness_service_start("catalog", dir, trusted, &catalog), "catalog did not serve over TLS: %s",
              catalog.log_path);
    cr_assert_eq(harness_process_stop(&catalog, SIGTERM, 10000), 0);

    const char *untrusted[] = {url, wrong_ca, "NATS_CONNECT_TIMEOUT=60s", NULL};
    expect_refused_start("catalog", untrusted, "TLS with NATS at tls://127.0.0.1");
    const char *plain[] = {url, "NATS_TLS_CA_FILE=", "NATS_CONNECT_TIMEOUT=60s", NULL};
    expect_refused_start("catalog", plain, "TLS with NATS at tls://127.0.0.1");
    harness_process_stop(&secure, SIGTERM, 5000);
}
