/* stack_fixture.c - starts nats-server, redis-server and the three services once for a suite (Criterion
 * runs every test in its own process, so the addresses travel in environment variables). */
#include "stack_fixture.h"

#include "grpc/health/v1/health.pb-c.h"
#include "kv.h"
#include "text.h"

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

rpc_client *client;
rpc_client *lending;
rpc_client *mypage;
arena *mem;

static harness_process nats_process, redis_process, catalog_process, lending_process, mypage_process;

/* Starts a service with NATS_URL, one more setting of its own, and the extra settings. */
static bool start_service(const char *name, const char *dir, const char *nats_url,
                          const char *own_setting, const char *own_value,
                          const char *const *extra_env, harness_process *out) {
    char nats_env[160], own_env[200];
    snprintf(nats_env, sizeof nats_env, "NATS_URL=%s", nats_url);
    snprintf(own_env, sizeof own_env, "%s=%s", own_setting, own_value);
    const char *env[24] = {nats_env, own_env};
    size_t n = 2;
    for (const char *const *e = extra_env; e && *e && n < 23; e++)
        env[n++] = *e;
    return harness_service_start(name, dir, env, out);
}

bool fixture_start_lending(const char *dir, const char *nats_url, const char *catalog_address,
                           const char *const *extra_env, harness_process *out) {
    return start_service("lending", dir, nats_url, "CATALOG_ADDR", catalog_address, extra_env, out);
}

bool fixture_start_mypage(const char *dir, const char *nats_url, const char *redis_url,
                          const char *const *extra_env, harness_process *out) {
    return start_service("mypage", dir, nats_url, "REDIS_URL", redis_url, extra_env, out);
}

/* Stops what PRE_ALL started, newest first, and says why the suite cannot run. */
static void fixture_abort(const char *what, const char *log_path) {
    fprintf(stderr, "fixture: %s; log: %s\n", what, log_path);
    harness_process_stop(&mypage_process, SIGTERM, 5000);
    harness_process_stop(&lending_process, SIGTERM, 5000);
    harness_process_stop(&catalog_process, SIGTERM, 5000);
    harness_process_stop(&redis_process, SIGTERM, 5000);
    harness_process_stop(&nats_process, SIGTERM, 5000);
    exit(1);
}

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
    (void)set;
    static char dir[256];
    if (harness_temp_dir(dir, sizeof dir) == NULL || !harness_keys_create(dir) ||
        !harness_nats_start(dir, 0, &nats_process)) {
        fprintf(stderr, "fixture: cannot start nats-server (see %s)\n", dir);
        exit(1);
    }
    if (!harness_redis_start(dir, 0, &redis_process))
        fixture_abort("redis-server did not start", redis_process.log_path);
    char nats_env[160];
    snprintf(nats_env, sizeof nats_env, "NATS_URL=%s", nats_process.url);
    /* holds set aside for 4 s, so the holds suite can watch them expire */
    const char *env[] = {nats_env, "HOLD_PICKUP=4s", "HOLD_SWEEP=200ms", NULL};
    if (!harness_service_start("catalog", dir, env, &catalog_process))
        fixture_abort("the catalog did not become healthy", catalog_process.log_path);
    const char *lending_env[] = {FIXTURE_LENDING_ENV, NULL};
    if (!fixture_start_lending(dir, nats_process.url, catalog_process.address, lending_env,
                               &lending_process))
        fixture_abort("lending did not become healthy", lending_process.log_path);
    if (!fixture_start_mypage(dir, nats_process.url, redis_process.url, NULL, &mypage_process))
        fixture_abort("mypage did not become healthy", mypage_process.log_path);
    setenv("TEST_MYPAGE", mypage_process.address, 1);
    char metrics[64];
    snprintf(metrics, sizeof metrics, "%d", catalog_process.metrics_port);
    setenv("TEST_CATALOG_METRICS", metrics, 1);
    snprintf(metrics, sizeof metrics, "%d", lending_process.metrics_port);
    setenv("TEST_LENDING_METRICS", metrics, 1);
    snprintf(metrics, sizeof metrics, "%d", mypage_process.metrics_port);
    setenv("TEST_MYPAGE_METRICS", metrics, 1);
    setenv("TEST_REDIS_URL", redis_process.url, 1);
    setenv("TEST_LENDING", lending_process.address, 1);
    setenv("TEST_DIR", dir, 1);
    setenv("TEST_CATALOG", catalog_process.address, 1);
    setenv("TEST_NATS_URL", nats_process.url, 1);
}

/* Stops a service; a non-zero exit (a crash, a leak, a sanitizer report) is reported. */
static int stop_service(const char *name, harness_process *process) {
    int code = harness_process_stop(process, SIGTERM, 15000);
    if (code != 0)
        fprintf(stderr, "fixture: %s exited with %d on SIGTERM; log: %s\n", name, code,
                process->log_path);
    return code;
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats) {
    int code = 0;
    int codes[] = {stop_service("mypage", &mypage_process), stop_service("lending", &lending_process),
                   stop_service("catalog", &catalog_process)};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (codes[i] != 0)
            code = codes[i];
    harness_process_stop(&redis_process, SIGTERM, 5000);
    harness_process_stop(&nats_process, SIGTERM, 5000);
    if (harness_nats_violations(nats_process.log_path) > 0) {
        fprintf(stderr, "fixture: NATS refused the services a subject (permissions); log: %s\n",
                nats_process.log_path);
        code = 3;
    }
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

const char *fixture_mypage_address(void) {
    return getenv("TEST_MYPAGE");
}

int fixture_metrics_port(const char *service) {
    char name[64];
    snprintf(name, sizeof name, "TEST_%s_METRICS", service);
    for (char *c = name; *c; c++)
        if (*c >= 'a' && *c <= 'z')
            *c = (char)(*c - 'a' + 'A');
    const char *value = getenv(name);
    return value ? atoi(value) : 0;
}

const char *fixture_redis_url(void) {
    return getenv("TEST_REDIS_URL");
}

const char *fixture_nats_url(void) {
    return getenv("TEST_NATS_URL");
}

static int port_of(const char *address) {
    const char *colon = address ? strrchr(address, ':') : NULL;
    return colon ? atoi(colon + 1) : 0;
}

void fixture_gateway_start(const char *name, harness_process *out) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", fixture_dir(), name);
    mkdir(dir, 0755);
    cr_assert(harness_gateway_start(dir, port_of(fixture_catalog_address()),
                                    port_of(fixture_lending_address()),
                                    port_of(fixture_mypage_address()), out),
              "the gateway did not start: %s", out->log_path);
}

void fixture_setup(void) {
    mem = arena_create(0);
    cr_assert_not_null(fixture_catalog_address(), "the suite's stack is not running");
    cr_assert_eq(rpc_client_create(fixture_catalog_address(), 5000, &client, NULL), STATUS_OK);
    cr_assert_eq(rpc_client_create(fixture_lending_address(), 10000, &lending, NULL), STATUS_OK);
    cr_assert_eq(rpc_client_create(fixture_mypage_address(), 5000, &mypage, NULL), STATUS_OK);
}

void fixture_teardown(void) {
    rpc_client_destroy(mypage);
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

/* nats-server and the catalog (events redelivered after 2 s, and catalog_env added). */
static void start_nats_and_catalog(test_stack *s, const char *name, const char *const *catalog_env) {
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s/%s", fixture_dir(), name);
    mkdir(s->dir, 0755);
    cr_assert(harness_keys_create(s->dir));
    cr_assert(harness_nats_start(s->dir, 0, &s->nats), "nats-server did not start");
    char nats_env[160];
    snprintf(nats_env, sizeof nats_env, "NATS_URL=%s", s->nats.url);
    /* a crashed catalog's unacknowledged events come back after 2 s, not the default 10 s */
    const char *env[16] = {nats_env, "EVENT_ACK_WAIT=2s"};
    size_t n = 2;
    for (const char *const *e = catalog_env; e && *e && n < 15; e++)
        env[n++] = *e;
    cr_assert(harness_service_start("catalog", s->dir, env, &s->catalog), "the catalog did not start: %s",
              s->catalog.log_path);
    cr_assert_eq(rpc_client_create(s->catalog.address, 10000, &s->catalog_client, NULL), STATUS_OK);
}

void test_stack_start(test_stack *s, const char *name, const char *const *lending_env,
                      bool with_mypage, const char *const *mypage_env) {
    start_nats_and_catalog(s, name, NULL);
    cr_assert(fixture_start_lending(s->dir, s->nats.url, s->catalog.address, lending_env, &s->lending),
              "lending did not start: %s", s->lending.log_path);
    cr_assert_eq(rpc_client_create(s->lending.address, 10000, &s->lending_client, NULL), STATUS_OK);
    if (!with_mypage)
        return;
    cr_assert(harness_redis_start(s->dir, 0, &s->redis), "redis-server did not start");
    cr_assert(fixture_start_mypage(s->dir, s->nats.url, s->redis.url, mypage_env, &s->mypage),
              "mypage did not start: %s", s->mypage.log_path);
    cr_assert_eq(rpc_client_create(s->mypage.address, 10000, &s->mypage_client, NULL), STATUS_OK);
}

void test_stack_start_catalog(test_stack *s, const char *name, const char *const *catalog_env) {
    start_nats_and_catalog(s, name, catalog_env);
}

void test_stack_stop(test_stack *s) {
    rpc_client_destroy(s->mypage_client);
    rpc_client_destroy(s->lending_client);
    rpc_client_destroy(s->catalog_client);
    if (s->nats.pid > 0)
        kill(s->nats.pid, SIGCONT); /* a test may have paused it */
    int mypage_exit = s->mypage.pid > 0 ? harness_process_stop(&s->mypage, SIGTERM, 10000) : 0;
    int lending_exit = s->lending.pid > 0 ? harness_process_stop(&s->lending, SIGTERM, 10000) : 0;
    int catalog_exit = s->catalog.pid > 0 ? harness_process_stop(&s->catalog, SIGTERM, 10000) : 0;
    if (s->redis.pid > 0)
        harness_process_stop(&s->redis, SIGTERM, 5000);
    harness_process_stop(&s->nats, SIGTERM, 5000);
    int violations = harness_nats_violations(s->nats.log_path);
    cr_assert_eq(violations, 0, "NATS refused the services %d times (permissions, see above); log: %s",
                 violations, s->nats.log_path);
    cr_assert_eq(mypage_exit, 0, "mypage exited with %d; log: %s", mypage_exit, s->mypage.log_path);
    cr_assert_eq(lending_exit, 0, "lending exited with %d; log: %s", lending_exit, s->lending.log_path);
    cr_assert_eq(catalog_exit, 0, "catalog exited with %d; log: %s", catalog_exit, s->catalog.log_path);
}

Book *fixture_register_on(rpc_client *catalog, const char *admin, const char *title, int copies) {
    Library__Catalog__V1__RegisterBookRequest request = LIBRARY__CATALOG__V1__REGISTER_BOOK_REQUEST__INIT;
    request.title = (char *)title;
    request.author = "A";
    request.copies = copies;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(harness_call(catalog, CATALOG "RegisterBook", &request.base,
                              &library__catalog__v1__book__descriptor, mem, admin, &response, &st),
                 STATUS_OK, "RegisterBook: %s", st.message);
    return (Book *)response;
}

Book *test_stack_register(test_stack *s, const char *title, int copies) {
    return fixture_register_on(s->catalog_client, harness_bearer(mem, s->dir, "admin", true), title, copies);
}

Library__Lending__V1__Loan *test_stack_borrow_as(test_stack *s, const char *bearer, const char *book_id) {
    Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(harness_call(s->lending_client, "/library.lending.v1.LendingService/BorrowBook", &request.base,
                              &library__lending__v1__loan__descriptor, mem, bearer, &response, &st),
                 STATUS_OK, "BorrowBook: %s", st.message);
    Library__Lending__V1__Loan *loan = (Library__Lending__V1__Loan *)response;
    cr_assert_eq(loan->status, LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE,
                 "the borrow did not go through in BORROW_WAIT");
    return loan;
}

Library__Lending__V1__Loan *test_stack_return_as(test_stack *s, const char *bearer, const char *loan_id) {
    Library__Lending__V1__ReturnBookRequest request = LIBRARY__LENDING__V1__RETURN_BOOK_REQUEST__INIT;
    request.loan_id = (char *)loan_id;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(harness_call(s->lending_client, "/library.lending.v1.LendingService/ReturnBook", &request.base,
                              &library__lending__v1__loan__descriptor, mem, bearer, &response, &st),
                 STATUS_OK, "ReturnBook: %s", st.message);
    return (Library__Lending__V1__Loan *)response;
}

Library__Lending__V1__Loan *test_stack_borrow_decided(test_stack *s, const char *book_id, const char *user) {
    const char *bearer = harness_bearer(mem, s->dir, user, false);
    Library__Lending__V1__BorrowBookRequest borrow = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    borrow.book_id = (char *)book_id;
    ProtobufCMessage *response = NULL;
    status st;
    status_code code = harness_call(s->lending_client, "/library.lending.v1.LendingService/BorrowBook",
                                    &borrow.base, &library__lending__v1__loan__descriptor, mem, bearer,
                                    &response, &st);
    cr_assert_eq(code, STATUS_OK, "BorrowBook as %s: %s %s", user, status_code_name(code), st.message);
    Library__Lending__V1__Loan *loan = (Library__Lending__V1__Loan *)response;
    Library__Lending__V1__GetLoanRequest get = LIBRARY__LENDING__V1__GET_LOAN_REQUEST__INIT;
    get.loan_id = loan->loan_id;
    int64_t until = harness_now_ms() + 10000;
    while (loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING) {
        cr_assert_lt(harness_now_ms(), until, "loan %s still PENDING after 10 s", get.loan_id);
        harness_sleep_ms(50);
        code = harness_call(s->lending_client, "/library.lending.v1.LendingService/GetLoan", &get.base,
                            &library__lending__v1__loan__descriptor, mem, bearer, &response, &st);
        cr_assert_eq(code, STATUS_OK, "GetLoan: %s %s", status_code_name(code), st.message);
        loan = (Library__Lending__V1__Loan *)response;
    }
    return loan;
}

int fixture_health(rpc_client *service, const char *name) {
    Grpc__Health__V1__HealthCheckRequest request = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    request.service = (char *)name;
    ProtobufCMessage *response = NULL;
    status st;
    status_code code = harness_call(service, "/grpc.health.v1.Health/Check", &request.base,
                                    &grpc__health__v1__health_check_response__descriptor, mem, NULL,
                                    &response, &st);
    return code == STATUS_OK ? (int)((Grpc__Health__V1__HealthCheckResponse *)response)->status : -1;
}

void wait_serving(rpc_client *service, const char *what, int64_t timeout_ms) {
    int64_t until = harness_now_ms() + timeout_ms;
    int serving;
    while ((serving = fixture_health(service, "")) != SERVING) {
        cr_assert_lt(harness_now_ms(), until, "%s is not SERVING after %lld ms (health %d)", what,
                     (long long)timeout_ms, serving);
        harness_sleep_ms(50);
    }
}

void fixture_own_mypage(const char *dir, const char *const *env, harness_process *out,
                        rpc_client **client_out) {
    cr_assert(fixture_start_mypage(dir, fixture_nats_url(), fixture_redis_url(), env, out),
              "a mypage of the test's own did not start: %s", out->log_path);
    cr_assert_eq(rpc_client_create(out->address, 10000, client_out, NULL), STATUS_OK);
}

bool fixture_list_loans(rpc_client *lending_client, arena *a, const char *bearer, const char *user,
                        Library__Lending__V1__Loan ***out, size_t *count) {
    size_t capacity = 256;
    Library__Lending__V1__Loan **all = arena_alloc(a, capacity * sizeof *all);
    *count = 0;
    Library__Lending__V1__ListLoansRequest request = LIBRARY__LENDING__V1__LIST_LOANS_REQUEST__INIT;
    request.user_id = (char *)user;
    request.page_size = 100;
    for (int page = 0; page < 30; page++) {
        ProtobufCMessage *response = NULL;
        status st;
        if (harness_call(lending_client, "/library.lending.v1.LendingService/ListLoans", &request.base,
                         &library__lending__v1__list_loans_response__descriptor, a, bearer, &response,
                         &st) != STATUS_OK)
            return false;
        Library__Lending__V1__ListLoansResponse *r = (void *)response;
        for (size_t i = 0; i < r->n_loans; i++) {
            if (*count == capacity) {
                Library__Lending__V1__Loan **bigger = arena_alloc(a, 2 * capacity * sizeof *bigger);
                memcpy(bigger, all, capacity * sizeof *all);
                all = bigger;
                capacity *= 2;
            }
            all[(*count)++] = r->loans[i];
        }
        if (r->next_page_token == NULL || r->next_page_token[0] == '\0')
            break;
        request.page_token = r->next_page_token;
    }
    *out = all;
    return true;
}

void test_stack_plant_user_record(test_stack *s, const char *user, const ProtobufCMessage *record) {
    nats_connection *connection = NULL;
    kv_bucket *loans = NULL;
    status st;
    nats_connection_options options = harness_nats_options(s->nats.url, "test");
    cr_assert_eq(nats_connection_open(&options, &connection, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(kv_bucket_open(connection, "loans", 1, &loans, &st), STATUS_OK, "%s", st.message);
    size_t size = protobuf_c_message_get_packed_size(record);
    uint8_t *packed = arena_alloc(mem, size + 1);
    protobuf_c_message_pack(record, packed);
    const char *key = arena_sprintf(mem, "user.%s", text_base64url_encode(mem, (const uint8_t *)user, strlen(user)));
    cr_assert_eq(kv_create(loans, key, packed, size, NULL, &st), STATUS_OK, "%s", st.message);
    kv_bucket_close(loans);
    nats_connection_close(connection);
}
