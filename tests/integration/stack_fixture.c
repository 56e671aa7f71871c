/* stack_fixture.c - starts nats-server, the catalog and lending once for a suite (Criterion
 * runs every test in its own process, so the addresses travel in environment variables). */
#include "stack_fixture.h"

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

rpc_client *client;
rpc_client *lending;
arena *mem;

static harness_process nats_process, catalog_process, lending_process;

bool fixture_start_lending(const char *dir, const char *nats_url, const char *catalog_address,
                           const char *const *extra_env, harness_process *out) {
    static char nats_env[160], catalog_env[160];
    snprintf(nats_env, sizeof nats_env, "NATS_URL=%s", nats_url);
    snprintf(catalog_env, sizeof catalog_env, "CATALOG_ADDR=%s", catalog_address);
    const char *env[24] = {nats_env, catalog_env};
    size_t n = 2;
    for (const char *const *e = extra_env; e && *e && n < 23; e++)
        env[n++] = *e;
    return harness_service_start("lending", dir, env, out);
}

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
    (void)set;
    static char dir[256];
    if (harness_temp_dir(dir, sizeof dir) == NULL || !harness_keys_create(dir) ||
        !harness_nats_start(dir, 0, &nats_process)) {
        fprintf(stderr, "fixture: cannot start nats-server (see %s)\n", dir);
        exit(1);
    }
    char nats_env[160];
    snprintf(nats_env, sizeof nats_env, "NATS_URL=%s", nats_process.url);
    const char *env[] = {nats_env, NULL};
    if (!harness_service_start("catalog", dir, env, &catalog_process)) {
        fprintf(stderr, "fixture: the catalog did not become healthy; log: %s\n",
                catalog_process.log_path);
        harness_process_stop(&nats_process, SIGTERM, 5000);
        exit(1);
    }
    const char *lending_env[] = {FIXTURE_LENDING_ENV, NULL};
    if (!fixture_start_lending(dir, nats_process.url, catalog_process.address, lending_env,
                               &lending_process)) {
        fprintf(stderr, "fixture: lending did not become healthy; log: %s\n", lending_process.log_path);
        harness_process_stop(&catalog_process, SIGTERM, 5000);
        harness_process_stop(&nats_process, SIGTERM, 5000);
        exit(1);
    }
    setenv("TEST_LENDING", lending_process.address, 1);
    setenv("TEST_DIR", dir, 1);
    setenv("TEST_CATALOG", catalog_process.address, 1);
    setenv("TEST_NATS_URL", nats_process.url, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats) {
    int lending_code = harness_process_stop(&lending_process, SIGTERM, 15000);
    int code = harness_process_stop(&catalog_process, SIGTERM, 15000);
    if (lending_code != 0) {
        fprintf(stderr, "fixture: lending exited with %d on SIGTERM; log: %s\n", lending_code,
                lending_process.log_path);
        code = lending_code;
    }
    harness_process_stop(&nats_process, SIGTERM, 5000);
    if (code != 0)
        fprintf(stderr, "fixture: the catalog exited with %d on SIGTERM; log: %s\n", code,
                catalog_process.log_path);
    if (stats->tests_failed == 0 && stats->tests_crashed == 0 && code == 0) {
        char command[400];
        snprintf(command, sizeof command, "rm -rf '%s'", getenv("TEST_DIR"));
        if (system(command) != 0)
            fprintf(stderr, "fixture: could not remove %s\n", getenv("TEST_DIR"));
    } else {
        fprintf(stderr, "fixture: logs kept in %s\n", getenv("TEST_DIR"));
    }
    /* A service that crashed, leaked or tripped a sanitizer on the way out fails the suite. */
    if (code != 0)
        exit(3);
}

const char *fixture_dir(void) {
    return getenv("TEST_DIR");
}

const char *fixture_catalog_address(void) {
    return getenv("TEST_CATALOG");
}

const char *fixture_lending_address(void) {
    return getenv("TEST_LENDING");
}

const char *fixture_nats_url(void) {
    return getenv("TEST_NATS_URL");
}

void fixture_setup(void) {
    mem = arena_create(0);
    cr_assert_not_null(fixture_catalog_address(), "the suite's stack is not running");
    cr_assert_eq(rpc_client_create(fixture_catalog_address(), 5000, &client, NULL), STATUS_OK);
    cr_assert_eq(rpc_client_create(fixture_lending_address(), 10000, &lending, NULL), STATUS_OK);
}

void fixture_teardown(void) {
    rpc_client_destroy(lending);
    rpc_client_destroy(client);
    arena_destroy(mem);
}

const char *admin_bearer(void) {
    return harness_bearer(mem, fixture_dir(), "admin", true);
}

const char *user_bearer(const char *user) {
    return harness_bearer(mem, fixture_dir(), user, false);
}

status_code call_catalog(const char *method, const ProtobufCMessage *request,
                         const ProtobufCMessageDescriptor *response_type, const char *bearer,
                         ProtobufCMessage **response, status *st) {
    char path[128];
    snprintf(path, sizeof path, CATALOG "%s", method);
    return harness_call(client, path, request, response_type, mem, bearer, response, st);
}

Book *register_book(const char *title, const char *author, const char *isbn, int copies) {
    Library__Catalog__V1__RegisterBookRequest request = LIBRARY__CATALOG__V1__REGISTER_BOOK_REQUEST__INIT;
    request.title = (char *)title;
    request.author = (char *)author;
    request.isbn = (char *)isbn;
    request.copies = copies;
    ProtobufCMessage *response = NULL;
    status st;
    status_code code = call_catalog("RegisterBook", &request.base, &library__catalog__v1__book__descriptor,
                                    admin_bearer(), &response, &st);
    cr_assert_eq(code, STATUS_OK, "RegisterBook failed: %s %s", status_code_name(code), st.message);
    return (Book *)response;
}
