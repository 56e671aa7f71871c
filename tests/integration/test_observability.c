/* test_observability.c - what operators see: /metrics scraped over HTTP and checked with
 * promtool, counters that move by exactly the calls made, one trace id across the three
 * services' logs, and the log level switched live by a file and SIGHUP. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "library/lending/v1/lending.pb-c.h"
#include "library/mypage/v1/mypage.pb-c.h"
#include "stack_fixture.h"
#include "text.h"

#define LENDING "/library.lending.v1.LendingService/"

TestSuite(observability, .init = fixture_setup, .fini = fixture_teardown, .timeout = 120);

/* AdjustStock: no other test of this suite calls it, and they run in parallel */
#define METHOD_LABELS "grpc_type=\"unary\",grpc_service=\"library.catalog.v1.CatalogService\",grpc_method=\"AdjustStock\""

Test(observability, metrics_pass_promtool_and_count_exactly_the_calls_made) {
    int port = fixture_metrics_port("catalog");
    cr_assert_gt(port, 0);
    char *before = harness_scrape(mem, port);
    cr_assert_not_null(before, "GET /metrics failed");

    enum { CALLS = 7 };
    for (int i = 0; i < CALLS; i++) {
        Library__Catalog__V1__AdjustStockRequest request = LIBRARY__CATALOG__V1__ADJUST_STOCK_REQUEST__INIT;
        request.book_id = "00000000000000000000";
        request.delta = 1;
        ProtobufCMessage *response = NULL;
        status st;
        cr_assert_eq(call_catalog("AdjustStock", &request.base, &library__catalog__v1__book__descriptor,
                                  admin_bearer(), &response, &st),
                     STATUS_NOT_FOUND);
    }
    const char *handled = "grpc_server_handled_total{" METHOD_LABELS ",grpc_code=\"NOT_FOUND\"}";
    const char *started = "grpc_server_started_total{" METHOD_LABELS "}";
    const char *count = "grpc_server_handling_seconds_count{" METHOD_LABELS "}";
    /* a call is counted as handled once its status has gone out, a moment after the client
     * has it: wait for the last one, then the count must be exact */
    char *after = harness_scrape(mem, port);
    int64_t until = harness_now_ms() + 2000;
    while (after && harness_sample(after, handled) - harness_sample(before, handled) < CALLS && harness_now_ms() < until) {
        harness_sleep_ms(20);
        after = harness_scrape(mem, port);
    }
    cr_assert_not_null(after);
    cr_assert_eq(harness_sample(after, handled) - harness_sample(before, handled), CALLS);
    cr_assert_eq(harness_sample(after, started) - harness_sample(before, started), CALLS, "%s: %g then %g", started,
                 harness_sample(before, started), harness_sample(after, started));
    cr_assert_eq(harness_sample(after, count) - harness_sample(before, count), CALLS);

    /* buckets are cumulative and end at _count */
    double previous = 0;
    int buckets = 0;
    for (const char *line = strstr(after, "grpc_server_handling_seconds_bucket{" METHOD_LABELS); line;
         line = strstr(line + 1, "grpc_server_handling_seconds_bucket{" METHOD_LABELS)) {
        double value = strtod(strchr(line, ' ') + 1, NULL);
        cr_assert_geq(value, previous, "bucket %d is below the one before", buckets);
        previous = value;
        buckets++;
    }
    cr_assert_gt(buckets, 5);
    cr_assert_eq(previous, harness_sample(after, count), "the +Inf bucket equals _count");
    cr_assert(strstr(after, "# TYPE grpc_server_handling_seconds histogram") != NULL);

    /* promtool lints the whole exposition (names, HELP, TYPE, units) */
    char path[512];
    snprintf(path, sizeof path, "%s/metrics-catalog.txt", fixture_dir());
    FILE *file = fopen(path, "w");
    fputs(after, file);
    fclose(file);
    char command[1200];
    snprintf(command, sizeof command, "promtool check metrics < '%s' > '%s.promtool' 2>&1", path, path);
    cr_assert_eq(system(command), 0, "promtool check metrics failed: see %s.promtool", path);
}

Test(observability, every_service_exposes_its_own_metrics) {
    const char *services[] = {"lending", "mypage"};
    const char *expected[] = {"library_loans_total", "library_projection_lag_seconds"};
    for (int i = 0; i < 2; i++) {
        char *body = harness_scrape(mem, fixture_metrics_port(services[i]));
        cr_assert_not_null(body, "no metrics from %s", services[i]);
        cr_assert(strstr(body, "# TYPE grpc_server_handled_total counter") != NULL);
        cr_assert(strstr(body, expected[i]) != NULL, "%s lacks %s", services[i], expected[i]);
    }
    char command[128];
    snprintf(command, sizeof command, "curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/other",
             fixture_metrics_port("catalog"));
    FILE *pipe = popen(command, "r");
    char code[8] = "";
    cr_assert_not_null(fgets(code, sizeof code, pipe));
    pclose(pipe);
    cr_assert_str_eq(code, "404");
}

/* How many lines of a log file contain text. */
static int lines_with(const char *path, const char *text) {
    FILE *file = fopen(path, "r");
    if (file == NULL)
        return 0;
    char line[16384];
    int count = 0;
    while (fgets(line, sizeof line, file))
        count += strstr(line, text) != NULL;
    fclose(file);
    return count;
}

Test(observability, one_borrow_has_one_trace_id_in_every_service_log) {
    Book *book = register_book("Traced", "Seed", "978-93", 2);
    char trace_id[33], span_id[17], request_id[17];
    text_random_hex(trace_id, 16);
    text_random_hex(span_id, 8);
    text_random_hex(request_id, 8);
    char *traceparent = arena_sprintf(mem, "00-%s-%s-01", trace_id, span_id);
    const char *metadata[] = {"x-request-id", request_id, NULL};
    Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    request.book_id = book->book_id;
    rpc_call_options options = {.timeout_ms = 10000, .authorization = user_bearer("traced"),
                                .traceparent = traceparent, .extra_metadata = metadata};
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(rpc_client_call(lending, LENDING "BorrowBook", &request.base,
                                 &library__lending__v1__loan__descriptor, mem, &response, &options, &st),
                 STATUS_OK, "%s", st.message);
    char *field = arena_sprintf(mem, "\"trace_id\":\"%s\"", trace_id);
    const char *services[] = {"catalog", "lending", "mypage"};
    for (int i = 0; i < 3; i++) {
        char *log = arena_sprintf(mem, "%s/%s.log", fixture_dir(), services[i]);
        int64_t until = harness_now_ms() + 5000; /* mypage logs when the projection gets there */
        while (lines_with(log, field) == 0 && harness_now_ms() < until)
            harness_sleep_ms(100);
        cr_assert_gt(lines_with(log, field), 0, "trace id %s is not in %s", trace_id, log);
    }
    /* x-request-id went from lending to the catalog with the GetBook call */
    cr_assert_gt(lines_with(arena_sprintf(mem, "%s/catalog.log", fixture_dir()),
                            arena_sprintf(mem, "x-request-id=%s", request_id)),
                 0, "the catalog never saw x-request-id %s", request_id);
}

typedef struct caller {
    pthread_t thread;
    rpc_client *client;
    const char *bearer;
    volatile bool stop;
    int calls, failed;
} caller;

static void *caller_main(void *arg) {
    caller *c = arg;
    arena *a = arena_create(0);
    while (!c->stop) {
        Library__Catalog__V1__SearchBooksRequest request = LIBRARY__CATALOG__V1__SEARCH_BOOKS_REQUEST__INIT;
        request.query = "level";
        ProtobufCMessage *response = NULL;
        status st;
        c->calls++;
        if (harness_call(c->client, CATALOG "SearchBooks", &request.base,
                         &library__catalog__v1__search_books_response__descriptor, a, c->bearer,
                         &response, &st) != STATUS_OK)
            c->failed++;
        arena_reset(a);
        harness_sleep_ms(5);
    }
    arena_destroy(a);
    return NULL;
}

static void write_file(const char *path, const char *text) {
    FILE *file = fopen(path, "w");
    cr_assert_not_null(file);
    fputs(text, file);
    fclose(file);
}

/* The calls logged: each call is one debug line while the level is debug. */
static int debug_lines(const char *log) {
    return lines_with(log, "SearchBooks -> OK");
}

Test(observability, the_log_level_follows_its_file_on_sighup_and_by_itself_without_dropping_a_call) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/log-level", fixture_dir());
    mkdir(dir, 0755);
    cr_assert(harness_keys_create(dir));
    char *level_file = arena_sprintf(mem, "%s/level", dir);
    write_file(level_file, "info\n");
    char nats_env[160], file_env[600];
    snprintf(nats_env, sizeof nats_env, "NATS_URL=%s", fixture_nats_url());
    snprintf(file_env, sizeof file_env, "LOG_LEVEL_FILE=%s", level_file);
    const char *env[] = {nats_env, file_env, NULL};
    harness_process catalog;
    cr_assert(harness_service_start("catalog", dir, env, &catalog), "catalog did not start");
    char *log = arena_sprintf(mem, "%s/catalog.log", dir);

    caller c = {.bearer = harness_bearer(mem, dir, "reader", false)};
    cr_assert_eq(rpc_client_create(catalog.address, 5000, &c.client, NULL), STATUS_OK);
    pthread_create(&c.thread, NULL, caller_main, &c);
    harness_sleep_ms(300);
    cr_assert_eq(debug_lines(log), 0, "LOG_LEVEL_FILE says info, but debug lines were written");

    /* SIGHUP: at once */
    write_file(level_file, "debug\n");
    kill(catalog.pid, SIGHUP);
    int64_t until = harness_now_ms() + 1000;
    while (debug_lines(log) == 0 && harness_now_ms() < until)
        harness_sleep_ms(20);
    cr_assert_gt(debug_lines(log), 0, "no debug lines within a second of SIGHUP");
    cr_assert_gt(lines_with(log, "log level is now debug"), 0);

    /* no signal: the file is watched (a ConfigMap volume changes this way) */
    write_file(level_file, "warn\n");
    until = harness_now_ms() + 4000;
    while (lines_with(log, "log level is now warn") == 0 && harness_now_ms() < until)
        harness_sleep_ms(100);
    cr_assert_gt(lines_with(log, "log level is now warn"), 0, "the file change was not noticed in 4 s");
    int seen = debug_lines(log);
    harness_sleep_ms(500);
    cr_assert_eq(debug_lines(log), seen, "debug lines kept coming after the file said warn");

    /* a bad value is reported and changes nothing */
    write_file(level_file, "loud\n");
    kill(catalog.pid, SIGHUP);
    harness_sleep_ms(300);
    cr_assert_gt(lines_with(log, "which is not debug, info, warn or error"), 0);

    c.stop = true;
    pthread_join(c.thread, NULL);
    rpc_client_destroy(c.client);
    cr_assert_gt(c.calls, 50);
    cr_assert_eq(c.failed, 0, "%d of %d calls failed while the level changed", c.failed, c.calls);
    cr_assert_eq(harness_process_stop(&catalog, SIGTERM, 10000), 0);
    cr_log_info("%d calls while the level went info -> debug -> warn: none failed", c.calls);
}

/* --- metric values after known calls ------------------------------------------------------- */

/* The value of series on the /metrics port, polled until it equals expected (a counter moves
 * a moment after the client has its answer) or 5 s have passed; the last value seen. */
static double sample_when(int port, const char *series, double expected) {
    double value = -1;
    for (int64_t until = harness_now_ms() + 5000;; harness_sleep_ms(20)) {
        char *body = harness_scrape(mem, port);
        cr_assert_not_null(body, "GET /metrics on port %d failed", port);
        value = harness_sample(body, series);
        if (value == expected || harness_now_ms() >= until)
            return value;
    }
}

static void return_loan(test_stack *s, const char *loan_id, const char *user) {
    Library__Lending__V1__ReturnBookRequest request = LIBRARY__LENDING__V1__RETURN_BOOK_REQUEST__INIT;
    request.loan_id = (char *)loan_id;
    ProtobufCMessage *response = NULL;
    status st;
    status_code code = harness_call(s->lending_client, LENDING "ReturnBook", &request.base,
                                    &library__lending__v1__loan__descriptor, mem,
                                    harness_bearer(mem, s->dir, user, false), &response, &st);
    cr_assert_eq(code, STATUS_OK, "ReturnBook: %s %s", status_code_name(code), st.message);
}

/* A lending of its own, so that only this test's loans move its counters: 5 borrows of a book
 * with 2 copies end 2 ACTIVE and 3 CANCELED (out of stock), then one is returned. */
Test(observability, loans_total_counts_each_outcome_exactly) {
    const char *const lending_env[] = {FIXTURE_LENDING_ENV, NULL};
    test_stack s;
    test_stack_start(&s, "loan-metrics", lending_env, false, NULL);
    Book *book = test_stack_register(&s, "Counted", 2);
    char *before = harness_scrape(mem, s.lending.metrics_port);
    cr_assert_not_null(before);

    enum { BORROWS = 5, COPIES = 2 };
    int active = 0, canceled = 0;
    const char *returned_loan = NULL, *returned_by = NULL;
    for (int i = 0; i < BORROWS; i++) {
        const char *user = arena_sprintf(mem, "counted-%d", i);
        Library__Lending__V1__Loan *loan = test_stack_borrow_decided(&s, book->book_id, user);
        if (loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE) {
            active++;
            returned_loan = loan->loan_id;
            returned_by = user;
        } else {
            cr_assert_eq(loan->status, LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED);
            cr_assert_str_eq(loan->cancel_reason, "OUT_OF_STOCK");
            canceled++;
        }
    }
    cr_assert_eq(active, COPIES, "%d of %d borrows ended ACTIVE with %d copies", active, BORROWS, COPIES);
    cr_assert_eq(canceled, BORROWS - COPIES);
    return_loan(&s, returned_loan, returned_by);
    cr_assert(harness_wait_consumer_idle(s.nats.url, "lending", 10000), "lending's consumer did not drain");
    cr_assert(harness_wait_consumer_idle(s.nats.url, "catalog", 10000), "the catalog's consumer did not drain");

    const struct {
        const char *outcome;
        int delta;
    } expected[] = {{"requested", BORROWS}, {"activated", COPIES}, {"canceled", BORROWS - COPIES},
                    {"returned", 1},        {"overdue", 0}};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        const char *series = arena_sprintf(mem, "library_loans_total{outcome=\"%s\"}", expected[i].outcome);
        double start = harness_sample(before, series);
        double now = sample_when(s.lending.metrics_port, series, start + expected[i].delta);
        cr_assert_eq(now - start, expected[i].delta, "%s moved by %g, expected %d", series, now - start,
                     expected[i].delta);
    }
    test_stack_stop(&s);
}

typedef struct adjust_call {
    pthread_t thread;
    const char *address, *bearer, *book_id;
    status_code code;
} adjust_call;

/* One AdjustStock +1 on a client of its own, so that it can wait in a thread. */
static status_code adjust_once(const char *address, const char *bearer, const char *book_id) {
    rpc_client *own = NULL;
    if (rpc_client_create(address, 15000, &own, NULL) != STATUS_OK)
        return STATUS_INTERNAL;
    arena *a = arena_create(0);
    Library__Catalog__V1__AdjustStockRequest request = LIBRARY__CATALOG__V1__ADJUST_STOCK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    request.delta = 1;
    ProtobufCMessage *response = NULL;
    status st;
    status_code code = harness_call(own, CATALOG "AdjustStock", &request.base,
                                    &library__catalog__v1__book__descriptor, a, bearer, &response, &st);
    arena_destroy(a);
    rpc_client_destroy(own);
    return code;
}

static void *adjust_in_thread(void *arg) {
    adjust_call *call = arg;
    call->code = adjust_once(call->address, call->bearer, call->book_id);
    return NULL;
}

/* MAX_IN_FLIGHT=1: one AdjustStock waits on a paused nats-server and holds the only slot, and
 * every further call is shed; the shed counter and the RESOURCE_EXHAUSTED count move by
 * exactly the calls that were answered so. */
Test(observability, shed_calls_are_counted_exactly) {
    const char *env[] = {"MAX_IN_FLIGHT=1", "NATS_TIMEOUT=8s", NULL};
    test_stack s;
    test_stack_start_catalog(&s, "shed-metrics", env);
    Book *book = test_stack_register(&s, "Shed", 1);
    int port = s.catalog.metrics_port;
    const char *started = "grpc_server_started_total{" METHOD_LABELS "}";
    const char *shed = "grpc_server_shed_total{" METHOD_LABELS "}";
    const char *exhausted = "grpc_server_handled_total{" METHOD_LABELS ",grpc_code=\"RESOURCE_EXHAUSTED\"}";
    char *before = harness_scrape(mem, port);
    cr_assert_not_null(before);

    cr_assert(harness_pause(s.nats.pid)); /* AdjustStock now waits on the store */
    adjust_call holder = {.address = s.catalog.address, .bearer = harness_bearer(mem, s.dir, "admin", true),
                          .book_id = book->book_id};
    pthread_create(&holder.thread, NULL, adjust_in_thread, &holder);
    double holding = harness_sample(before, started) + 1;
    cr_assert_eq(sample_when(port, started, holding), holding, "the first AdjustStock never started");

    enum { SHED = 4 };
    for (int i = 0; i < SHED; i++) {
        status_code code = adjust_once(s.catalog.address, holder.bearer, book->book_id);
        cr_assert_eq(code, STATUS_RESOURCE_EXHAUSTED, "call %d over the limit of 1 got %s", i,
                     status_code_name(code));
    }
    kill(s.nats.pid, SIGCONT);
    pthread_join(holder.thread, NULL);
    cr_assert_eq(holder.code, STATUS_OK, "the call holding the slot got %s", status_code_name(holder.code));

    double shed_now = sample_when(port, shed, harness_sample(before, shed) + SHED);
    cr_assert_eq(shed_now - harness_sample(before, shed), SHED, "%s moved by %g", shed,
                 shed_now - harness_sample(before, shed));
    double exhausted_now = sample_when(port, exhausted, harness_sample(before, exhausted) + SHED);
    cr_assert_eq(exhausted_now - harness_sample(before, exhausted), SHED, "%s moved by %g", exhausted,
                 exhausted_now - harness_sample(before, exhausted));
    test_stack_stop(&s);
}

/* library_event_consumer_pending is the consumer's lag: mypage's projection stalls on a paused
 * redis-server while loan events arrive, so the gauge rises above 0; once Redis is back the
 * consumer catches up and the gauge is 0 again. */
Test(observability, consumer_lag_rises_while_the_consumer_is_stalled_and_returns_to_zero) {
    const char *const lending_env[] = {FIXTURE_LENDING_ENV, NULL};
    test_stack s;
    test_stack_start(&s, "lag-metrics", lending_env, true, NULL);
    Book *book = test_stack_register(&s, "Lagging", 10);
    const char *lag = "library_event_consumer_pending{consumer=\"mypage\"}";
    int port = s.mypage.metrics_port;
    cr_assert(harness_wait_consumer_idle(s.nats.url, "mypage", 10000));
    cr_assert_eq(sample_when(port, lag, 0), 0, "the lag is not 0 before the test");

    cr_assert(harness_pause(s.redis.pid));
    enum { BORROWS = 4 };
    for (int i = 0; i < BORROWS; i++)
        test_stack_borrow_decided(&s, book->book_id, arena_sprintf(mem, "lagging-%d", i));
    /* each borrow is two loan events (requested, activated), none of which mypage can apply */
    double stalled = sample_when(port, lag, 2 * BORROWS);
    kill(s.redis.pid, SIGCONT);
    cr_assert_eq(stalled, 2 * BORROWS, "the lag is %g while mypage cannot apply any of %d events", stalled,
                 2 * BORROWS);

    cr_assert(harness_wait_consumer_idle(s.nats.url, "mypage", 15000), "mypage did not catch up");
    cr_assert_eq(sample_when(port, lag, 0), 0, "the lag is not back to 0 after mypage caught up");
    test_stack_stop(&s);
}
