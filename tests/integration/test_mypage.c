/* test_mypage.c - the mypage read model over gRPC, against real nats-server, redis-server and
 * service processes: pages follow the saga, WatchMypage streams changes, access rules, and
 * the projection stays equal to lending's truth through random load, duplicated events, a
 * killed consumer, FLUSHALL + rebuild and a Redis outage. */
#include <criterion/criterion.h>
#include <hiredis.h>
#include <jwt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "events.h"
#include "grpc/health/v1/health.pb-c.h"
#include "library/lending/v1/lending.pb-c.h"
#include "library/mypage/v1/mypage.pb-c.h"
#include "nats_connection.h"
#include "page_store.h"
#include "proxy.h"
#include "stack_fixture.h"
#include "text.h"
#include "timestamp.h"

typedef Library__Lending__V1__Loan Loan;
typedef Library__Mypage__V1__Mypage Mypage;

#define LENDING "/library.lending.v1.LendingService/"
#define MYPAGE "/library.mypage.v1.MypageService/"
#define ACTIVE LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE
#define PENDING LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING
#define CANCELED LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED
#define RETURNED LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED

TestSuite(mypage, .init = fixture_setup, .fini = fixture_teardown, .timeout = 180);

/* The services one test talks to: the shared stack or a test_stack of its own. */
typedef struct target {
    const char *dir;
    rpc_client *catalog, *lending, *mypage;
} target;

/* The login the harness gives mypage (its Redis ACL user). */
static const redis_login mypage_login = {.user = "mypage", .password = "test-mypage-secret"};

static target shared_target(void) {
    return (target){.dir = fixture_dir(), .catalog = client, .lending = lending, .mypage = mypage};
}

static target stack_target(test_stack *s) {
    return (target){.dir = s->dir, .catalog = s->catalog_client, .lending = s->lending_client,
                    .mypage = s->mypage_client};
}

static const char *unique(const char *prefix) {
    char id[13];
    text_random_hex(id, 6);
    return arena_sprintf(mem, "%s-%s", prefix, id);
}

static status_code borrow_as(target t, arena *a, const char *user, const char *book_id, Loan **out,
                             status *st) {
    Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    ProtobufCMessage *response = NULL;
    status_code code = harness_call(t.lending, LENDING "BorrowBook", &request.base,
                                    &library__lending__v1__loan__descriptor, a,
                                    harness_bearer(a, t.dir, user, false), &response, st);
    *out = (Loan *)response;
    return code;
}

static status_code return_as(target t, arena *a, const char *user, const char *loan_id, status *st) {
    Library__Lending__V1__ReturnBookRequest request = LIBRARY__LENDING__V1__RETURN_BOOK_REQUEST__INIT;
    request.loan_id = (char *)loan_id;
    ProtobufCMessage *response = NULL;
    return harness_call(t.lending, LENDING "ReturnBook", &request.base,
                        &library__lending__v1__loan__descriptor, a,
                        harness_bearer(a, t.dir, user, false), &response, st);
}

static status_code get_page(target t, const char *bearer, const char *user_id, Mypage **out,
                            status *st) {
    Library__Mypage__V1__GetMypageRequest request = LIBRARY__MYPAGE__V1__GET_MYPAGE_REQUEST__INIT;
    request.user_id = (char *)(user_id ? user_id : "");
    ProtobufCMessage *response = NULL;
    status_code code = harness_call(t.mypage, MYPAGE "GetMypage", &request.base,
                                    &library__mypage__v1__mypage__descriptor, mem, bearer, &response, st);
    *out = (Mypage *)response;
    return code;
}

static Mypage *page_of(target t, const char *user) {
    Mypage *page = NULL;
    status st;
    status_code code = get_page(t, harness_bearer(mem, t.dir, "admin", true), user, &page, &st);
    cr_assert_eq(code, STATUS_OK, "GetMypage(%s): %s %s", user, status_code_name(code), st.message);
    return page;
}

/* Every loan lending has for the user (admin ListLoans, all pages). */
static Loan **lending_truth(target t, const char *user, size_t *count) {
    Loan **all = NULL;
    cr_assert(fixture_list_loans(t.lending, mem, harness_bearer(mem, t.dir, "admin", true), user, &all, count),
              "ListLoans(%s) failed", user);
    return all;
}

/* Why the user's mypage differs from lending's loans, or NULL when they agree. */
static const char *mismatch(target t, const char *user) {
    size_t count = 0;
    Loan **truth = lending_truth(t, user, &count);
    Mypage *page = page_of(t, user);
    if (page->n_loans != count)
        return arena_sprintf(mem, "%s: mypage lists %zu loans, lending %zu", user, page->n_loans, count);
    int active = 0, overdue = 0;
    for (size_t i = 0; i < count; i++) {
        active += truth[i]->status == ACTIVE;
        overdue += truth[i]->status == ACTIVE && truth[i]->overdue;
        size_t j = 0;
        while (j < page->n_loans && strcmp(page->loans[j]->loan_id, truth[i]->loan_id) != 0)
            j++;
        if (j == page->n_loans)
            return arena_sprintf(mem, "%s: loan %s is missing from mypage", user, truth[i]->loan_id);
        if ((int)page->loans[j]->status != (int)truth[i]->status)
            return arena_sprintf(mem, "%s: loan %s is %d on mypage, %d in lending", user,
                                 truth[i]->loan_id, page->loans[j]->status, truth[i]->status);
        if (strcmp(page->loans[j]->book_id, truth[i]->book_id) != 0)
            return arena_sprintf(mem, "%s: loan %s has book %s on mypage", user, truth[i]->loan_id,
                                 page->loans[j]->book_id);
    }
    if (page->borrowed_count != active || page->overdue_count != overdue)
        return arena_sprintf(mem, "%s: mypage counts %d borrowed, %d overdue; lending %d, %d", user,
                             page->borrowed_count, page->overdue_count, active, overdue);
    return NULL;
}

/* Polls until every user's mypage agrees with lending (the projection is asynchronous). */
static void expect_pages_match(target t, const char *const *users, int user_count, int64_t wait_ms) {
    int64_t until = harness_now_ms() + wait_ms;
    const char *why = NULL;
    do {
        why = NULL;
        for (int u = 0; u < user_count && why == NULL; u++)
            why = mismatch(t, users[u]);
        if (why)
            harness_sleep_ms(100);
    } while (why != NULL && harness_now_ms() < until);
    cr_assert_null(why, "%s", why);
}

/* Every user's page, packed: byte equality means the same page. */
static uint8_t **snapshot(target t, const char *const *users, int user_count, size_t *sizes) {
    uint8_t **packed = arena_alloc(mem, (size_t)user_count * sizeof *packed);
    for (int u = 0; u < user_count; u++)
        packed[u] = arena_pack(mem, &page_of(t, users[u])->base, &sizes[u]);
    return packed;
}

static void expect_same_pages(target t, const char *const *users, int user_count, uint8_t **before,
                              const size_t *sizes) {
    for (int u = 0; u < user_count; u++) {
        size_t size = 0;
        uint8_t *now = arena_pack(mem, &page_of(t, users[u])->base, &size);
        cr_assert(size == sizes[u] && memcmp(now, before[u], size) == 0,
                  "the page of %s changed", users[u]);
    }
}

/* --- pages follow the saga ------------------------------------------------------------------ */

Test(mypage, a_new_user_has_an_empty_page) {
    const char *user = unique("nobody");
    Mypage *page = NULL;
    status st;
    cr_assert_eq(get_page(shared_target(), user_bearer(user), NULL, &page, &st), STATUS_OK, "%s", st.message);
    cr_assert_str_eq(page->user_id, user);
    cr_assert_eq(page->borrowed_count, 0);
    cr_assert_eq(page->overdue_count, 0);
    cr_assert_eq(page->n_loans, 0);
}

Test(mypage, a_borrow_and_a_return_show_on_the_page) {
    target t = shared_target();
    Book *book = register_book("Projection", "Seed", "978-90", 2);
    const char *user = unique("reader");
    Loan *loan = NULL;
    status st;
    cr_assert_eq(borrow_as(t, mem, user, book->book_id, &loan, &st), STATUS_OK, "%s", st.message);
    const char *users[] = {user};
    expect_pages_match(t, users, 1, 5000);
    Mypage *page = NULL;
    cr_assert_eq(get_page(t, user_bearer(user), NULL, &page, &st), STATUS_OK);
    cr_assert_eq(page->borrowed_count, 1);
    cr_assert_eq(page->n_loans, 1);
    cr_assert_str_eq(page->loans[0]->loan_id, loan->loan_id);
    cr_assert_str_eq(page->loans[0]->book_title, "Projection");
    cr_assert_eq(page->loans[0]->status, ACTIVE);
    cr_assert_not_null(page->loans[0]->due_time);
    cr_assert_eq(page->loans[0]->due_time->seconds, loan->due_time->seconds);
    cr_assert_not_null(page->last_event_time);

    cr_assert_eq(return_as(t, mem, user, loan->loan_id, &st), STATUS_OK, "%s", st.message);
    expect_pages_match(t, users, 1, 5000);
    page = page_of(t, user);
    cr_assert_eq(page->borrowed_count, 0);
    cr_assert_eq(page->loans[0]->status, RETURNED);
}

Test(mypage, a_compensated_borrow_shows_as_canceled) {
    target t = shared_target();
    Book *book = register_book("Only One", "Seed", "978-91", 1);
    const char *first = unique("reader"), *second = unique("reader");
    Loan *loan = NULL;
    status st;
    cr_assert_eq(borrow_as(t, mem, first, book->book_id, &loan, &st), STATUS_OK);
    cr_assert_eq(borrow_as(t, mem, second, book->book_id, &loan, &st), STATUS_OK);
    const char *users[] = {first, second};
    expect_pages_match(t, users, 2, 5000);
    Mypage *page = page_of(t, second);
    cr_assert_eq(page->n_loans, 1);
    cr_assert_eq(page->loans[0]->status, CANCELED);
    cr_assert_eq(page->borrowed_count, 0);
    cr_assert_eq(page_of(t, first)->borrowed_count, 1);
}

Test(mypage, only_the_owner_or_an_admin_reads_a_page) {
    target t = shared_target();
    const char *owner = unique("owner");
    Mypage *page = NULL;
    status st;
    cr_assert_eq(get_page(t, NULL, owner, &page, &st), STATUS_UNAUTHENTICATED);
    cr_assert_eq(get_page(t, "Bearer not-a-token", owner, &page, &st), STATUS_UNAUTHENTICATED);
    cr_assert_eq(get_page(t, user_bearer(unique("other")), owner, &page, &st), STATUS_PERMISSION_DENIED);
    cr_assert_str_eq(st.reason, "NOT_YOUR_PAGE");
    cr_assert_eq(get_page(t, user_bearer(owner), owner, &page, &st), STATUS_OK);
    cr_assert_eq(get_page(t, admin_bearer(), owner, &page, &st), STATUS_OK);
    cr_assert_str_eq(page->user_id, owner);

    char long_id[300];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    cr_assert_eq(get_page(t, admin_bearer(), long_id, &page, &st), STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(st.message, "user_id") != NULL, "the message names the field: %s", st.message);
    cr_assert_eq(get_page(t, admin_bearer(), "bad \xff utf8", &page, &st), STATUS_INVALID_ARGUMENT);
}

/* --- WatchMypage ---------------------------------------------------------------------------- */

static rpc_client_stream *watch(target t, const char *bearer, const char *user, int64_t timeout_ms,
                                status *st) {
    Library__Mypage__V1__WatchMypageRequest request = LIBRARY__MYPAGE__V1__WATCH_MYPAGE_REQUEST__INIT;
    request.user_id = (char *)(user ? user : "");
    rpc_call_options options = {.timeout_ms = timeout_ms, .authorization = bearer};
    rpc_client_stream *stream = NULL;
    status_code code = rpc_client_stream_open(t.mypage, MYPAGE "WatchMypage", &request.base, &options,
                                              &stream, st);
    cr_assert_eq(code, STATUS_OK, "WatchMypage: %s", st->message);
    return stream;
}

static status_code next_page(rpc_client_stream *stream, int64_t wait_ms, Mypage **out, status *st) {
    ProtobufCMessage *message = NULL;
    status_code code = rpc_client_stream_next(stream, &library__mypage__v1__mypage__descriptor, mem,
                                              wait_ms, &message, st);
    *out = (Mypage *)message;
    return code;
}

/* Opens a watch of user's own page and reads its first message: the page (STATUS_OK) or the
 * stream's end, whose status is returned. */
static status_code watch_first(target t, const char *user, rpc_client_stream **out, status *st) {
    *out = watch(t, user_bearer(user), NULL, 30000, st);
    Mypage *page = NULL;
    status_code code = next_page(*out, 5000, &page, st);
    if (code == STATUS_OK && page == NULL)
        code = status_set(st, STATUS_UNKNOWN, "ENDED", "the stream ended before the first page");
    return code;
}

/* A user may keep MAX_WATCHERS_PER_USER (8) streams on one server, one per device, and no
 * more: a ninth is refused with a reason, another user is not affected, and closing one
 * stream makes room again. */
Test(mypage, one_user_may_keep_eight_watches_and_no_more) {
    target t = shared_target();
    const char *user = unique("many-devices");
    enum { CAP = 8 };
    rpc_client_stream *streams[CAP];
    status st;
    for (int i = 0; i < CAP; i++)
        cr_assert_eq(watch_first(t, user, &streams[i], &st), STATUS_OK, "watch %d of %d: %s", i + 1, CAP,
                     st.message);
    rpc_client_stream *extra = NULL;
    status_clear(&st);
    status_code ninth = watch_first(t, user, &extra, &st);
    cr_assert_eq(ninth, STATUS_RESOURCE_EXHAUSTED, "a ninth watch of one user was %s %s", status_code_name(ninth),
                 st.message);
    cr_assert_str_eq(st.reason, "TOO_MANY_WATCHES");
    rpc_client_stream_close(extra);

    rpc_client_stream *other = NULL;
    cr_assert_eq(watch_first(t, unique("neighbour"), &other, &st), STATUS_OK, "another user: %s", st.message);
    rpc_client_stream_close(other);

    rpc_client_stream_close(streams[0]);
    status_code code = STATUS_RESOURCE_EXHAUSTED;
    for (int64_t until = harness_now_ms() + harness_latency_bound_ms(5000);
         code == STATUS_RESOURCE_EXHAUSTED && harness_now_ms() < until;) {
        code = watch_first(t, user, &streams[0], &st);
        if (code != STATUS_OK) {
            rpc_client_stream_close(streams[0]);
            harness_sleep_ms(100);
        }
    }
    cr_assert_eq(code, STATUS_OK, "a closed watch makes room for another: %s", st.message);
    for (int i = 0; i < CAP; i++)
        rpc_client_stream_close(streams[i]);
}

Test(mypage, watch_sends_the_page_then_each_change_within_a_second) {
    target t = shared_target();
    Book *book = register_book("Watched", "Seed", "978-92", 3);
    const char *user = unique("watcher");
    status st;
    rpc_client_stream *stream = watch(t, user_bearer(user), NULL, 20000, &st);
    Mypage *page = NULL;
    cr_assert_eq(next_page(stream, 5000, &page, &st), STATUS_OK, "%s", st.message);
    cr_assert_not_null(page, "the stream ended before the first page");
    cr_assert_eq(page->n_loans, 0);

    Loan *loan = NULL;
    int64_t borrowed_at = harness_now_ms();
    cr_assert_eq(borrow_as(t, mem, user, book->book_id, &loan, &st), STATUS_OK);
    /* the page goes PENDING -> ACTIVE: wait for the ACTIVE one, each within a second */
    bool active = false;
    while (!active) {
        status_code code = next_page(stream, 1000, &page, &st);
        cr_assert_eq(code, STATUS_OK, "no update within a second of the last one: %s", st.message);
        cr_assert_not_null(page);
        active = page->n_loans == 1 && page->loans[0]->status == ACTIVE;
    }
    int64_t latency = harness_now_ms() - borrowed_at;
    cr_assert_lt(latency, harness_latency_bound_ms(2000), "the ACTIVE page came %lld ms after the borrow", (long long)latency);
    cr_assert_eq(page->borrowed_count, 1);
    cr_log_info("WatchMypage showed the ACTIVE loan %lld ms after BorrowBook was sent", (long long)latency);

    cr_assert_eq(return_as(t, mem, user, loan->loan_id, &st), STATUS_OK);
    cr_assert_eq(next_page(stream, 1000, &page, &st), STATUS_OK, "%s", st.message);
    cr_assert_not_null(page);
    cr_assert_eq(page->loans[0]->status, RETURNED);
    rpc_client_stream_close(stream);
}

static status_code place_hold_as(target t, const char *user, const char *book_id,
                                 Library__Lending__V1__Hold **out, status *st) {
    Library__Lending__V1__PlaceHoldRequest request = LIBRARY__LENDING__V1__PLACE_HOLD_REQUEST__INIT;
    request.book_id = (char *)book_id;
    ProtobufCMessage *response = NULL;
    status_code code = harness_call(t.lending, LENDING "PlaceHold", &request.base,
                                    &library__lending__v1__hold__descriptor, mem, user_bearer(user), &response, st);
    *out = (Library__Lending__V1__Hold *)response;
    return code;
}

/* Reads the watch until the page shows the hold in this status (and position), for at most
 * wait_ms; the page, or NULL. */
static Mypage *watch_until_hold(rpc_client_stream *stream, const char *hold_id,
                                Library__Lending__V1__HoldStatus wanted, int32_t position, int64_t wait_ms) {
    int64_t until = harness_now_ms() + wait_ms;
    Mypage *page = NULL;
    status st;
    while (harness_now_ms() < until) {
        status_code code = next_page(stream, until - harness_now_ms(), &page, &st);
        if (code != STATUS_OK || page == NULL)
            return NULL;
        for (size_t i = 0; i < page->n_holds; i++)
            if (strcmp(page->holds[i]->hold_id, hold_id) == 0 && page->holds[i]->status == wanted &&
                page->holds[i]->position == position)
                return page;
    }
    return NULL;
}

/* DESIGN.md section 10: WatchMypage pushes a hold turning READY within a second. A reader
 * holds a book whose only copy is out; the watch shows the hold WAITING first in the queue,
 * then READY once the borrower returns the copy (the catalog's HoldReady, through lending's
 * hold record and mypage's projection), measured from the return's answer. The shared
 * stack's catalog sets copies aside for HOLD_PICKUP=4s. */
Test(mypage, watch_pushes_a_hold_turning_ready_within_a_second_of_the_return) {
    target t = shared_target();
    Book *book = register_book("Held", "Seed", "978-93", 1);
    const char *borrower = unique("borrower"), *holder = unique("holder");
    status st;
    Loan *loan = NULL;
    cr_assert_eq(borrow_as(t, mem, borrower, book->book_id, &loan, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(loan->status, ACTIVE, "the only copy is lent");

    rpc_client_stream *stream = watch(t, user_bearer(holder), NULL, 30000, &st);
    Mypage *page = NULL;
    cr_assert_eq(next_page(stream, 5000, &page, &st), STATUS_OK, "%s", st.message);
    cr_assert_not_null(page, "the stream ended before the first page");
    cr_assert_eq(page->n_holds, 0);

    Library__Lending__V1__Hold *hold = NULL;
    cr_assert_eq(place_hold_as(t, holder, book->book_id, &hold, &st), STATUS_OK, "PlaceHold: %s", st.message);
    page = watch_until_hold(stream, hold->hold_id, LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_WAITING, 1,
                            harness_latency_bound_ms(5000));
    cr_assert_not_null(page, "the watch never showed the hold WAITING at position 1");
    cr_assert_eq(page->n_holds, 1);
    cr_assert_str_eq(page->holds[0]->book_id, book->book_id);

    cr_assert_eq(return_as(t, mem, borrower, loan->loan_id, &st), STATUS_OK, "ReturnBook: %s", st.message);
    int64_t returned_at = harness_now_ms();
    page = watch_until_hold(stream, hold->hold_id, LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_READY, 0,
                            harness_latency_bound_ms(5000));
    int64_t latency = harness_now_ms() - returned_at;
    cr_assert_not_null(page, "the watch never showed the hold READY after the return");
    cr_assert_lt(latency, harness_latency_bound_ms(1000), "the READY hold came %lld ms after the return's answer",
                 (long long)latency);
    cr_log_info("WatchMypage showed the hold READY %lld ms after ReturnBook answered", (long long)latency);
    const Google__Protobuf__Timestamp *expire = page->holds[0]->expire_time;
    cr_assert_not_null(expire, "a READY hold shows until when its copy waits");
    int64_t waits_ms = expire->seconds * 1000 + expire->nanos / 1000000 - timestamp_now_ms();
    cr_assert(waits_ms > 0 && waits_ms <= 4000, "the copy waits %lld ms more, HOLD_PICKUP is 4s", (long long)waits_ms);
    rpc_client_stream_close(stream);
}

Test(mypage, watch_ends_cleanly_at_its_deadline_and_checks_access) {
    target t = shared_target();
    const char *user = unique("watcher");
    status st;
    rpc_client_stream *stream = watch(t, user_bearer(user), NULL, 700, &st);
    Mypage *page = NULL;
    cr_assert_eq(next_page(stream, 5000, &page, &st), STATUS_OK);
    cr_assert_not_null(page);
    int64_t start = harness_now_ms();
    status_code code = next_page(stream, 5000, &page, &st);
    cr_assert_eq(code, STATUS_DEADLINE_EXCEEDED, "got %s: %s", status_code_name(code), st.message);
    cr_assert_lt(harness_now_ms() - start, harness_latency_bound_ms(2000));
    rpc_client_stream_close(stream);

    stream = watch(t, user_bearer(unique("other")), user, 5000, &st);
    cr_assert_eq(next_page(stream, 5000, &page, &st), STATUS_PERMISSION_DENIED);
    rpc_client_stream_close(stream);
    /* the service is still healthy and answering */
    cr_assert_eq(get_page(t, user_bearer(user), NULL, &page, &st), STATUS_OK);
}

/* The exp claim of a token this test signed, in ms since the epoch. */
static int64_t token_expiry_ms(const char *token) {
    jwt_t *jwt = NULL;
    cr_assert_eq(jwt_decode(&jwt, token, NULL, 0), 0, "the test's own token does not decode");
    int64_t exp = (int64_t)jwt_get_grant_int(jwt, "exp");
    jwt_free(jwt);
    return exp * 1000;
}

static int64_t wall_clock_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* A token is checked when the watch opens; the watch must not outlive it. A mypage without
 * clock-skew leeway, so that the end is due at exp itself. */
Test(mypage, a_watch_ends_unauthenticated_when_its_token_expires_and_a_longer_one_goes_on) {
    const char *dir = arena_sprintf(mem, "%s/%s", fixture_dir(), unique("expiry"));
    cr_assert_eq(mkdir(dir, 0755), 0);
    cr_assert(harness_keys_create(dir));
    const char *const env[] = {"JWT_LEEWAY=0s", NULL};
    harness_process own;
    target t = {.dir = dir};
    fixture_own_mypage(dir, env, &own, &t.mypage);

    const char *user = unique("expiring");
    harness_token_options two_seconds = {.subject = user, .ttl_seconds = 2};
    char *token = harness_token(mem, dir, &two_seconds);
    cr_assert_not_null(token);
    int64_t expires_ms = token_expiry_ms(token);
    status st;
    rpc_client_stream *short_watch = watch(t, arena_sprintf(mem, "Bearer %s", token), NULL, 30000, &st);
    rpc_client_stream *long_watch = watch(t, harness_bearer(mem, dir, user, false), NULL, 30000, &st);
    Mypage *page = NULL;
    cr_assert_eq(next_page(short_watch, 5000, &page, &st), STATUS_OK,
                 "the watch with the 2 s token ended before its first page: %s", st.message);
    cr_assert_not_null(page, "the watch with the 2 s token ended before its first page");
    cr_assert_eq(next_page(long_watch, 5000, &page, &st), STATUS_OK,
                 "the watch with the 1 h token ended before its first page: %s", st.message);
    cr_assert_not_null(page, "the watch with the 1 h token ended before its first page");

    status_code code = next_page(short_watch, 10000, &page, &st);
    int64_t ended_ms = wall_clock_ms();
    cr_assert_eq(code, STATUS_UNAUTHENTICATED, "the watch with the 2 s token got %s (%s), not UNAUTHENTICATED",
                 status_code_name(code), page ? "a page" : st.message);
    cr_assert(strstr(st.message, "token expired") != NULL, "the message does not say why: %s", st.message);
    cr_assert_geq(ended_ms, expires_ms, "it ended %lld ms before the token's exp",
                  (long long)(expires_ms - ended_ms));
    cr_assert_leq(ended_ms - expires_ms, harness_latency_bound_ms(1000),
                  "it ended %lld ms after the token's exp", (long long)(ended_ms - expires_ms));
    cr_log_info("the watch ended %lld ms after its token's exp", (long long)(ended_ms - expires_ms));

    code = next_page(long_watch, 500, &page, &st);
    cr_assert_eq(code, STATUS_DEADLINE_EXCEEDED, "the watch with the 1 h token ended too: %s %s",
                 status_code_name(code), st.message);
    cr_assert_str_eq(st.reason, "WAIT_TIMEOUT", "the watch with the 1 h token ended too: %s", st.message);
    rpc_client_stream_close(short_watch);
    rpc_client_stream_close(long_watch);
    rpc_client_destroy(t.mypage);
    cr_assert_eq(harness_process_stop(&own, SIGTERM, 15000), 0, "log: %s", own.log_path);
}

/* --- the projection equals lending's truth --------------------------------------------------- */

enum { MIX_MAX_USERS = 32, MIX_MAX_BOOKS = 8, MAX_ACTIVE_LOANS = 5 /* lending's default */ };

/* What lending answered to random mixes, so a lending that refuses, cancels or fails every
 * borrow cannot pass for one whose empty pages equal its empty ListLoans. Per book and per
 * user (indexes into the workload's arrays), because that is where the rules are: a borrow
 * ends CANCELED only when its book's copies are all out, and is refused LOAN_LIMIT only when
 * its user has MAX_ACTIVE_LOANS open loans. */
typedef struct mix_tally {
    int active, pending, out_of_stock, loan_limit, returned;
    int taken[MIX_MAX_BOOKS];     /* borrows answered ACTIVE or PENDING */
    int sold_out[MIX_MAX_BOOKS];  /* borrows answered CANCELED, OUT_OF_STOCK */
    int opened[MIX_MAX_USERS];    /* borrows answered ACTIVE or PENDING */
    bool limited[MIX_MAX_USERS];  /* a borrow was refused LOAN_LIMIT */
    int unexpected;
    char first_unexpected[256];
} mix_tally;

/* Users and books of one test, and everything lending answered them so far. */
typedef struct workload {
    target t;
    const char **users;
    int user_count;
    const char **books;
    int book_count, copies;
    mix_tally made;
} workload;

typedef struct mix {
    const workload *w;
    int first_user, user_count;
    int operations;
    unsigned seed;
    mix_tally tally;
} mix;

static void unexpected_answer(mix_tally *tally, const char *call, status_code code, const char *reason,
                              const char *message) {
    if (tally->unexpected++ == 0)
        snprintf(tally->first_unexpected, sizeof tally->first_unexpected, "%s: %s %.40s %.160s", call,
                 status_code_name(code), reason, message);
}

/* Files a BorrowBook answer; true when it is an ACTIVE loan the mix may return. */
static bool tally_borrow(mix_tally *tally, int user, int book, status_code code, const Loan *loan,
                         const status *st) {
    if (code == STATUS_FAILED_PRECONDITION && strcmp(st->reason, "LOAN_LIMIT") == 0) {
        tally->loan_limit++;
        tally->limited[user] = true;
    } else if (code != STATUS_OK) {
        unexpected_answer(tally, "BorrowBook", code, st->reason, st->message);
    } else if (loan->status == ACTIVE || loan->status == PENDING) { /* PENDING: past BORROW_WAIT */
        tally->active += loan->status == ACTIVE;
        tally->pending += loan->status == PENDING;
        tally->taken[book]++;
        tally->opened[user]++;
        return loan->status == ACTIVE;
    } else if (loan->status == CANCELED && strcmp(loan->cancel_reason, "OUT_OF_STOCK") == 0) {
        tally->out_of_stock++;
        tally->sold_out[book]++;
    } else {
        char message[128];
        snprintf(message, sizeof message, "a loan in status %d", loan->status);
        unexpected_answer(tally, "BorrowBook", code, loan->cancel_reason, message);
    }
    return false;
}

/* Borrows and returns at random: about a third of the operations return an ACTIVE loan. */
static void *random_mix(void *arg) {
    mix *m = arg;
    arena *a = arena_create(0);
    const char *held[64];
    const char *holder[64];
    int held_count = 0;
    for (int i = 0; i < m->operations; i++) {
        status st;
        if (held_count > 0 && rand_r(&m->seed) % 3 == 0) {
            int k = (int)(rand_r(&m->seed) % (unsigned)held_count);
            status_code code = return_as(m->w->t, a, holder[k], held[k], &st);
            if (code == STATUS_OK)
                m->tally.returned++;
            else
                unexpected_answer(&m->tally, "ReturnBook of an ACTIVE loan", code, st.reason, st.message);
            held[k] = held[--held_count];
            holder[k] = holder[held_count];
            continue;
        }
        int user = m->first_user + (int)(rand_r(&m->seed) % (unsigned)m->user_count);
        int book = (int)(rand_r(&m->seed) % (unsigned)m->w->book_count);
        Loan *loan = NULL;
        status_code code = borrow_as(m->w->t, a, m->w->users[user], m->w->books[book], &loan, &st);
        if (tally_borrow(&m->tally, user, book, code, loan, &st) && held_count < 64) {
            holder[held_count] = arena_strdup(a, m->w->users[user]);
            held[held_count++] = arena_strdup(a, loan->loan_id);
        }
    }
    arena_destroy(a);
    return NULL;
}

static void tally_add(mix_tally *total, const mix_tally *part) {
    total->active += part->active;
    total->pending += part->pending;
    total->out_of_stock += part->out_of_stock;
    total->loan_limit += part->loan_limit;
    total->returned += part->returned;
    for (int b = 0; b < MIX_MAX_BOOKS; b++) {
        total->taken[b] += part->taken[b];
        total->sold_out[b] += part->sold_out[b];
    }
    for (int u = 0; u < MIX_MAX_USERS; u++) {
        total->opened[u] += part->opened[u];
        total->limited[u] |= part->limited[u];
    }
    if (total->unexpected == 0)
        memcpy(total->first_unexpected, part->first_unexpected, sizeof total->first_unexpected);
    total->unexpected += part->unexpected;
}

/* Checks lending's answers so far against its rules: no answer but a loan or a LOAN_LIMIT
 * refusal, a copy out of stock only once the copies were all taken, a refusal only with the
 * limit reached. Only once every mix that ran at the same time is added: another mix may
 * hold the copies. */
static void expect_answers_keep_the_rules(const workload *w) {
    const mix_tally *made = &w->made;
    cr_assert_eq(made->unexpected, 0, "%d calls failed unexpectedly; the first: %s", made->unexpected,
                 made->first_unexpected);
    for (int b = 0; b < w->book_count; b++)
        cr_assert(made->sold_out[b] == 0 || made->taken[b] >= w->copies,
                  "book %d: %d borrows CANCELED OUT_OF_STOCK but only %d got one of its %d copies", b,
                  made->sold_out[b], made->taken[b], w->copies);
    for (int u = 0; u < w->user_count; u++)
        cr_assert(!made->limited[u] || made->opened[u] >= MAX_ACTIVE_LOANS,
                  "%s was refused LOAN_LIMIT after only %d loans", w->users[u], made->opened[u]);
}

/* Runs `threads` random mixes over the workload's users and books at once. */
static void run_mix(workload *w, int threads, int operations_each) {
    mix mixes[8];
    pthread_t ids[8];
    int per_thread = w->user_count / threads;
    for (int i = 0; i < threads; i++) {
        mixes[i] = (mix){.w = w, .first_user = i * per_thread, .user_count = per_thread,
                         .operations = operations_each, .seed = (unsigned)(harness_now_ms() + i)};
        pthread_create(&ids[i], NULL, random_mix, &mixes[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(ids[i], NULL);
    for (int i = 0; i < threads; i++)
        tally_add(&w->made, &mixes[i].tally);
    expect_answers_keep_the_rules(w);
    const mix_tally *made = &w->made;
    cr_log_info("random mixes so far: %d ACTIVE, %d PENDING, %d OUT_OF_STOCK, %d LOAN_LIMIT, %d returned",
                made->active, made->pending, made->out_of_stock, made->loan_limit, made->returned);
}

/* Borrows lending answered with a loan, whatever became of it. */
static int loans_made(const mix_tally *made) {
    return made->active + made->pending + made->out_of_stock;
}

/* A mix on a thread of its own (one over all users) while the test does something else. */
typedef struct background_mix {
    pthread_t thread;
    mix m;
} background_mix;

static void background_mix_start(background_mix *b, const workload *w, int operations, unsigned seed) {
    b->m = (mix){.w = w, .user_count = w->user_count, .operations = operations, .seed = seed};
    pthread_create(&b->thread, NULL, random_mix, &b->m);
}

static void background_mix_finish(background_mix *b, workload *w) {
    pthread_join(b->thread, NULL);
    tally_add(&w->made, &b->m.tally);
    expect_answers_keep_the_rules(w);
}

static const char **make_users(int count, const char *prefix) {
    const char **users = arena_alloc(mem, (size_t)count * sizeof *users);
    for (int u = 0; u < count; u++)
        users[u] = unique(prefix);
    return users;
}

static const char **make_books(target t, int count, int copies) {
    const char **books = arena_alloc(mem, (size_t)count * sizeof *books);
    for (int b = 0; b < count; b++) {
        Library__Catalog__V1__RegisterBookRequest request = LIBRARY__CATALOG__V1__REGISTER_BOOK_REQUEST__INIT;
        request.title = arena_sprintf(mem, "Mixed | %d", b); /* a '|' in the title on purpose */
        request.author = "Random";
        request.copies = copies;
        ProtobufCMessage *response = NULL;
        status st;
        cr_assert_eq(harness_call(t.catalog, CATALOG "RegisterBook", &request.base,
                                  &library__catalog__v1__book__descriptor, mem,
                                  harness_bearer(mem, t.dir, "admin", true), &response, &st),
                     STATUS_OK, "%s", st.message);
        books[b] = ((Book *)response)->book_id;
    }
    return books;
}

static workload make_workload(target t, const char *prefix, int users, int books, int copies) {
    cr_assert(users <= MIX_MAX_USERS && books <= MIX_MAX_BOOKS);
    return (workload){.t = t, .users = make_users(users, prefix), .user_count = users,
                      .books = make_books(t, books, copies), .book_count = books, .copies = copies};
}

/* The workload's loans in lending, by status (indexes are LoanStatus values). */
static void count_truth(const workload *w, int by_status[5], int *total) {
    memset(by_status, 0, 5 * sizeof *by_status);
    *total = 0;
    for (int u = 0; u < w->user_count; u++) {
        size_t count = 0;
        Loan **loans = lending_truth(w->t, w->users[u], &count);
        for (size_t i = 0; i < count; i++)
            by_status[loans[i]->status < 5 ? loans[i]->status : 0]++;
        *total += (int)count;
    }
}

/* At rest (no loan PENDING), lending holds exactly the loans it answered: one per borrow
 * answered OK, every return RETURNED, every borrow answered ACTIVE still ACTIVE or RETURNED;
 * then every page equals lending's loans, so the pages show them all. */
static void expect_pages_show_what_lending_made(const workload *w, int64_t wait_ms) {
    int by_status[5], total;
    int64_t until = harness_now_ms() + wait_ms;
    do {
        count_truth(w, by_status, &total);
        if (by_status[PENDING] > 0)
            harness_sleep_ms(100);
    } while (by_status[PENDING] > 0 && harness_now_ms() < until);
    const mix_tally *made = &w->made;
    cr_assert_eq(by_status[PENDING], 0, "%d loans still PENDING after %lld ms", by_status[PENDING],
                 (long long)wait_ms);
    cr_assert_eq(total, loans_made(made), "lending lists %d loans but answered %d borrows with a loan", total,
                 loans_made(made));
    cr_assert_eq(by_status[RETURNED], made->returned, "lending lists %d RETURNED loans, %d returns were answered OK",
                 by_status[RETURNED], made->returned);
    cr_assert_geq(by_status[ACTIVE] + by_status[RETURNED], made->active,
                  "%d borrows were answered ACTIVE but lending has only %d loans ACTIVE or RETURNED",
                  made->active, by_status[ACTIVE] + by_status[RETURNED]);
    cr_assert_geq(by_status[CANCELED], made->out_of_stock, "%d borrows were answered OUT_OF_STOCK, %d loans are CANCELED",
                  made->out_of_stock, by_status[CANCELED]);
    expect_pages_match(w->t, w->users, w->user_count, wait_ms);
}

/* The 20 users borrow 5 books of 3 copies in 300 operations, about 200 borrows and 100
 * returns: each book is drawn some 40 times, far more than its copies, so in a working
 * system every copy goes out at least once (15 ACTIVE), and a return comes whenever a thread
 * holds a loan and draws one (a third of its operations): 30 is a tenth of the operations. */
Test(mypage, after_a_random_mix_of_twenty_users_every_page_equals_list_loans) {
    enum { USERS = 20, BOOKS = 5, COPIES = 3, THREADS = 4, OPERATIONS = 75 };
    workload w = make_workload(shared_target(), "mix", USERS, BOOKS, COPIES);
    run_mix(&w, THREADS, OPERATIONS);
    cr_assert_geq(w.made.active, BOOKS * COPIES, "only %d borrows were answered ACTIVE", w.made.active);
    cr_assert_geq(w.made.returned, THREADS * OPERATIONS / 10, "only %d loans were returned", w.made.returned);
    expect_pages_show_what_lending_made(&w, 10000);
    Mypage *page = page_of(w.t, w.users[0]);
    for (size_t i = 0; i < page->n_loans; i++)
        cr_assert(strncmp(page->loans[i]->book_title, "Mixed | ", 8) == 0, "title %s",
                  page->loans[i]->book_title);
}

/* --- duplicates, crashes, rebuild, Redis outage (stacks of their own) ------------------------ */

static const char *const mypage_env[] = {"EVENT_ACK_WAIT=2s", NULL};
static const char *const lending_env[] = {"RECONCILE_INTERVAL=1s", "RECONCILE_AFTER=2s", NULL};

typedef struct collected {
    event **events;
    size_t count;
} collected;

static status_code collect(void *arg, const event *e, uint64_t sequence, status *st) {
    (void)sequence;
    (void)st;
    collected *c = arg;
    size_t size = library__events__v1__event__get_packed_size(e);
    uint8_t *bytes = malloc(size);
    library__events__v1__event__pack(e, bytes);
    c->events = realloc(c->events, (c->count + 1) * sizeof *c->events);
    c->events[c->count++] = library__events__v1__event__unpack(NULL, size, bytes);
    free(bytes);
    return STATUS_OK;
}

static nats_connection *connect_nats(const char *url) {
    nats_connection *connection = NULL;
    nats_connection_options options = harness_nats_options(url, "test");
    options.connect_timeout_ms = 5000;
    status st;
    cr_assert_eq(nats_connection_open(&options, &connection, &st), STATUS_OK, "%s", st.message);
    return connection;
}

Test(mypage, every_loan_event_published_again_changes_no_page) {
    test_stack s;
    test_stack_start(&s, "duplicates", lending_env, true, mypage_env);
    target t = stack_target(&s);
    enum { USERS = 6 };
    workload w = make_workload(t, "dup", USERS, 2, 2);
    const char **users = w.users;
    run_mix(&w, 2, 20);
    expect_pages_show_what_lending_made(&w, 10000);
    size_t sizes[USERS];
    uint8_t **before = snapshot(t, users, USERS, sizes);

    /* every loan event again, under new message ids (so JetStream stores them again) */
    nats_connection *connection = connect_nats(s.nats.url);
    collected c = {0};
    status st;
    cr_assert_eq(events_replay(connection, EVENTS_LOAN_SUBJECTS, collect, &c, NULL, &st), STATUS_OK,
                 "%s", st.message);
    cr_assert_gt(c.count, 20);
    for (size_t i = 0; i < c.count; i++) {
        char *original = c.events[i]->event_id;
        c.events[i]->event_id = arena_sprintf(mem, "%s-again", original);
        cr_assert_eq(events_publish(connection, c.events[i], &st), STATUS_OK,
                     "%s", st.message);
        c.events[i]->event_id = original;
    }
    /* the projection reads them all: wait until its consumer has nothing pending */
    cr_assert(harness_wait_consumer_idle(s.nats.url, "mypage", 10000),
              "mypage's consumer still had events pending after 10 s");
    expect_same_pages(t, users, USERS, before, sizes);
    expect_pages_match(t, users, USERS, 5000);
    cr_log_info("%zu loan events published again; no page changed", c.count);
    for (size_t i = 0; i < c.count; i++)
        library__events__v1__event__free_unpacked(c.events[i], NULL);
    free(c.events);
    nats_connection_close(connection);
    test_stack_stop(&s);
}

/* The sequence of the stream's newest message on subject, or 0. */
static uint64_t last_on(const char *nats_url, const char *subject) {
    natsConnection *connection = NULL;
    jsCtx *js = NULL;
    natsMsg *message = NULL;
    uint64_t sequence = 0;
    if (harness_nats_connect(&connection, nats_url) == NATS_OK && natsConnection_JetStream(&js, connection, NULL) == NATS_OK &&
        js_GetLastMsg(&message, js, EVENTS_STREAM, subject, NULL, NULL) == NATS_OK)
        sequence = natsMsg_GetSequence(message);
    natsMsg_Destroy(message);
    jsCtx_Destroy(js);
    natsConnection_Destroy(connection);
    return sequence;
}

static void delete_event(const char *nats_url, uint64_t sequence) {
    natsConnection *connection = NULL;
    jsCtx *js = NULL;
    cr_assert_eq(harness_nats_connect(&connection, nats_url), NATS_OK);
    cr_assert_eq(natsConnection_JetStream(&js, connection, NULL), NATS_OK);
    cr_assert_eq(js_DeleteMsg(js, EVENTS_STREAM, sequence, NULL, NULL), NATS_OK, "event %llu not deleted",
                 (unsigned long long)sequence);
    jsCtx_Destroy(js);
    natsConnection_Destroy(connection);
}

/* What a stream replica set that diverged in a partition did once (nats-server 2.9.10, the
 * cluster suite): the catalog's consumer saw a LoanReturned and answered it, mypage's never
 * saw it. Here mypage is away while the loan is returned, and the LoanReturned is taken out of
 * the stream once the catalog has put the copy back: lending's restatement brings the page to
 * RETURNED, where without it the page shows the loan ACTIVE for good. */
Test(mypage, a_final_event_mypage_never_saw_is_announced_again) {
    test_stack s;
    test_stack_start(&s, "restated", lending_env, true, mypage_env);
    target t = stack_target(&s);
    Book *book = test_stack_register(&s, "Restated", 1);
    const char *user = unique("restated");
    const char *bearer = harness_bearer(mem, s.dir, user, false);
    Loan *loan = test_stack_borrow_as(&s, bearer, book->book_id);
    const char *users[] = {user};
    expect_pages_match(t, users, 1, 5000); /* ACTIVE on the page */

    int port = s.mypage.port;
    cr_assert_eq(harness_process_stop(&s.mypage, SIGTERM, 5000), 0);
    uint64_t returned_before = last_on(s.nats.url, "library.events.loan.returned");
    test_stack_return_as(&s, bearer, loan->loan_id);
    uint64_t released = 0;
    for (int64_t until = harness_now_ms() + 10000; released == 0 && harness_now_ms() < until; harness_sleep_ms(50))
        released = last_on(s.nats.url, "library.events.copy.released");
    cr_assert_neq(released, 0, "the catalog did not put the copy back");
    uint64_t returned = last_on(s.nats.url, "library.events.loan.returned");
    cr_assert_gt(returned, returned_before, "no LoanReturned in the stream");
    delete_event(s.nats.url, returned);

    char port_env[32];
    snprintf(port_env, sizeof port_env, "GRPC_PORT=%d", port);
    const char *restart_env[] = {"EVENT_ACK_WAIT=2s", port_env, NULL};
    cr_assert(fixture_start_mypage(s.dir, s.nats.url, s.redis.url, restart_env, &s.mypage),
              "mypage did not restart: %s", s.mypage.log_path);
    /* RECONCILE_AFTER (2 s) after the loan settled, in the next round (1 s) */
    const char *why = "";
    for (int64_t until = harness_now_ms() + harness_latency_bound_ms(10000); harness_now_ms() < until;
         harness_sleep_ms(100)) {
        Mypage *page = NULL;
        status st;
        if (get_page(t, harness_bearer(mem, s.dir, "admin", true), user, &page, &st) != STATUS_OK) {
            why = arena_sprintf(mem, "GetMypage: %s", st.message);
            continue;
        }
        why = page->n_loans == 1 ? arena_sprintf(mem, "the page shows the loan as %d", page->loans[0]->status)
                                 : arena_sprintf(mem, "the page lists %zu loans", page->n_loans);
        if (page->n_loans == 1 && page->loans[0]->status == RETURNED && page->borrowed_count == 0)
            break;
    }
    cr_assert_null(mismatch(t, user), "%s", why);
    cr_assert_gt(last_on(s.nats.url, EVENTS_RESTATED_SUBJECT), 0, "no EventsRestated in the stream");
    test_stack_stop(&s);
}

Test(mypage, a_projection_killed_mid_stream_catches_up_exactly) {
    test_stack s;
    test_stack_start(&s, "killed", lending_env, true, mypage_env);
    enum { USERS = 8 };
    workload w = make_workload(stack_target(&s), "kill", USERS, 3, 3);
    background_mix b;
    background_mix_start(&b, &w, 120, 7);
    harness_sleep_ms(700);
    int port = s.mypage.port;
    cr_assert_eq(harness_process_stop(&s.mypage, SIGKILL, 5000), 128 + SIGKILL);
    harness_sleep_ms(500);
    char port_env[32];
    snprintf(port_env, sizeof port_env, "GRPC_PORT=%d", port);
    const char *restart_env[] = {"EVENT_ACK_WAIT=2s", port_env, NULL};
    cr_assert(fixture_start_mypage(s.dir, s.nats.url, s.redis.url, restart_env, &s.mypage),
              "mypage did not restart: %s", s.mypage.log_path);
    background_mix_finish(&b, &w);
    expect_pages_show_what_lending_made(&w, 15000);
    test_stack_stop(&s);
}

static void redis_command(const harness_process *redis, const char *command) {
    redisContext *c = harness_redis_connect(redis->port);
    cr_assert(c != NULL && c->err == 0, "cannot reach redis");
    redisReply *reply = redisCommand(c, command);
    cr_assert(reply != NULL && reply->type != REDIS_REPLY_ERROR, "%s failed", command);
    freeReplyObject(reply);
    redisFree(c);
}

static int rebuild(test_stack *s) {
    char nats_env[160], redis_env[160];
    snprintf(nats_env, sizeof nats_env, "NATS_URL=%s", s->nats.url);
    snprintf(redis_env, sizeof redis_env, "REDIS_URL=%s", s->redis.url);
    const char *env[] = {nats_env, redis_env, NULL};
    /* under the sanitizers, with loans going on, one replay can take more than a minute; the
     * bound stays inside the suite's 180 s, so a rebuild that hangs leaves its stacks */
    return harness_service_run("mypage", "--rebuild", s->dir, env, harness_latency_bound_ms(45000));
}

typedef struct reader {
    pthread_t thread;
    target t;
    const char *const *users;
    int user_count;
    uint8_t **expected;
    const size_t *sizes;
    volatile bool stop;
    int reads, wrong, failed;
} reader;

/* Reads pages in a loop and counts answers that are not OK or not the expected page. */
static void *reader_main(void *arg) {
    reader *r = arg;
    arena *a = arena_create(0);
    const char *bearer = harness_bearer(a, r->t.dir, "admin", true);
    while (!r->stop) {
        for (int u = 0; u < r->user_count; u++) {
            Library__Mypage__V1__GetMypageRequest request = LIBRARY__MYPAGE__V1__GET_MYPAGE_REQUEST__INIT;
            request.user_id = (char *)r->users[u];
            ProtobufCMessage *response = NULL;
            status st;
            r->reads++;
            if (harness_call(r->t.mypage, MYPAGE "GetMypage", &request.base,
                             &library__mypage__v1__mypage__descriptor, a, bearer, &response, &st) != STATUS_OK) {
                r->failed++;
                continue;
            }
            size_t size = 0;
            uint8_t *packed = arena_pack(a, response, &size);
            r->wrong += size != r->sizes[u] || memcmp(packed, r->expected[u], size) != 0;
        }
        arena_reset(a);
        bearer = harness_bearer(a, r->t.dir, "admin", true);
    }
    arena_destroy(a);
    return NULL;
}

static uint64_t generation_in_use(const harness_process *redis);

Test(mypage, flushall_then_rebuild_gives_the_same_pages_and_reads_never_stop) {
    test_stack s;
    test_stack_start(&s, "rebuild", lending_env, true, mypage_env);
    target t = stack_target(&s);
    enum { USERS = 10 };
    workload w = make_workload(t, "rebuild", USERS, 3, 2);
    const char **users = w.users;
    run_mix(&w, 2, 40);
    expect_pages_show_what_lending_made(&w, 10000);
    size_t sizes[USERS];
    uint8_t **before = snapshot(t, users, USERS, sizes);

    redis_command(&s.redis, "FLUSHALL");
    cr_assert_eq(page_of(t, users[0])->n_loans, 0, "FLUSHALL should have emptied the pages");
    cr_assert_eq(rebuild(&s), 0, "mypage --rebuild failed; log in %s", s.dir);
    expect_same_pages(t, users, USERS, before, sizes);

    /* a rebuild while readers read: every read answers, and with the same page */
    reader r = {.t = t, .users = users, .user_count = USERS, .expected = before, .sizes = sizes};
    pthread_create(&r.thread, NULL, reader_main, &r);
    harness_sleep_ms(200);
    cr_assert_eq(rebuild(&s), 0, "the second rebuild failed; log in %s", s.dir);
    harness_sleep_ms(200);
    r.stop = true;
    pthread_join(r.thread, NULL);
    cr_assert_eq(r.failed, 0, "%d of %d reads failed during the rebuild", r.failed, r.reads);
    cr_assert_eq(r.wrong, 0, "%d of %d reads saw another page during the rebuild", r.wrong, r.reads);
    cr_assert_gt(r.reads, USERS);
    expect_same_pages(t, users, USERS, before, sizes);
    /* the old generation's keys are gone: only the pages in use (and the counters, the
     * generation's set of settled loans for retention and the word that its pages need no pass
     * of the sweep) remain; a reader the random mix never lent anything to has no page at all */
    long long pages = 0;
    for (int i = 0; i < USERS; i++)
        pages += page_of(t, users[i])->n_loans > 0;
    redisContext *c = harness_redis_connect(s.redis.port);
    redisReply *reply = redisCommand(c, "EXISTS mypage:%llu:retention:settled",
                                     (unsigned long long)generation_in_use(&s.redis));
    long long settled_set = reply->integer;
    freeReplyObject(reply);
    reply = redisCommand(c, "GET mypage:%llu:retention:scan", (unsigned long long)generation_in_use(&s.redis));
    cr_assert(reply->type == REDIS_REPLY_STRING && strcmp(reply->str, "done") == 0,
              "a rebuilt generation is to be gone over by the sweep");
    freeReplyObject(reply);
    reply = redisCommand(c, "DBSIZE");
    cr_assert_eq(reply->integer, pages + 2 + settled_set + 1, "Redis holds %lld keys for %lld pages", reply->integer,
                 pages);
    freeReplyObject(reply);
    redisFree(c);
    cr_log_info("rebuild under %d reads: 0 failed, 0 different", r.reads);
    test_stack_stop(&s);
}

/* The generation in use as Redis holds it ("0" before the first rebuild). */
static uint64_t generation_in_use(const harness_process *redis) {
    redisContext *c = harness_redis_connect(redis->port);
    cr_assert(c != NULL && c->err == 0, "cannot reach redis");
    redisReply *reply = redisCommand(c, "GET mypage:generation");
    cr_assert_not_null(reply);
    uint64_t generation = reply->type == REDIS_REPLY_STRING ? strtoull(reply->str, NULL, 10) : 0;
    freeReplyObject(reply);
    redisFree(c);
    return generation;
}

/* A rebuild whose switch went through but whose reply was lost takes itself for failed and
 * abandons its generation, which is the one in use by then: that must delete no page. */
Test(mypage, abandoning_the_generation_in_use_deletes_no_page) {
    test_stack s;
    test_stack_start(&s, "abandon", lending_env, true, mypage_env);
    target t = stack_target(&s);
    enum { USERS = 4 };
    workload w = make_workload(t, "abandon", USERS, 2, 2);
    const char **users = w.users;
    run_mix(&w, 2, 12);
    expect_pages_show_what_lending_made(&w, 10000);
    size_t sizes[USERS];
    uint8_t **before = snapshot(t, users, USERS, sizes);

    page_store *store = NULL;
    status st;
    cr_assert_eq(page_store_open(s.redis.url, &mypage_login, 2000, NULL, &store, &st), STATUS_OK, "%s", st.message);
    for (int round = 0; round < 2; round++) {
        uint64_t generation = generation_in_use(&s.redis);
        page_store_rebuild_abort(store, generation);
        expect_same_pages(t, users, USERS, before, sizes);
        cr_log_info("abandoning generation %llu, the one in use, left every page",
                    (unsigned long long)generation);
        if (round == 0)
            cr_assert_eq(rebuild(&s), 0, "mypage --rebuild failed; log in %s", s.dir);
    }
    cr_assert_gt(generation_in_use(&s.redis), 0, "the rebuild did not switch generations");
    page_store_close(store);
    test_stack_stop(&s);
}

Test(mypage, redis_down_gives_unavailable_fast_and_loses_no_event) {
    test_stack s;
    test_stack_start(&s, "redis-outage", lending_env, true, mypage_env);
    target t = stack_target(&s);
    enum { USERS = 6 };
    workload w = make_workload(t, "outage", USERS, 2, 3);
    const char **users = w.users;
    run_mix(&w, 2, 10);
    expect_pages_show_what_lending_made(&w, 10000);

    int port = s.redis.port;
    cr_assert_eq(harness_process_stop(&s.redis, SIGTERM, 5000), 0);
    Mypage *page = NULL;
    status st;
    int64_t start = harness_now_ms();
    status_code code = get_page(t, harness_bearer(mem, s.dir, users[0], false), NULL, &page, &st);
    int64_t elapsed = harness_now_ms() - start;
    cr_assert_eq(code, STATUS_UNAVAILABLE, "got %s: %s", status_code_name(code), st.message);
    cr_assert_lt(elapsed, harness_latency_bound_ms(1000), "UNAVAILABLE took %lld ms", (long long)elapsed);

    /* the saga goes on without Redis */
    int loans_before = loans_made(&w.made);
    run_mix(&w, 2, 15);
    cr_assert_gt(loans_made(&w.made), loans_before, "no loan was made while Redis was down");
    cr_assert(harness_redis_start(s.dir, port, &s.redis), "redis did not restart");
    expect_pages_show_what_lending_made(&w, 15000);
    cr_log_info("GetMypage answered UNAVAILABLE in %lld ms with Redis down", (long long)elapsed);
    test_stack_stop(&s);
}

/* A Redis that is full (maxmemory with noeviction) refuses the projection's writes with OOM
 * but still serves reads. Those events wait instead of being dropped: once Redis has room
 * again every page catches up. */
Test(mypage, a_full_redis_loses_no_event_and_pages_stay_readable) {
    test_stack s;
    test_stack_start(&s, "redis-full", lending_env, true, mypage_env);
    target t = stack_target(&s);
    enum { USERS = 6 };
    workload w = make_workload(t, "full", USERS, 2, 3);
    const char **users = w.users;
    run_mix(&w, 2, 10);
    expect_pages_show_what_lending_made(&w, 10000);

    redis_command(&s.redis, "CONFIG SET maxmemory 1");
    int loans_before = loans_made(&w.made);
    run_mix(&w, 2, 15);
    cr_assert_gt(loans_made(&w.made), loans_before, "no loan was made while Redis was full");
    harness_sleep_ms(1500); /* the projection meets the full Redis */
    Mypage *page = NULL;
    status st;
    status_code code = get_page(t, harness_bearer(mem, s.dir, users[0], false), NULL, &page, &st);
    cr_assert_eq(code, STATUS_OK, "a full Redis still serves reads: %s %s", status_code_name(code), st.message);
    const char *stale = NULL;
    for (int u = 0; u < USERS && stale == NULL; u++)
        stale = mismatch(t, users[u]);
    cr_assert_not_null(stale, "every page is up to date although Redis refused every write");
    cr_log_info("with Redis full after %d loans more: %s", loans_made(&w.made) - loans_before, stale);

    redis_command(&s.redis, "CONFIG SET maxmemory 0");
    expect_pages_show_what_lending_made(&w, 15000);
    test_stack_stop(&s);
}

/* A replica cut off from NATS misses the changes other replicas announce meanwhile (core NATS
 * keeps nothing for an absent subscriber); once it is back, it sends each of its watchers the
 * page again. The cut is a proxy between that replica and nats-server. */
Test(mypage, a_watch_on_a_replica_cut_off_from_nats_catches_up_when_it_is_back) {
    test_stack s;
    test_stack_start(&s, "partition", lending_env, true, mypage_env);
    target t = stack_target(&s);
    const char **books = make_books(t, 1, 2);
    test_proxy *proxy = test_proxy_start(s.nats.port);
    cr_assert_not_null(proxy);
    const char *dir = arena_sprintf(mem, "%s/replica", s.dir);
    mkdir(dir, 0755);
    cr_assert(harness_keys_create(dir));
    const char *nats_url = arena_sprintf(mem, "nats://127.0.0.1:%d", test_proxy_port(proxy));
    harness_process replica;
    cr_assert(fixture_start_mypage(dir, nats_url, s.redis.url, mypage_env, &replica),
              "the second mypage did not start: %s", replica.log_path);
    target second = {.dir = dir};
    cr_assert_eq(rpc_client_create(replica.address, 10000, &second.mypage, NULL), STATUS_OK);

    const char *user = unique("partition");
    status st;
    rpc_client_stream *stream = watch(second, harness_bearer(mem, dir, user, false), NULL, 60000, &st);
    Mypage *page = NULL;
    cr_assert_eq(next_page(stream, 5000, &page, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(page->n_loans, 0);

    test_proxy_cut(proxy, true);
    harness_sleep_ms(300);
    Loan *loan = NULL;
    cr_assert_eq(borrow_as(t, mem, user, books[0], &loan, &st), STATUS_OK, "%s", st.message);
    int64_t until = harness_now_ms() + 10000;
    while (page_of(t, user)->n_loans == 0 && harness_now_ms() < until)
        harness_sleep_ms(100);
    cr_assert_eq(page_of(t, user)->n_loans, 1, "the first replica did not project the borrow");
    harness_sleep_ms(500); /* its announcement has come and gone */

    test_proxy_cut(proxy, false);
    int64_t restored = harness_now_ms();
    bool caught_up = false;
    while (!caught_up && harness_now_ms() - restored < 8000) {
        status_code code = next_page(stream, 8000 - (harness_now_ms() - restored), &page, &st);
        if (code != STATUS_OK || page == NULL)
            break;
        caught_up = page->n_loans == 1;
    }
    int64_t took = harness_now_ms() - restored;
    cr_log_info("a watcher on a replica cut off from NATS during a borrow: %s %lld ms after the cut ended",
                caught_up ? "had the new page" : "still had the old page", (long long)took);
    cr_assert(caught_up, "the watcher never got the page with the loan");
    rpc_client_stream_close(stream);
    rpc_client_destroy(second.mypage);
    cr_assert_eq(harness_process_stop(&replica, SIGTERM, 15000), 0, "log: %s", replica.log_path);
    test_proxy_stop(proxy);
    test_stack_stop(&s);
}

/* An operator deletes the projection's durable consumer while mypage runs (`nats consumer
 * rm`, a stream recreated): the consumer is declared again and the pages catch up. */
Test(mypage, a_deleted_durable_consumer_is_declared_again) {
    test_stack s;
    test_stack_start(&s, "durable-gone", lending_env, true, mypage_env);
    target t = stack_target(&s);
    enum { USERS = 3 };
    workload w = make_workload(t, "gone", USERS, 2, 3);
    run_mix(&w, 2, 6);
    expect_pages_show_what_lending_made(&w, 10000);

    nats_connection *connection = connect_nats(s.nats.url);
    jsErrCode error = 0;
    natsStatus deleted = js_DeleteConsumer(nats_connection_jetstream(connection), EVENTS_STREAM, "mypage", NULL,
                                           &error);
    cr_assert_eq(deleted, NATS_OK, "deleting the consumer: %s", natsStatus_GetText(deleted));
    nats_connection_close(connection);
    int64_t started = harness_now_ms();
    run_mix(&w, 2, 8);
    expect_pages_show_what_lending_made(&w, 20000);
    cr_log_info("pages caught up %lld ms after the durable consumer was deleted",
                (long long)(harness_now_ms() - started));
    test_stack_stop(&s);
}

typedef struct paused_read {
    rpc_client *client;
    const char *bearer;
    status_code code;
    int64_t took_ms;
} paused_read;

static void *read_while_paused(void *arg) {
    paused_read *r = arg;
    arena *a = arena_create(0);
    Library__Mypage__V1__GetMypageRequest request = LIBRARY__MYPAGE__V1__GET_MYPAGE_REQUEST__INIT;
    ProtobufCMessage *response = NULL;
    status st;
    int64_t started = harness_now_ms();
    r->code = harness_call(r->client, MYPAGE "GetMypage", &request.base, &library__mypage__v1__mypage__descriptor,
                           a, r->bearer, &response, &st);
    r->took_ms = harness_now_ms() - started;
    arena_destroy(a);
    return NULL;
}

/* Opens mypage's shared Redis connection with a few reads, stops Redis (SIGSTOP; the
 * connections stay open) and starts n reads, each in a thread of its own, that wait on it. */
static void read_from_a_stopped_redis(test_stack *s, target t, const char *bearer, int n, paused_read *reads,
                                      pthread_t *threads) {
    Mypage *page = NULL;
    status st;
    for (int i = 0; i < 20; i++) /* the shared connection is up after the first calls */
        cr_assert_eq(get_page(t, bearer, NULL, &page, &st), STATUS_OK, "%s", st.message);
    cr_assert(harness_pause(s->redis.pid));
    for (int i = 0; i < n; i++) {
        reads[i] = (paused_read){.client = t.mypage, .bearer = bearer};
        pthread_create(&threads[i], NULL, read_while_paused, &reads[i]);
    }
}

/* Redis stops answering (SIGSTOP) while the connections stay open: every GetMypage, those
 * pipelined on the shared connection and those on the pool, ends UNAVAILABLE once
 * REDIS_TIMEOUT (500 ms) passes; when Redis answers again, so does GetMypage. */
Test(mypage, a_redis_that_stops_answering_gives_unavailable_in_time) {
    test_stack s;
    test_stack_start(&s, "redis-pause", lending_env, true, mypage_env);
    target t = stack_target(&s);
    const char *bearer = harness_bearer(mem, s.dir, unique("paused"), false);
    enum { READERS = 32 };
    paused_read reads[READERS];
    pthread_t threads[READERS];
    read_from_a_stopped_redis(&s, t, bearer, READERS, reads, threads);
    int64_t slowest = 0;
    for (int i = 0; i < READERS; i++) {
        pthread_join(threads[i], NULL);
        cr_assert_eq(reads[i].code, STATUS_UNAVAILABLE, "read %d: %s", i, status_code_name(reads[i].code));
        slowest = reads[i].took_ms > slowest ? reads[i].took_ms : slowest;
    }
    kill(s.redis.pid, SIGCONT);
    cr_log_info("%d GetMypage with Redis paused: all UNAVAILABLE, the slowest in %lld ms", READERS,
                (long long)slowest);
    cr_assert_lt(slowest, harness_latency_bound_ms(2000), "UNAVAILABLE took %lld ms", (long long)slowest);

    int64_t until = harness_now_ms() + 5000;
    Mypage *page = NULL;
    status st;
    status_code code;
    while ((code = get_page(t, bearer, NULL, &page, &st)) != STATUS_OK && harness_now_ms() < until)
        harness_sleep_ms(100);
    cr_assert_eq(code, STATUS_OK, "GetMypage did not recover: %s", st.message);
    test_stack_stop(&s);
}

/* SIGTERM while reads wait on a Redis that stopped answering, with REDIS_TIMEOUT longer than
 * DRAIN_GRACE: the drain cancels them, and their answers, which come once the service stops
 * its Redis connections, must find the server's queues closed and drop out. (Before, they
 * started a batch on a closed queue: "assertion failed: grpc_cq_begin_op" and exit 134,
 * whenever the core reported the drain done before the answers came.) */
Test(mypage, reads_still_waiting_on_redis_at_shutdown_end_cleanly) {
    const char *env[] = {"EVENT_ACK_WAIT=2s", "REDIS_TIMEOUT=5s", "DRAIN_GRACE=300ms", NULL};
    test_stack s;
    test_stack_start(&s, "stop-waiting", lending_env, true, env);
    target t = stack_target(&s);
    const char *bearer = harness_bearer(mem, s.dir, unique("waiting"), false);
    enum { READERS = 8 };
    paused_read reads[READERS];
    pthread_t threads[READERS];
    read_from_a_stopped_redis(&s, t, bearer, READERS, reads, threads);
    harness_sleep_ms(500);
    int64_t started = harness_now_ms();
    int exit_code = harness_process_stop(&s.mypage, SIGTERM, 20000);
    int64_t took = harness_now_ms() - started;
    kill(s.redis.pid, SIGCONT);
    for (int i = 0; i < READERS; i++) {
        pthread_join(threads[i], NULL);
        cr_assert_neq(reads[i].code, STATUS_OK, "read %d was answered although Redis was stopped", i);
    }
    cr_log_info("mypage stopped in %lld ms with %d reads waiting on Redis: exit %d, reads ended %s",
                (long long)took, READERS, exit_code, status_code_name(reads[0].code));
    cr_assert_eq(exit_code, 0, "mypage exited with %d; log: %s", exit_code, s.mypage.log_path);
    test_stack_stop(&s);
}

Test(mypage, overdue_loans_are_counted) {
    const char *env[] = {"LOAN_PERIOD=2s", "RECONCILE_INTERVAL=500ms", NULL};
    test_stack s;
    test_stack_start(&s, "overdue", env, true, mypage_env);
    target t = stack_target(&s);
    const char **books = make_books(t, 1, 2);
    const char *user = unique("late");
    Loan *loan = NULL;
    status st;
    cr_assert_eq(borrow_as(t, mem, user, books[0], &loan, &st), STATUS_OK);
    harness_sleep_ms(3000);
    const char *users[] = {user};
    expect_pages_match(t, users, 1, 5000);
    Mypage *page = page_of(t, user);
    cr_assert_eq(page->borrowed_count, 1);
    cr_assert_eq(page->overdue_count, 1);
    test_stack_stop(&s);
}

/* --- readiness -------------------------------------------------------------------------------- */

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus serving_status;

static const char *serving_name(int value) {
    return value == SERVING ? "SERVING" : value == NOT_SERVING ? "NOT_SERVING" : value < 0 ? "no answer" : "UNKNOWN";
}

/* Polls mypage's readiness (the server and MypageService) until it is `want`; returns the ms
 * that took. Liveness stays SERVING throughout: a pod is not restarted for a dependency. */
static int64_t expect_readiness(target t, serving_status want, const char *when, int64_t wait_ms) {
    int64_t start = harness_now_ms();
    int server, service;
    do {
        server = fixture_health(t.mypage, "");
        service = fixture_health(t.mypage, "library.mypage.v1.MypageService");
        if (server != (int)want || service != (int)want)
            harness_sleep_ms(50);
    } while ((server != (int)want || service != (int)want) && harness_now_ms() - start < wait_ms);
    cr_assert(server == (int)want && service == (int)want,
              "%s: readiness is %s (server) and %s (MypageService) after %lld ms, want %s", when,
              serving_name(server), serving_name(service), (long long)wait_ms, serving_name(want));
    cr_assert_eq(fixture_health(t.mypage, "liveness"), SERVING, "%s: liveness must stay SERVING", when);
    return harness_now_ms() - start;
}

/* DESIGN: NOT_SERVING while a dependency is down. Redis is found down by the checker's ping
 * (REDIS_CHECK_INTERVAL 1 s, REDIS_TIMEOUT 500 ms), NATS by the lost connection. */
Test(mypage, readiness_is_not_serving_while_redis_or_nats_is_down) {
    test_stack s;
    test_stack_start(&s, "readiness", lending_env, true, mypage_env);
    target t = stack_target(&s);
    expect_readiness(t, SERVING, "at start", 5000);

    int redis_port = s.redis.port;
    cr_assert_eq(harness_process_stop(&s.redis, SIGTERM, 5000), 0);
    int64_t redis_down = expect_readiness(t, NOT_SERVING, "with Redis down", 5000);
    cr_assert(harness_redis_start(s.dir, redis_port, &s.redis), "redis did not restart");
    int64_t redis_back = expect_readiness(t, SERVING, "after Redis came back", 5000);

    int nats_port = s.nats.port;
    cr_assert_neq(harness_process_stop(&s.nats, SIGTERM, 5000), -1, "nats-server did not stop");
    int64_t nats_down = expect_readiness(t, NOT_SERVING, "with NATS down", 5000);
    cr_assert(harness_nats_start(s.dir, nats_port, &s.nats), "nats-server did not restart");
    int64_t nats_back = expect_readiness(t, SERVING, "after NATS came back", 10000);
    cr_log_info("NOT_SERVING %lld ms after Redis stopped, SERVING %lld ms after it was back; "
                "NATS: %lld ms and %lld ms", (long long)redis_down, (long long)redis_back,
                (long long)nats_down, (long long)nats_back);

    /* SERVING again means serving: a borrow made now reaches the page (once the catalog and
     * lending are back on NATS too) */
    int64_t until = harness_now_ms() + 10000;
    while ((fixture_health(t.catalog, "") != SERVING || fixture_health(t.lending, "") != SERVING) &&
           harness_now_ms() < until)
        harness_sleep_ms(50);
    workload w = make_workload(t, "ready", 2, 1, 2);
    run_mix(&w, 1, 4);
    expect_pages_show_what_lending_made(&w, 15000);
    test_stack_stop(&s);
}

/* --- a rebuild while events arrive ------------------------------------------------------------ */

typedef struct rebuilder {
    pthread_t thread;
    test_stack *s;
    atomic_bool mix_done;
    atomic_int during_mix;
    int rebuilds, failed, last_exit;
} rebuilder;

/* Rebuilds again and again until the mix is done, counting the rebuilds that ended (switched
 * generations) while the mix still ran. */
static void *rebuilder_main(void *arg) {
    rebuilder *r = arg;
    while (!atomic_load(&r->mix_done)) {
        int exit_code = rebuild(r->s);
        r->rebuilds++;
        if (exit_code != 0) {
            r->failed++;
            r->last_exit = exit_code;
        }
        if (!atomic_load(&r->mix_done))
            atomic_fetch_add(&r->during_mix, 1);
    }
    return NULL;
}

/* mypage --rebuild replays the stream into a new generation while the live projection goes
 * on: events the live projection applies during the replay must reach the new generation
 * too, and none may be lost at the switch. */
Test(mypage, a_rebuild_while_loans_go_on_loses_no_event) {
    test_stack s;
    test_stack_start(&s, "rebuild-live", lending_env, true, mypage_env);
    enum { USERS = 8 };
    workload w = make_workload(stack_target(&s), "live", USERS, 2, 3);
    run_mix(&w, 2, 20); /* a history for the replay to read */
    expect_pages_show_what_lending_made(&w, 10000);

    rebuilder r = {.s = &s};
    atomic_init(&r.mix_done, false);
    atomic_init(&r.during_mix, 0);
    pthread_create(&r.thread, NULL, rebuilder_main, &r);
    /* loans go on until two rebuilds have switched under them, however slow the machine */
    for (int round = 0; round < 30 && (round < 4 || atomic_load(&r.during_mix) < 2); round++)
        run_mix(&w, 2, 10);
    atomic_store(&r.mix_done, true);
    pthread_join(r.thread, NULL);
    cr_assert_eq(r.failed, 0, "%d of %d rebuilds failed (exit %d); logs in %s", r.failed, r.rebuilds,
                 r.last_exit, s.dir);
    cr_assert_geq(atomic_load(&r.during_mix), 2, "fewer than two rebuilds finished while the loans went on");
    cr_assert_gt(generation_in_use(&s.redis), 0, "no rebuild switched generations");
    expect_pages_show_what_lending_made(&w, 15000);
    cr_log_info("%d rebuilds, %d of them ended while %d loans were made", r.rebuilds,
                atomic_load(&r.during_mix), loans_made(&w.made));
    test_stack_stop(&s);
}

typedef struct generation_fill {
    page_store *store;
    uint64_t generation;
} generation_fill;

static status_code fill_generation(void *arg, const event *e, uint64_t sequence, status *st) {
    generation_fill *fill = arg;
    loan_change change;
    if (!page_change_from_event(e, &change))
        return STATUS_OK;
    return page_store_apply_to(fill->store, fill->generation, &change, sequence, st);
}

/* The rebuild's steps (page_store.h) taken one at a time, with loans made between the end of
 * the replay and the switch: the widest window for an event to miss the new generation. Only
 * the live projection of the running mypage can put those events there. */
Test(mypage, events_between_a_rebuilds_replay_and_its_switch_reach_the_new_pages) {
    test_stack s;
    test_stack_start(&s, "rebuild-window", lending_env, true, mypage_env);
    enum { USERS = 6 };
    workload w = make_workload(stack_target(&s), "window", USERS, 2, 3);
    run_mix(&w, 2, 15);
    expect_pages_show_what_lending_made(&w, 10000);

    page_store *store = NULL;
    status st;
    cr_assert_eq(page_store_open(s.redis.url, &mypage_login, 2000, NULL, &store, &st), STATUS_OK, "%s", st.message);
    generation_fill fill = {.store = store};
    cr_assert_eq(page_store_rebuild_begin(store, &fill.generation, &st), STATUS_OK, "%s", st.message);
    nats_connection *connection = connect_nats(s.nats.url);
    uint64_t replayed = 0;
    cr_assert_eq(events_replay(connection, EVENTS_LOAN_SUBJECTS, fill_generation, &fill, &replayed, &st),
                 STATUS_OK, "%s", st.message);
    nats_connection_close(connection);

    int loans_before = loans_made(&w.made);
    run_mix(&w, 2, 15);
    cr_assert_gt(loans_made(&w.made), loans_before, "no loan was made between the replay and the switch");
    cr_assert(harness_wait_consumer_idle(s.nats.url, "mypage", 10000),
              "mypage's consumer still had events pending after 10 s");
    cr_assert_eq(page_store_rebuild_switch(store, fill.generation, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(generation_in_use(&s.redis), fill.generation);
    page_store_close(store);
    expect_pages_show_what_lending_made(&w, 10000);
    cr_log_info("replayed %llu events into generation %llu, then %d loans more before the switch",
                (unsigned long long)replayed, (unsigned long long)fill.generation,
                loans_made(&w.made) - loans_before);
    test_stack_stop(&s);
}

/* --- loan events out of order ------------------------------------------------------------------- */

#define REQUESTED_EVENT LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED
#define ACTIVATED_EVENT LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_ACTIVATED
#define CANCELED_EVENT LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_CANCELED
#define RETURNED_EVENT LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RETURNED
#define OVERDUE_EVENT LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_OVERDUE

typedef struct loan_story {
    nats_connection *connection;
    const char *user, *book_id, *title;
    int64_t due_seconds;
} loan_story;

/* Publishes one loan event of the story, as lending would, under a fresh message id. */
static void tell(loan_story *story, const char *loan_id, Library__Events__V1__Event__BodyCase kind,
                 int64_t occur_ms) {
    event *e = (event *)arena_new_message(mem, &library__events__v1__event__descriptor);
    e->event_id = (char *)unique("out-of-order");
    e->occur_time = timestamp_from_ms(mem, occur_ms);
    e->correlation_id = (char *)loan_id;
    e->body_case = kind;
    Google__Protobuf__Timestamp *due = timestamp_from_ms(mem, story->due_seconds * 1000);
    const char *user = story->user, *book = story->book_id, *title = story->title;
    switch (kind) {
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED:
        e->loan_requested = (void *)arena_new_message(mem, &library__events__v1__loan_requested__descriptor);
        *e->loan_requested = (Library__Events__V1__LoanRequested){.base = e->loan_requested->base,
            .loan_id = (char *)loan_id, .user_id = (char *)user, .book_id = (char *)book,
            .book_title = (char *)title, .due_time = due};
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_ACTIVATED:
        e->loan_activated = (void *)arena_new_message(mem, &library__events__v1__loan_activated__descriptor);
        *e->loan_activated = (Library__Events__V1__LoanActivated){.base = e->loan_activated->base,
            .loan_id = (char *)loan_id, .user_id = (char *)user, .book_id = (char *)book,
            .book_title = (char *)title, .due_time = due};
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_CANCELED:
        e->loan_canceled = (void *)arena_new_message(mem, &library__events__v1__loan_canceled__descriptor);
        *e->loan_canceled = (Library__Events__V1__LoanCanceled){.base = e->loan_canceled->base,
            .loan_id = (char *)loan_id, .user_id = (char *)user, .book_id = (char *)book,
            .book_title = (char *)title, .reason = "OUT_OF_STOCK"};
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RETURNED:
        e->loan_returned = (void *)arena_new_message(mem, &library__events__v1__loan_returned__descriptor);
        *e->loan_returned = (Library__Events__V1__LoanReturned){.base = e->loan_returned->base,
            .loan_id = (char *)loan_id, .user_id = (char *)user, .book_id = (char *)book};
        break;
    default:
        e->loan_overdue = (void *)arena_new_message(mem, &library__events__v1__loan_overdue__descriptor);
        *e->loan_overdue = (Library__Events__V1__LoanOverdue){.base = e->loan_overdue->base,
            .loan_id = (char *)loan_id, .user_id = (char *)user, .book_id = (char *)book, .due_time = due};
        break;
    }
    status st;
    cr_assert_eq(events_publish(story->connection, e, &st), STATUS_OK, "%s", st.message);
}

static void expect_loan(const Mypage *page, size_t index, const char *loan_id, int want, const loan_story *story) {
    cr_assert_gt(page->n_loans, index, "the page has %zu loans", page->n_loans);
    const Library__Mypage__V1__MypageLoan *loan = page->loans[index];
    cr_assert_str_eq(loan->loan_id, loan_id, "loan %zu on the page", index);
    cr_assert_eq(loan->status, want, "loan %s is %d on the page, want %d", loan_id, loan->status, want);
    cr_assert_str_eq(loan->book_id, story->book_id, "loan %s", loan_id);
    cr_assert_str_eq(loan->book_title, story->title, "loan %s: the title comes from whichever event had it",
                     loan_id);
    cr_assert_not_null(loan->due_time, "loan %s has no due time", loan_id);
    cr_assert_eq(loan->due_time->seconds, story->due_seconds, "loan %s", loan_id);
}

/* JetStream redelivers, a reconciler republishes and several workers apply one batch, so a
 * loan's events may reach mypage in any order. The page must show each loan's latest state:
 * a loan moves only forward (PENDING, ACTIVE, then CANCELED or RETURNED), a late event fills
 * in what the page lacks, and the page's time is its newest event's. */
Test(mypage, loan_events_out_of_order_give_the_latest_state) {
    test_stack s;
    test_stack_start(&s, "out-of-order", lending_env, true, mypage_env);
    target t = stack_target(&s);
    loan_story story = {.connection = connect_nats(s.nats.url), .user = unique("shuffled"),
                        .book_id = unique("no-such-book"), .title = "Shuffled | Tales",
                        .due_seconds = timestamp_now_ms() / 1000 + 3600};
    int64_t at = timestamp_now_ms() - 60000; /* one minute ago, a second per step */
    const char *returned = unique("loan"), *activated = unique("loan"), *late = unique("loan"),
               *canceled = unique("loan");
    /* the newest event of all first: its return */
    tell(&story, returned, RETURNED_EVENT, at + 30000);
    tell(&story, returned, ACTIVATED_EVENT, at + 2000);
    tell(&story, returned, REQUESTED_EVENT, at + 1000);
    /* an older event after a newer one */
    tell(&story, activated, ACTIVATED_EVENT, at + 4000);
    tell(&story, activated, REQUESTED_EVENT, at + 3000);
    /* the sweeper's overdue flag before the activation it follows */
    tell(&story, late, OVERDUE_EVENT, at + 7000);
    tell(&story, late, ACTIVATED_EVENT, at + 6000);
    tell(&story, late, REQUESTED_EVENT, at + 5000);
    /* a compensation overtaken by its request */
    tell(&story, canceled, CANCELED_EVENT, at + 9000);
    tell(&story, canceled, REQUESTED_EVENT, at + 8000);
    cr_assert(harness_wait_consumer_idle(s.nats.url, "mypage", 10000),
              "mypage's consumer still had events pending after 10 s");

    Mypage *page = page_of(t, story.user);
    cr_assert_eq(page->n_loans, 4, "the page has %zu loans", page->n_loans);
    /* newest first: by when each loan's first event reached the stream */
    expect_loan(page, 0, canceled, CANCELED, &story);
    expect_loan(page, 1, late, ACTIVE, &story);
    expect_loan(page, 2, activated, ACTIVE, &story);
    expect_loan(page, 3, returned, RETURNED, &story);
    cr_assert_eq(page->borrowed_count, 2);
    cr_assert_eq(page->overdue_count, 1, "the overdue flag that came first was lost");
    cr_assert_not_null(page->last_event_time);
    cr_assert_eq(page->last_event_time->seconds, (at + 30000) / 1000, "the page's time is not its newest event's");
    nats_connection_close(story.connection);
    test_stack_stop(&s);
}

/* --- what WatchMypage pushes -------------------------------------------------------------------- */

typedef struct expected_loan {
    const char *loan_id, *book_id, *title;
    int status;
} expected_loan;

/* Why a pushed page is not exactly the expected loans (newest first), or NULL. The loan
 * `settling` (may be NULL) may still be PENDING: its saga is under way. */
static const char *page_differs(const Mypage *page, const char *user, const expected_loan *want, size_t n,
                                const char *settling) {
    if (strcmp(page->user_id, user) != 0)
        return arena_sprintf(mem, "a page of %s", page->user_id);
    if (page->n_loans != n)
        return arena_sprintf(mem, "%zu loans, want %zu", page->n_loans, n);
    int active = 0;
    for (size_t i = 0; i < n; i++) {
        const Library__Mypage__V1__MypageLoan *loan = page->loans[i];
        if (strcmp(loan->loan_id, want[i].loan_id) != 0 || strcmp(loan->book_id, want[i].book_id) != 0 ||
            strcmp(loan->book_title, want[i].title) != 0)
            return arena_sprintf(mem, "loan %zu is %s of %s (%s), want %s of %s (%s)", i, loan->loan_id,
                                 loan->book_id, loan->book_title, want[i].loan_id, want[i].book_id, want[i].title);
        bool on_its_way = settling && strcmp(loan->loan_id, settling) == 0 && loan->status == PENDING;
        if ((int)loan->status != want[i].status && !on_its_way)
            return arena_sprintf(mem, "loan %s is %d, want %d", loan->loan_id, loan->status, want[i].status);
        active += loan->status == ACTIVE;
    }
    if (page->borrowed_count != active || page->overdue_count != 0)
        return arena_sprintf(mem, "counts %d borrowed, %d overdue with %d loans ACTIVE", page->borrowed_count,
                             page->overdue_count, active);
    return NULL;
}

/* Reads pushed pages until one is exactly `want`; each one before it may differ only by
 * `settling` being PENDING. Returns the page that matched. */
static Mypage *expect_pushes(rpc_client_stream *stream, const char *user, const expected_loan *want, size_t n,
                             const char *settling, const char *after) {
    for (int pushes = 0; pushes < 5; pushes++) {
        Mypage *page = NULL;
        status st;
        status_code code = next_page(stream, 5000, &page, &st);
        cr_assert_eq(code, STATUS_OK, "after %s: no page pushed: %s %s", after, status_code_name(code), st.message);
        cr_assert_not_null(page, "after %s: the stream ended", after);
        const char *why = page_differs(page, user, want, n, settling);
        cr_assert_null(why, "after %s, push %d: %s", after, pushes + 1, why);
        if (page_differs(page, user, want, n, NULL) == NULL)
            return page;
    }
    cr_assert_fail("after %s: five pushes and the loan %s still PENDING", after, settling);
    return NULL;
}

static Loan *borrow_ok(target t, const char *user, const Book *book) {
    Loan *loan = NULL;
    status st;
    status_code code = borrow_as(t, mem, user, book->book_id, &loan, &st);
    cr_assert_eq(code, STATUS_OK, "BorrowBook: %s %s", status_code_name(code), st.message);
    cr_assert(loan->status == ACTIVE || loan->status == PENDING, "the loan is %d", loan->status);
    return loan;
}

/* A watcher sees exactly its loans after each change: the first borrow (PENDING, then
 * ACTIVE), a second borrow on top of it, then the first one RETURNED, and the last page
 * pushed is the page GetMypage reads. */
Test(mypage, watch_pushes_exactly_the_loans_after_each_borrow_and_return) {
    target t = shared_target();
    Book *first_book = register_book("Pushed First", "Seed", "978-93", 2);
    Book *second_book = register_book("Pushed | Second", "Seed", "978-94", 2);
    const char *user = unique("pushed");
    status st;
    rpc_client_stream *stream = watch(t, user_bearer(user), NULL, 60000, &st);
    expect_pushes(stream, user, NULL, 0, NULL, "opening the watch");

    Loan *first = borrow_ok(t, user, first_book);
    expected_loan one[] = {{first->loan_id, first_book->book_id, "Pushed First", ACTIVE}};
    expect_pushes(stream, user, one, 1, first->loan_id, "the first borrow");

    Loan *second = borrow_ok(t, user, second_book);
    expected_loan two[] = {{second->loan_id, second_book->book_id, "Pushed | Second", ACTIVE}, one[0]};
    expect_pushes(stream, user, two, 2, second->loan_id, "the second borrow");

    cr_assert_eq(return_as(t, mem, user, first->loan_id, &st), STATUS_OK, "%s", st.message);
    two[1].status = RETURNED;
    Mypage *pushed = expect_pushes(stream, user, two, 2, NULL, "the return");
    size_t pushed_size = 0, read_size = 0;
    uint8_t *pushed_bytes = arena_pack(mem, &pushed->base, &pushed_size);
    uint8_t *read_bytes = arena_pack(mem, &page_of(t, user)->base, &read_size);
    cr_assert(pushed_size == read_size && memcmp(pushed_bytes, read_bytes, read_size) == 0,
              "the last page pushed is not the page GetMypage reads");
    rpc_client_stream_close(stream);
}

/* --- renewals and holds ----------------------------------------------------------------------- */

#define WAITING LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_WAITING
#define READY LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_READY

/* Publishes a hold event as lending or the catalog would: a deterministic id of its own, the
 * hold as correlation id, occur time now. */
static void publish_hold_event(nats_connection *connection, event *e, const char *hold_id) {
    static atomic_int published;
    Google__Protobuf__Timestamp now = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    int64_t now_ms = timestamp_now_ms();
    now.seconds = now_ms / 1000;
    now.nanos = (int32_t)(now_ms % 1000) * 1000000;
    char event_id[EVENT_ID_MAX];
    char subject_id[96];
    snprintf(subject_id, sizeof subject_id, "%s-t%d", hold_id, atomic_fetch_add(&published, 1));
    cr_assert(events_format_id(event_id, sizeof event_id, e->body_case, subject_id, 0));
    e->event_id = event_id;
    e->occur_time = &now;
    e->correlation_id = (char *)hold_id;
    status st;
    cr_assert_eq(events_publish(connection, e, &st), STATUS_OK, "%s", st.message);
}

/* A hold id as the services make them (20 hex digits). */
static const char *new_hold_id(void) {
    char *id = arena_alloc(mem, 21);
    text_random_hex(id, 10);
    return id;
}

static void hold_placed(nats_connection *c, const char *user, const char *hold_id, const char *book_id,
                        const char *title, int64_t place_seconds) {
    Google__Protobuf__Timestamp place = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    place.seconds = place_seconds;
    Library__Events__V1__HoldPlaced body = LIBRARY__EVENTS__V1__HOLD_PLACED__INIT;
    body.hold_id = (char *)hold_id;
    body.user_id = (char *)user;
    body.book_id = (char *)book_id;
    body.book_title = (char *)title;
    body.place_time = &place;
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_PLACED;
    e.hold_placed = &body;
    publish_hold_event(c, &e, hold_id);
}

/* A HoldQueue of book_id at version with the NULL-terminated ids. */
static Library__Events__V1__HoldQueue *queue_of(const char *book_id, uint64_t version, const char *const *ids) {
    Library__Events__V1__HoldQueue *queue = arena_alloc(mem, sizeof *queue);
    library__events__v1__hold_queue__init(queue);
    queue->book_id = (char *)book_id;
    queue->version = version;
    while (ids[queue->n_hold_ids] != NULL)
        queue->n_hold_ids++;
    queue->hold_ids = (char **)ids;
    return queue;
}

static void hold_queued(nats_connection *c, const char *user, const char *hold_id, const char *book_id,
                        Library__Events__V1__HoldQueue *queue) {
    Library__Events__V1__HoldQueued body = LIBRARY__EVENTS__V1__HOLD_QUEUED__INIT;
    body.hold_id = (char *)hold_id;
    body.user_id = (char *)user;
    body.book_id = (char *)book_id;
    body.queue = queue;
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED;
    e.hold_queued = &body;
    publish_hold_event(c, &e, hold_id);
}

static void hold_ready(nats_connection *c, const char *user, const char *hold_id, const char *book_id,
                       int64_t expire_seconds, Library__Events__V1__HoldQueue *queue) {
    Google__Protobuf__Timestamp ready_time = GOOGLE__PROTOBUF__TIMESTAMP__INIT, expire = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ready_time.seconds = timestamp_now_ms() / 1000;
    expire.seconds = expire_seconds;
    Library__Events__V1__HoldReady body = LIBRARY__EVENTS__V1__HOLD_READY__INIT;
    body.hold_id = (char *)hold_id;
    body.user_id = (char *)user;
    body.book_id = (char *)book_id;
    body.ready_time = &ready_time;
    body.expire_time = &expire;
    body.queue = queue;
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY;
    e.hold_ready = &body;
    publish_hold_event(c, &e, hold_id);
}

/* The events that end a hold: HoldFulfilled, HoldCanceled (lending), HoldExpired,
 * HoldReleased (catalog, with the queue after it). */
static void hold_over(nats_connection *c, Library__Events__V1__Event__BodyCase type, const char *user,
                      const char *hold_id, const char *book_id, Library__Events__V1__HoldQueue *queue) {
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.body_case = type;
    Library__Events__V1__HoldFulfilled fulfilled = LIBRARY__EVENTS__V1__HOLD_FULFILLED__INIT;
    Library__Events__V1__HoldCanceled canceled = LIBRARY__EVENTS__V1__HOLD_CANCELED__INIT;
    Library__Events__V1__HoldExpired expired = LIBRARY__EVENTS__V1__HOLD_EXPIRED__INIT;
    Library__Events__V1__HoldReleased released = LIBRARY__EVENTS__V1__HOLD_RELEASED__INIT;
    switch (type) {
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_FULFILLED:
        fulfilled.hold_id = (char *)hold_id, fulfilled.user_id = (char *)user, fulfilled.book_id = (char *)book_id;
        fulfilled.loan_id = "0123456789abcdef0123";
        e.hold_fulfilled = &fulfilled;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_CANCELED:
        canceled.hold_id = (char *)hold_id, canceled.user_id = (char *)user, canceled.book_id = (char *)book_id;
        e.hold_canceled = &canceled;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_EXPIRED:
        expired.hold_id = (char *)hold_id, expired.user_id = (char *)user, expired.book_id = (char *)book_id;
        expired.queue = queue;
        e.hold_expired = &expired;
        break;
    default:
        released.hold_id = (char *)hold_id, released.user_id = (char *)user, released.book_id = (char *)book_id;
        released.queue = queue;
        e.hold_released = &released;
        break;
    }
    publish_hold_event(c, &e, hold_id);
}

/* "WAITING 2", "READY 0", "none" (no such hold on the page) for the user's hold. */
static const char *hold_seen(const Mypage *page, const char *hold_id) {
    for (size_t i = 0; i < page->n_holds; i++)
        if (strcmp(page->holds[i]->hold_id, hold_id) == 0)
            return arena_sprintf(mem, "%s %d",
                                 page->holds[i]->status == WAITING ? "WAITING"
                                 : page->holds[i]->status == READY ? "READY"
                                                                   : "OTHER",
                                 (int)page->holds[i]->position);
    return "none";
}

/* Polls the user's page until their hold reads `want` (hold_seen); asserts it does in 5 s. */
static Mypage *expect_hold(target t, const char *user, const char *hold_id, const char *want) {
    int64_t until = harness_now_ms() + harness_latency_bound_ms(5000);
    Mypage *page = page_of(t, user);
    while (strcmp(hold_seen(page, hold_id), want) != 0 && harness_now_ms() < until) {
        harness_sleep_ms(50);
        page = page_of(t, user);
    }
    cr_assert_str_eq(hold_seen(page, hold_id), want, "%s's hold %s", user, hold_id);
    return page;
}

/* The catalog's and lending's hold events, published as they would: each holder's page shows
 * the hold with its place in the newest queue snapshot, READY with its expiry, and no more
 * once it is fulfilled, canceled, released or expired; an older snapshot arriving late
 * changes no position. */
Test(mypage, holds_show_with_positions_from_the_newest_queue_and_leave_when_over) {
    target t = shared_target();
    nats_connection *c = connect_nats(fixture_nats_url());
    const char *book = new_hold_id();
    const char *ann = unique("holder"), *bob = unique("holder"), *cho = unique("holder");
    const char *ha = new_hold_id(), *hb = new_hold_id(), *hc = new_hold_id();
    int64_t now = timestamp_now_ms() / 1000;
    hold_placed(c, ann, ha, book, "Held | the book", now - 30);
    hold_placed(c, bob, hb, book, "Held | the book", now - 20);
    hold_placed(c, cho, hc, book, "Held | the book", now - 10);
    Mypage *page = expect_hold(t, ann, ha, "WAITING 0"); /* placed, not queued yet */
    hold_queued(c, ann, ha, book, queue_of(book, 1, (const char *[]){ha, NULL}));
    hold_queued(c, bob, hb, book, queue_of(book, 2, (const char *[]){ha, hb, NULL}));
    hold_queued(c, cho, hc, book, queue_of(book, 3, (const char *[]){ha, hb, hc, NULL}));
    page = expect_hold(t, ann, ha, "WAITING 1");
    cr_assert_eq(page->n_holds, 1);
    cr_assert_str_eq(page->holds[0]->book_id, book);
    cr_assert_str_eq(page->holds[0]->book_title, "Held | the book");
    cr_assert_eq(page->holds[0]->place_time->seconds, now - 30);
    cr_assert_null(page->holds[0]->expire_time);
    expect_hold(t, bob, hb, "WAITING 2");
    expect_hold(t, cho, hc, "WAITING 3");

    /* an old snapshot, late: positions stay those of the newest */
    hold_queued(c, bob, hb, book, queue_of(book, 1, (const char *[]){hb, NULL}));
    cr_assert(harness_wait_consumer_idle(fixture_nats_url(), "mypage", 10000));
    expect_hold(t, bob, hb, "WAITING 2");

    /* a copy comes back: ann's hold is READY, the others move up */
    hold_ready(c, ann, ha, book, now + 3600, queue_of(book, 4, (const char *[]){hb, hc, NULL}));
    page = expect_hold(t, ann, ha, "READY 0");
    cr_assert_not_null(page->holds[0]->expire_time);
    cr_assert_eq(page->holds[0]->expire_time->seconds, now + 3600);
    cr_assert_str_eq(page->holds[0]->book_title, "Held | the book", "READY keeps what HoldPlaced said");
    expect_hold(t, bob, hb, "WAITING 1");
    expect_hold(t, cho, hc, "WAITING 2");

    /* cho cancels (lending), the catalog lets go of it; ann collects her copy */
    hold_over(c, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_CANCELED, cho, hc, book, NULL);
    expect_hold(t, cho, hc, "none");
    hold_over(c, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED, cho, hc, book,
              queue_of(book, 5, (const char *[]){hb, NULL}));
    hold_over(c, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_FULFILLED, ann, ha, book, NULL);
    page = expect_hold(t, ann, ha, "none");
    cr_assert_eq(page->n_holds, 0);
    /* bob's copy comes and is not collected */
    hold_ready(c, bob, hb, book, now + 60, queue_of(book, 6, (const char *[]){NULL}));
    expect_hold(t, bob, hb, "READY 0");
    hold_over(c, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_EXPIRED, bob, hb, book, queue_of(book, 7, (const char *[]){NULL}));
    expect_hold(t, bob, hb, "none");

    /* a hold event that arrives again (a redelivery, a republish) changes nothing */
    hold_placed(c, cho, hc, book, "Held | the book", now - 10);
    hold_queued(c, bob, hb, book, queue_of(book, 3, (const char *[]){ha, hb, hc, NULL}));
    cr_assert(harness_wait_consumer_idle(fixture_nats_url(), "mypage", 10000));
    cr_assert_eq(page_of(t, cho)->n_holds, 0);
    cr_assert_eq(page_of(t, bob)->n_holds, 0);
    nats_connection_close(c);
}

/* A hold turning READY is about its holder: their WatchMypage gets the page within a second. */
Test(mypage, watch_pushes_a_hold_turning_ready_within_a_second) {
    target t = shared_target();
    nats_connection *c = connect_nats(fixture_nats_url());
    const char *user = unique("waiting");
    const char *book = new_hold_id(), *hold = new_hold_id(), *ahead = new_hold_id();
    status st;
    rpc_client_stream *stream = watch(t, user_bearer(user), NULL, 30000, &st);
    Mypage *page = NULL;
    cr_assert_eq(next_page(stream, 5000, &page, &st), STATUS_OK, "%s", st.message);
    cr_assert_not_null(page);
    cr_assert_eq(page->n_holds, 0);

    int64_t now = timestamp_now_ms() / 1000;
    hold_placed(c, user, hold, book, "Pushed", now);
    hold_queued(c, user, hold, book, queue_of(book, 1, (const char *[]){ahead, hold, NULL}));
    while (strcmp(hold_seen(page, hold), "WAITING 2") != 0) {
        cr_assert_eq(next_page(stream, harness_latency_bound_ms(3000), &page, &st), STATUS_OK,
                     "no page with the WAITING hold: %s", st.message);
        cr_assert_not_null(page);
    }
    int64_t sent = harness_now_ms();
    hold_ready(c, user, hold, book, now + 3600, queue_of(book, 2, (const char *[]){ahead, NULL}));
    while (strcmp(hold_seen(page, hold), "READY 0") != 0) {
        cr_assert_eq(next_page(stream, 1000, &page, &st), STATUS_OK, "no page within a second: %s", st.message);
        cr_assert_not_null(page);
    }
    int64_t latency = harness_now_ms() - sent;
    cr_assert_lt(latency, harness_latency_bound_ms(1000), "the READY hold came %lld ms after HoldReady",
                 (long long)latency);
    cr_log_info("WatchMypage pushed the READY hold %lld ms after HoldReady was published", (long long)latency);
    rpc_client_stream_close(stream);
    nats_connection_close(c);
}

static status_code renew_as(target t, const char *user, const char *loan_id, Loan **out, status *st) {
    Library__Lending__V1__RenewLoanRequest request = LIBRARY__LENDING__V1__RENEW_LOAN_REQUEST__INIT;
    request.loan_id = (char *)loan_id;
    ProtobufCMessage *response = NULL;
    status_code code = harness_call(t.lending, LENDING "RenewLoan", &request.base, &library__lending__v1__loan__descriptor,
                                    mem, harness_bearer(mem, t.dir, user, false), &response, st);
    *out = (Loan *)response;
    return code;
}

/* Polls the user's page until its first loan shows renewal_count `renewals`. */
static Mypage *expect_renewals(target t, const char *user, int renewals) {
    int64_t until = harness_now_ms() + harness_latency_bound_ms(5000);
    Mypage *page = page_of(t, user);
    while ((page->n_loans == 0 || page->loans[0]->renewal_count != renewals) && harness_now_ms() < until) {
        harness_sleep_ms(50);
        page = page_of(t, user);
    }
    cr_assert_eq(page->n_loans, 1);
    cr_assert_eq(page->loans[0]->renewal_count, renewals, "the page shows %d renewals",
                 (int)page->loans[0]->renewal_count);
    return page;
}

/* A renewal through the real lending service: the page shows the count and the new due time,
 * and a loan that was overdue (LoanOverdue announced) no longer counts; when the new due time
 * passes too, it counts again. A rebuild from the stream gives the same page. */
Test(mypage, a_renewal_shows_its_due_time_and_count_and_ends_the_overdue) {
    const char *env[] = {"LOAN_PERIOD=4s", "RECONCILE_INTERVAL=300ms", NULL};
    test_stack s;
    test_stack_start(&s, "renewed", env, true, mypage_env);
    target t = stack_target(&s);
    const char **books = make_books(t, 1, 2);
    const char *user = unique("renewer");
    Loan *loan = NULL;
    status st;
    cr_assert_eq(borrow_as(t, mem, user, books[0], &loan, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(loan->status, ACTIVE);
    /* past due and announced: overdue on the page */
    Mypage *page = page_of(t, user);
    for (int64_t until = harness_now_ms() + 10000; page->overdue_count == 0 && harness_now_ms() < until;
         harness_sleep_ms(100))
        page = page_of(t, user);
    cr_assert_eq(page->overdue_count, 1);
    cr_assert(harness_wait_consumer_idle(s.nats.url, "mypage", 10000));

    Loan *renewed = NULL;
    cr_assert_eq(renew_as(t, user, loan->loan_id, &renewed, &st), STATUS_OK, "%s", st.message);
    page = expect_renewals(t, user, 1);
    cr_assert_eq(page->loans[0]->due_time->seconds, renewed->due_time->seconds);
    cr_assert_eq(page->overdue_count, 0, "the renewed loan still counts as overdue");
    cr_assert_eq(page->borrowed_count, 1);

    /* the new due time passes: overdue again */
    page = page_of(t, user);
    for (int64_t until = harness_now_ms() + 10000; page->overdue_count == 0 && harness_now_ms() < until;
         harness_sleep_ms(100))
        page = page_of(t, user);
    cr_assert_eq(page->overdue_count, 1);
    cr_assert_eq(renew_as(t, user, loan->loan_id, &renewed, &st), STATUS_OK, "%s", st.message);
    page = expect_renewals(t, user, 2);
    cr_assert_eq(page->loans[0]->due_time->seconds, renewed->due_time->seconds);
    cr_assert_eq(page->overdue_count, 0);

    /* a rebuild from the stream reads the same loan (the overdue count is not compared: the
     * short loan period may pass during the rebuild) */
    cr_assert(harness_wait_consumer_idle(s.nats.url, "mypage", 10000));
    page = page_of(t, user);
    cr_assert_eq(rebuild(&s), 0, "mypage --rebuild failed (see %s)", s.dir);
    Mypage *rebuilt = page_of(t, user);
    cr_assert_eq(rebuilt->n_loans, 1);
    cr_assert_eq(rebuilt->loans[0]->renewal_count, 2);
    cr_assert_eq(rebuilt->loans[0]->due_time->seconds, page->loans[0]->due_time->seconds);
    cr_assert_eq(rebuilt->loans[0]->status, ACTIVE);
    cr_assert_eq(rebuilt->last_event_time->seconds, page->last_event_time->seconds);
    cr_assert_eq(rebuilt->last_event_time->nanos, page->last_event_time->nanos);
    test_stack_stop(&s);
}

/* A mypage of an older release left its durable consumer on the loan subjects only, and it
 * went past a hold answer of the catalog. The new mypage makes the consumer anew from the
 * start of the stream, so that answer reaches the page too. */
Test(mypage, a_durable_left_on_the_loan_subjects_is_made_anew_and_misses_no_hold_event) {
    test_stack s;
    test_stack_start(&s, "refilter", lending_env, true, mypage_env);
    target t = stack_target(&s);
    int port = s.mypage.port;
    cr_assert_eq(harness_process_stop(&s.mypage, SIGTERM, 10000), 0);

    nats_connection *c = connect_nats(s.nats.url);
    jsCtx *js = nats_connection_jetstream(c);
    jsErrCode error = 0;
    cr_assert_eq(js_DeleteConsumer(js, EVENTS_STREAM, "mypage", NULL, &error), NATS_OK);
    jsConsumerConfig config;
    jsConsumerConfig_Init(&config);
    config.Durable = "mypage";
    config.FilterSubject = EVENTS_LOAN_SUBJECTS;
    config.AckPolicy = js_AckExplicit;
    config.DeliverPolicy = js_DeliverAll;
    jsConsumerInfo *info = NULL;
    cr_assert_eq(js_AddConsumer(&info, js, EVENTS_STREAM, &config, NULL, &error), NATS_OK);
    jsConsumerInfo_Destroy(info);

    const char *user = unique("upgraded");
    const char *book = new_hold_id(), *hold = new_hold_id(), *ahead = new_hold_id();
    hold_placed(c, user, hold, book, "Before the upgrade", timestamp_now_ms() / 1000);
    hold_queued(c, user, hold, book, queue_of(book, 1, (const char *[]){ahead, hold, NULL}));
    hold_over(c, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_CANCELED, unique("someone"), ahead, book, NULL);
    /* the old release takes every loan event, acking past the catalog's answer */
    natsSubscription *old = NULL;
    jsSubOptions options;
    jsSubOptions_Init(&options);
    options.Stream = EVENTS_STREAM;
    options.Consumer = "mypage";
    cr_assert_eq(js_PullSubscribe(&old, js, EVENTS_LOAN_SUBJECTS, "mypage", NULL, &options, &error), NATS_OK);
    for (bool more = true; more;) {
        natsMsgList list = {0};
        more = natsSubscription_Fetch(&list, old, 64, 1000, &error) == NATS_OK && list.Count > 0;
        for (int i = 0; i < list.Count; i++)
            natsMsg_Ack(list.Msgs[i], NULL);
        natsMsgList_Destroy(&list);
    }
    natsSubscription_Destroy(old); /* not Unsubscribe: that would delete the durable */
    cr_assert_eq(js_GetConsumerInfo(&info, js, EVENTS_STREAM, "mypage", NULL, &error), NATS_OK);
    cr_assert_eq(info->NumPending, 0);
    cr_assert_eq(info->NumAckPending, 0);
    jsConsumerInfo_Destroy(info);

    char port_env[32];
    snprintf(port_env, sizeof port_env, "GRPC_PORT=%d", port);
    const char *restart_env[] = {"EVENT_ACK_WAIT=2s", port_env, NULL};
    cr_assert(fixture_start_mypage(s.dir, s.nats.url, s.redis.url, restart_env, &s.mypage),
              "mypage did not start: %s", s.mypage.log_path);
    expect_hold(t, user, hold, "WAITING 2");
    cr_assert_eq(js_GetConsumerInfo(&info, js, EVENTS_STREAM, "mypage", NULL, &error), NATS_OK);
    cr_assert_str_eq(info->Config->FilterSubject, EVENTS_ALL_SUBJECTS);
    jsConsumerInfo_Destroy(info);
    nats_connection_close(c);
    test_stack_stop(&s);
}

/* The queue moves when the reader ahead is served: that event names only the reader ahead,
 * yet the page of the reader behind changed (their position), and their watch gets it. */
Test(mypage, watch_pushes_a_new_position_when_the_reader_ahead_is_served) {
    target t = shared_target();
    nats_connection *c = connect_nats(fixture_nats_url());
    const char *ahead_user = unique("ahead"), *behind_user = unique("behind");
    const char *book = new_hold_id(), *ahead = new_hold_id(), *behind = new_hold_id();
    int64_t now = timestamp_now_ms() / 1000;
    hold_placed(c, ahead_user, ahead, book, "Queued", now - 5);
    hold_queued(c, ahead_user, ahead, book, queue_of(book, 1, (const char *[]){ahead, NULL}));
    hold_placed(c, behind_user, behind, book, "Queued", now);
    hold_queued(c, behind_user, behind, book, queue_of(book, 2, (const char *[]){ahead, behind, NULL}));
    expect_hold(t, behind_user, behind, "WAITING 2");

    status st;
    rpc_client_stream *stream = watch(t, user_bearer(behind_user), NULL, 30000, &st);
    Mypage *page = NULL;
    cr_assert_eq(next_page(stream, 5000, &page, &st), STATUS_OK, "%s", st.message);
    cr_assert_not_null(page);
    cr_assert_str_eq(hold_seen(page, behind), "WAITING 2");
    int64_t sent = harness_now_ms();
    hold_ready(c, ahead_user, ahead, book, now + 3600, queue_of(book, 3, (const char *[]){behind, NULL}));
    while (strcmp(hold_seen(page, behind), "WAITING 1") != 0) {
        cr_assert_eq(next_page(stream, 1000, &page, &st), STATUS_OK, "no page within a second: %s", st.message);
        cr_assert_not_null(page);
    }
    int64_t latency = harness_now_ms() - sent;
    cr_assert_lt(latency, harness_latency_bound_ms(1000), "the new position came %lld ms after HoldReady",
                 (long long)latency);
    cr_log_info("WatchMypage pushed position 1 to the reader behind %lld ms after the one ahead was served",
                (long long)latency);
    rpc_client_stream_close(stream);
    nats_connection_close(c);
}

/* --- the account (lending's fines) ------------------------------------------------------------ */

#define FINE_ACCRUING LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_ACCRUING
#define FINE_OWED LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_OWED
#define FINE_PAID LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_PAID

/* An account event as lending publishes it: the user's account after the change, with one
 * fine (loan_id's: amount, paid of it, state) at version, occur time occur_ms. */
static event *account_event(Library__Events__V1__Event__BodyCase kind, const char *user, const char *loan_id,
                            uint64_t version, int64_t amount, int64_t paid, int state, int64_t occur_ms) {
    Library__Lending__V1__Fine *fine = (void *)arena_new_message(mem, &library__lending__v1__fine__descriptor);
    fine->loan_id = (char *)loan_id;
    fine->book_id = "fined-book";
    fine->book_title = "Late | and fined";
    fine->amount = amount;
    fine->paid = paid;
    fine->state = state;
    Library__Lending__V1__Account *account = (void *)arena_new_message(mem, &library__lending__v1__account__descriptor);
    account->user_id = (char *)user;
    account->balance = amount - paid;
    account->fines = arena_alloc(mem, sizeof *account->fines);
    account->fines[0] = fine;
    account->n_fines = 1;
    account->update_time = timestamp_from_ms(mem, occur_ms);
    account->block_at = 500;
    Library__Events__V1__AccountSnapshot *snapshot =
        (void *)arena_new_message(mem, &library__events__v1__account_snapshot__descriptor);
    snapshot->version = version;
    snapshot->account = account;
    event *e = (event *)arena_new_message(mem, &library__events__v1__event__descriptor);
    e->event_id = (char *)unique("account");
    e->occur_time = timestamp_from_ms(mem, occur_ms);
    e->correlation_id = (char *)loan_id;
    e->body_case = kind;
    if (kind == LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED) {
        e->fine_assessed = (void *)arena_new_message(mem, &library__events__v1__fine_assessed__descriptor);
        e->fine_assessed->user_id = (char *)user;
        e->fine_assessed->loan_id = (char *)loan_id;
        e->fine_assessed->amount = amount;
        e->fine_assessed->fixed = state != FINE_ACCRUING;
        e->fine_assessed->account = snapshot;
    } else if (kind == LIBRARY__EVENTS__V1__EVENT__BODY_FINE_PAID) {
        e->fine_paid = (void *)arena_new_message(mem, &library__events__v1__fine_paid__descriptor);
        e->fine_paid->user_id = (char *)user;
        e->fine_paid->amount = paid;
        e->fine_paid->account = snapshot;
    } else {
        e->fine_waived = (void *)arena_new_message(mem, &library__events__v1__fine_waived__descriptor);
        e->fine_waived->user_id = (char *)user;
        e->fine_waived->loan_id = (char *)loan_id;
        e->fine_waived->amount = amount - paid;
        e->fine_waived->reason = "first time";
        e->fine_waived->account = snapshot;
    }
    return e;
}

/* Publishes e (again: under a fresh message id, so JetStream stores it again). */
static void publish_account_event(nats_connection *connection, event *e) {
    e->event_id = (char *)unique("account");
    status st;
    cr_assert_eq(events_publish(connection, e, &st), STATUS_OK, "%s", st.message);
}

/* The page packed without its user id, so pages of different users compare. */
static uint8_t *packed_page(Mypage *page, size_t *size) {
    page->user_id = "";
    return arena_pack(mem, &page->base, size);
}

/* The projection's merge itself, on the shared Redis: three snapshots of one account and the
 * loan they fine, applied in each of the six orders and then all again, give one page, the
 * newest snapshot's; applying an event again reports no change. */
Test(mypage, account_snapshots_in_any_order_and_again_give_the_newest_page) {
    page_store *store = NULL;
    status st;
    cr_assert_eq(page_store_open(fixture_redis_url(), &mypage_login, 2000, NULL, &store, &st), STATUS_OK, "%s",
                 st.message);
    const char *loan_id = new_hold_id(), *other_loan = new_hold_id();
    int64_t now = timestamp_now_ms();
    const int orders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    uint8_t *first = NULL;
    size_t first_size = 0;
    for (int o = 0; o < 6; o++) {
        const char *user = unique("order");
        event *events[3] = {
            account_event(LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED, user, loan_id, 1, 25, 0, FINE_ACCRUING, now - 3000),
            account_event(LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED, user, loan_id, 2, 75, 0, FINE_OWED, now - 2000),
            account_event(LIBRARY__EVENTS__V1__EVENT__BODY_FINE_PAID, user, other_loan, 3, 10, 10, FINE_PAID, now - 1000),
        };
        loan_change loan = {.user_id = user, .loan_id = loan_id, .status = RETURNED, .rank = PAGE_RANK_FINAL,
                            .book_id = "fined-book", .book_title = "Late", .event_time_ms = now - 4000};
        cr_assert_eq(page_store_apply(store, &loan, 1, NULL, &st), STATUS_OK, "%s", st.message);
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < 3; i++) {
                account_change change;
                cr_assert(page_account_change_from_event(mem, events[orders[o][i]], &change));
                bool changed = false;
                cr_assert_eq(page_store_apply_account(store, &change, &changed, &st), STATUS_OK, "%s", st.message);
                if (pass == 1)
                    cr_assert_not(changed, "order %d: event %d applied again changed the page", o, orders[o][i]);
            }
        Mypage *page = NULL;
        cr_assert_eq(page_store_load(store, mem, user, &page, &st), STATUS_OK, "%s", st.message);
        cr_assert_eq(page->balance, 0, "order %d: the newest snapshot (paid) shows", o);
        cr_assert_eq(page->n_fines, 1);
        cr_assert_str_eq(page->fines[0]->loan_id, other_loan);
        cr_assert_eq(page->n_loans, 1);
        cr_assert_eq(page->loans[0]->fine, 75, "order %d: the loan keeps its fine from snapshot 2", o);
        cr_assert_eq(page->last_event_time->seconds, (now - 1000) / 1000);
        size_t size = 0;
        uint8_t *packed = packed_page(page, &size);
        if (o == 0) {
            first = packed;
            first_size = size;
        }
        cr_assert(size == first_size && memcmp(packed, first, size) == 0, "order %d gives another page", o);
    }
    page_store_close(store);
}

/* Polls (GetMypage) until the user's balance reads `balance`, then waits until the projection
 * has nothing pending and returns the page. */
static Mypage *expect_balance(target t, const char *nats_url, const char *user, int64_t balance) {
    int64_t until = harness_now_ms() + harness_latency_bound_ms(5000);
    Mypage *page = page_of(t, user);
    while (page->balance != balance && harness_now_ms() < until) {
        harness_sleep_ms(50);
        page = page_of(t, user);
    }
    cr_assert_eq(page->balance, balance, "%s's balance", user);
    cr_assert(harness_wait_consumer_idle(nats_url, "mypage", 10000));
    return page_of(t, user);
}

/* Reads the watch until it pushes a page with `balance`; returns it and asserts it came within
 * a second of sent_ms. */
static Mypage *expect_pushed_balance(rpc_client_stream *stream, int64_t balance, int64_t sent_ms,
                                     int64_t *latency_ms) {
    Mypage *page = NULL;
    status st;
    do {
        cr_assert_eq(next_page(stream, harness_latency_bound_ms(1000), &page, &st), STATUS_OK,
                     "no page with balance %lld within a second: %s", (long long)balance, st.message);
        cr_assert_not_null(page, "the watch ended");
    } while (page->balance != balance);
    *latency_ms = harness_now_ms() - sent_ms;
    cr_assert_lt(*latency_ms, harness_latency_bound_ms(1000), "balance %lld came %lld ms after its event",
                 (long long)balance, (long long)*latency_ms);
    return page;
}

/* Lending's fine events through the real NATS to the real mypage: GetMypage and WatchMypage
 * show the balance, the fines and the loan's fine; a newer snapshot wins, an older one
 * arriving later and any event arriving again change nothing; the watch pushes each change
 * within a second; mypage --rebuild gives the same page. */
Test(mypage, fines_show_on_the_page_the_newest_snapshot_wins_and_watch_pushes_them) {
    test_stack s;
    test_stack_start(&s, "fines", lending_env, true, mypage_env);
    target t = stack_target(&s);
    nats_connection *c = connect_nats(s.nats.url);
    const char *user = unique("fined");
    const char *loan_id = new_hold_id();
    loan_story story = {.connection = c, .user = user, .book_id = "fined-book", .title = "Late | and fined",
                        .due_seconds = timestamp_now_ms() / 1000 - 3600};
    tell(&story, loan_id, ACTIVATED_EVENT, timestamp_now_ms() - 5000);
    status st;
    rpc_client_stream *stream = watch(t, harness_bearer(mem, t.dir, user, false), NULL, 60000, &st);
    Mypage *page = NULL;
    do {
        cr_assert_eq(next_page(stream, harness_latency_bound_ms(5000), &page, &st), STATUS_OK, "%s", st.message);
        cr_assert_not_null(page);
    } while (page->n_loans == 0);
    cr_assert_eq(page->balance, 0);
    cr_assert_eq(page->n_fines, 0);
    cr_assert_eq(page->loans[0]->fine, 0);

    /* a first interval overdue: 25 */
    int64_t latency[2];
    int64_t sent = harness_now_ms();
    publish_account_event(c, account_event(LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED, user, loan_id, 1, 25, 0,
                                           FINE_ACCRUING, timestamp_now_ms()));
    page = expect_pushed_balance(stream, 25, sent, &latency[0]);
    cr_assert_eq(page->n_fines, 1);
    cr_assert_str_eq(page->fines[0]->loan_id, loan_id);
    cr_assert_str_eq(page->fines[0]->book_title, "Late | and fined");
    cr_assert_eq(page->fines[0]->state, FINE_ACCRUING);
    cr_assert_eq(page->loans[0]->fine, 25);

    /* returned and fixed at 75 (version 3), then a payment of 25 out of an older 50
     * (version 2) arrives late: the page stays at version 3 */
    event *fixed = account_event(LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED, user, loan_id, 3, 75, 0,
                                 FINE_OWED, timestamp_now_ms());
    event *late = account_event(LIBRARY__EVENTS__V1__EVENT__BODY_FINE_PAID, user, loan_id, 2, 50, 25,
                                FINE_ACCRUING, timestamp_now_ms() - 500);
    publish_account_event(c, fixed);
    publish_account_event(c, late);
    page = expect_balance(t, s.nats.url, user, 75);
    cr_assert_eq(page->balance, 75, "the older snapshot, arriving later, changed the balance");
    cr_assert_eq(page->fines[0]->state, FINE_OWED);
    cr_assert_eq(page->fines[0]->paid, 0);
    cr_assert_eq(page->loans[0]->fine, 75);

    /* paid in full at the desk (version 4): pushed */
    sent = harness_now_ms();
    publish_account_event(c, account_event(LIBRARY__EVENTS__V1__EVENT__BODY_FINE_PAID, user, loan_id, 4, 75, 75,
                                           FINE_PAID, timestamp_now_ms()));
    page = expect_pushed_balance(stream, 0, sent, &latency[1]);
    cr_assert_eq(page->n_fines, 1, "a settled fine stays listed");
    cr_assert_eq(page->fines[0]->state, FINE_PAID);
    cr_assert_eq(page->loans[0]->fine, 75, "the loan's fine as assessed, paid or not");
    cr_assert(harness_wait_consumer_idle(s.nats.url, "mypage", 10000));
    size_t size = 0;
    uint8_t *settled = arena_pack(mem, &page_of(t, user)->base, &size);

    /* every account event again, and the old ones once more: nothing changes */
    publish_account_event(c, fixed);
    publish_account_event(c, late);
    cr_assert(harness_wait_consumer_idle(s.nats.url, "mypage", 10000));
    size_t again_size = 0;
    uint8_t *again = arena_pack(mem, &page_of(t, user)->base, &again_size);
    cr_assert(again_size == size && memcmp(again, settled, size) == 0, "events arriving again changed the page");

    /* the replay gives the same page */
    cr_assert_eq(rebuild(&s), 0, "mypage --rebuild failed (see %s)", s.dir);
    size_t rebuilt_size = 0;
    uint8_t *rebuilt = arena_pack(mem, &page_of(t, user)->base, &rebuilt_size);
    cr_assert(rebuilt_size == size && memcmp(rebuilt, settled, size) == 0, "the rebuilt page differs");
    cr_log_info("WatchMypage pushed the fine %lld ms and the payment %lld ms after their events",
                (long long)latency[0], (long long)latency[1]);
    rpc_client_stream_close(stream);
    nats_connection_close(c);
    test_stack_stop(&s);
}

/* --- retention: settled loans leave the pages ---------------------------------------------------- */

static const char *const retention_env[] = {"EVENT_ACK_WAIT=2s", "RETENTION=3s", NULL};

/* mypage --rebuild with RETENTION as the running service has it. */
static int rebuild_with_retention(test_stack *s, const char *retention) {
    char nats_env[160], redis_env[160], retention_setting[64];
    snprintf(nats_env, sizeof nats_env, "NATS_URL=%s", s->nats.url);
    snprintf(redis_env, sizeof redis_env, "REDIS_URL=%s", s->redis.url);
    snprintf(retention_setting, sizeof retention_setting, "RETENTION=%s", retention);
    const char *env[] = {nats_env, redis_env, retention_setting, NULL};
    return harness_service_run("mypage", "--rebuild", s->dir, env, harness_latency_bound_ms(45000));
}

/* The loan events of one loan in the stream, in stream order (the caller frees them). */
static collected loan_events_of(nats_connection *connection, const char *loan_id) {
    collected all = {0}, mine = {0};
    status st;
    cr_assert_eq(events_replay(connection, EVENTS_LOAN_SUBJECTS, collect, &all, NULL, &st), STATUS_OK, "%s",
                 st.message);
    for (size_t i = 0; i < all.count; i++) {
        loan_change change;
        if (page_change_from_event(all.events[i], &change) && strcmp(change.loan_id, loan_id) == 0) {
            mine.events = realloc(mine.events, (mine.count + 1) * sizeof *mine.events);
            mine.events[mine.count++] = all.events[i];
        } else {
            library__events__v1__event__free_unpacked(all.events[i], NULL);
        }
    }
    free(all.events);
    return mine;
}

static void collected_free(collected *c) {
    for (size_t i = 0; i < c->count; i++)
        library__events__v1__event__free_unpacked(c->events[i], NULL);
    free(c->events);
}

static int count_fields(redisContext *c, const char *pattern_key, const char *prefix) {
    redisReply *reply = redisCommand(c, "HKEYS %s", pattern_key);
    cr_assert(reply != NULL && reply->type == REDIS_REPLY_ARRAY, "HKEYS %s failed", pattern_key);
    int n = 0;
    for (size_t i = 0; i < reply->elements; i++)
        n += strncmp(reply->element[i]->str, prefix, strlen(prefix)) == 0;
    freeReplyObject(reply);
    return n;
}

/* RETENTION=3s: of two loans, the returned one leaves the page within the retention and one
 * sweep (1 s) of its return, with the watcher told; the active one stays. An old event of the
 * removed loan published again does not bring it back, and a rebuild gives the same page. */
Test(mypage, a_returned_loan_leaves_the_page_after_the_retention_and_stays_gone) {
    test_stack s;
    test_stack_start(&s, "retention", lending_env, true, retention_env);
    target t = stack_target(&s);
    const char *user = unique("forgetful");
    const char **books = make_books(t, 2, 1);
    Book first = {.book_id = (char *)books[0]}, second = {.book_id = (char *)books[1]};
    Loan *kept = borrow_ok(t, user, &first), *returned = borrow_ok(t, user, &second);
    status st;
    rpc_client_stream *stream = watch(t, harness_bearer(mem, t.dir, user, false), NULL, 30000, &st);
    cr_assert_eq(return_as(t, mem, user, returned->loan_id, &st), STATUS_OK, "ReturnBook: %s", st.message);
    int64_t returned_at = harness_now_ms();

    /* the page shows both (the return), then only the active one (the retention) */
    bool seen_both = false;
    Mypage *page = NULL;
    int64_t removed_at = 0;
    while (removed_at == 0) {
        cr_assert_eq(next_page(stream, 8000, &page, &st), STATUS_OK, "no page pushed: %s", st.message);
        cr_assert_not_null(page, "the watch ended");
        bool has_returned = false;
        for (size_t i = 0; i < page->n_loans; i++)
            has_returned |= strcmp(page->loans[i]->loan_id, returned->loan_id) == 0 &&
                            page->loans[i]->status == RETURNED;
        if (has_returned && page->n_loans == 2)
            seen_both = true;
        else if (seen_both && page->n_loans == 1)
            removed_at = harness_now_ms();
    }
    rpc_client_stream_close(stream);
    int64_t took_ms = removed_at - returned_at;
    cr_assert_lt(took_ms, 3000 + 1000 + harness_latency_bound_ms(1500),
                 "the returned loan left the page %lld ms after its return", (long long)took_ms);
    cr_assert_geq(took_ms, 2500, "the returned loan left the page %lld ms after its return: before the retention",
                  (long long)took_ms);
    cr_assert_str_eq(page->loans[0]->loan_id, kept->loan_id);
    cr_assert_eq(page->loans[0]->status, ACTIVE);
    cr_assert_eq(page->borrowed_count, 1);
    cr_assert_eq(page->overdue_count, 0);

    Mypage *read = page_of(t, user);
    cr_assert_eq(read->n_loans, 1, "GetMypage lists %zu loans", read->n_loans);
    cr_assert_str_eq(read->loans[0]->loan_id, kept->loan_id);
    cr_assert_eq(read->borrowed_count, 1);
    size_t size = 0;
    uint8_t *before = arena_pack(mem, &read->base, &size);

    /* the removed loan's events again, as a late redelivery or a republish would bring them */
    nats_connection *connection = connect_nats(s.nats.url);
    collected again = loan_events_of(connection, returned->loan_id);
    cr_assert_geq(again.count, 3, "the stream has %zu events of the returned loan", again.count);
    for (size_t i = 0; i < again.count; i++) {
        char *original = again.events[i]->event_id;
        again.events[i]->event_id = arena_sprintf(mem, "%s-late", original);
        cr_assert_eq(events_publish(connection, again.events[i], &st), STATUS_OK, "%s", st.message);
        again.events[i]->event_id = original;
    }
    cr_assert(harness_wait_consumer_idle(s.nats.url, "mypage", 10000),
              "mypage's consumer still had events pending after 10 s");
    harness_sleep_ms(1200); /* and a sweep */
    size_t size_after = 0;
    uint8_t *after = arena_pack(mem, &page_of(t, user)->base, &size_after);
    cr_assert(size_after == size && memcmp(after, before, size) == 0, "an old event brought the loan back");

    /* a rebuild at rest leaves it out too: the same page, byte for byte */
    cr_assert_eq(rebuild_with_retention(&s, "3s"), 0, "mypage --rebuild failed; log in %s", s.dir);
    cr_assert_gt(generation_in_use(&s.redis), 0, "the rebuild did not switch generations");
    after = arena_pack(mem, &page_of(t, user)->base, &size_after);
    cr_assert(size_after == size && memcmp(after, before, size) == 0, "the rebuild gave another page");

    /* nothing of the loan stays in Redis but its mark, and no fields of other loans went */
    redisContext *c = harness_redis_connect(s.redis.port);
    cr_assert(c != NULL && c->err == 0, "cannot reach redis");
    const char *key = arena_sprintf(mem, "mypage:%llu:%s", (unsigned long long)generation_in_use(&s.redis),
                                    text_base64url_encode(mem, (const uint8_t *)user, strlen(user)));
    cr_assert_eq(count_fields(c, key, "l:"), 1);
    cr_assert_eq(count_fields(c, key, "x:"), 1, "the removed loan's mark");
    redisFree(c);
    cr_log_info("the returned loan left the page %lld ms after its return (RETENTION=3s)", (long long)took_ms);
    collected_free(&again);
    nats_connection_close(connection);
    test_stack_stop(&s);
}

/* A loan's LoanReturned alone (all the stream may keep of it) gives the page entry all of its
 * events give: the same title, due time after its renewals and renewal count. */
Test(mypage, a_loan_returned_alone_gives_the_page_the_whole_loan_gives) {
    target t = shared_target();
    const char *user = unique("whole"), *other = unique("alone");
    const char **books = make_books(t, 1, 1);
    Book book = {.book_id = (char *)books[0]};
    Loan *loan = borrow_ok(t, user, &book);
    for (int i = 0; i < 2; i++) {
        Library__Lending__V1__RenewLoanRequest request = LIBRARY__LENDING__V1__RENEW_LOAN_REQUEST__INIT;
        request.loan_id = loan->loan_id;
        ProtobufCMessage *response = NULL;
        status st;
        status_code code = harness_call(t.lending, LENDING "RenewLoan", &request.base,
                                        &library__lending__v1__loan__descriptor, mem,
                                        harness_bearer(mem, t.dir, user, false), &response, &st);
        cr_assert_eq(code, STATUS_OK, "RenewLoan: %s %s", status_code_name(code), st.message);
    }
    status st;
    cr_assert_eq(return_as(t, mem, user, loan->loan_id, &st), STATUS_OK, "ReturnBook: %s", st.message);
    nats_connection *connection = connect_nats(fixture_nats_url());
    cr_assert(harness_wait_consumer_idle(fixture_nats_url(), "mypage", 10000), "mypage's consumer is behind");
    collected events = loan_events_of(connection, loan->loan_id);
    event *final = NULL;
    for (size_t i = 0; i < events.count; i++)
        if (events.events[i]->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RETURNED)
            final = events.events[i];
    cr_assert_not_null(final, "no LoanReturned in the stream");
    /* the same event for another user: their page is built from it alone */
    char *original_id = final->event_id, *original_user = final->loan_returned->user_id;
    final->event_id = arena_sprintf(mem, "%s-alone", original_id);
    final->loan_returned->user_id = (char *)other;
    cr_assert_eq(events_publish(connection, final, &st), STATUS_OK, "%s", st.message);
    final->event_id = original_id; /* the event frees its own strings, not the arena's */
    final->loan_returned->user_id = original_user;
    cr_assert(harness_wait_consumer_idle(fixture_nats_url(), "mypage", 10000), "mypage's consumer is behind");

    Mypage *whole = page_of(t, user), *alone = page_of(t, other);
    cr_assert_eq(whole->n_loans, 1);
    cr_assert_eq(whole->loans[0]->renewal_count, 2);
    cr_assert_eq(whole->loans[0]->status, RETURNED);
    alone->user_id = whole->user_id;
    size_t whole_size = 0, alone_size = 0;
    uint8_t *x = arena_pack(mem, &whole->base, &whole_size), *y = arena_pack(mem, &alone->base, &alone_size);
    cr_assert(whole_size == alone_size && memcmp(x, y, whole_size) == 0,
              "built from the LoanReturned alone: %zu loans, \"%s\", due %lld, %d renewals; from the whole loan: "
              "\"%s\", due %lld, %d renewals",
              alone->n_loans, alone->n_loans ? alone->loans[0]->book_title : "",
              alone->n_loans && alone->loans[0]->due_time ? (long long)alone->loans[0]->due_time->seconds : 0LL,
              alone->n_loans ? alone->loans[0]->renewal_count : 0, whole->loans[0]->book_title,
              whole->loans[0]->due_time ? (long long)whole->loans[0]->due_time->seconds : 0LL,
              whole->loans[0]->renewal_count);
    collected_free(&events);
    nats_connection_close(connection);
}

/* --- retention in the store itself, on a Redis of its own (the sweep would take the shared
 * pages' settled loans too) --------------------------------------------------------------------- */

typedef struct removal_tally {
    pthread_t thread;
    page_store *store;
    int64_t now_ms;
    atomic_int *told;
    int steps;
    bool failed;
} removal_tally;

static void count_removed(void *arg, const char *user_id) {
    (void)user_id;
    atomic_fetch_add(((removal_tally *)arg)->told, 1);
}

static void *sweeper_main(void *arg) {
    removal_tally *tally = arg;
    bool more = true;
    while (more && !tally->failed) {
        status st;
        tally->failed = page_store_sweep(tally->store, tally->now_ms, 25, &more, count_removed, tally, &st) != STATUS_OK;
        tally->steps++;
    }
    return NULL;
}

static loan_change loan_event(const char *user, const char *loan_id, int status_value, int rank, int64_t at_ms) {
    return (loan_change){.user_id = user, .loan_id = loan_id, .status = status_value, .rank = rank,
                         .due_seconds = at_ms / 1000 + 600, .book_id = "kept-book", .book_title = "Kept",
                         .event_time_ms = at_ms};
}

static void apply_loan(page_store *store, loan_change change, uint64_t sequence) {
    status st;
    cr_assert_eq(page_store_apply(store, &change, sequence, NULL, &st), STATUS_OK, "%s", st.message);
}

static Mypage *stored_page(page_store *store, const char *user) {
    Mypage *page = NULL;
    status st;
    cr_assert_eq(page_store_load(store, mem, user, &page, &st), STATUS_OK, "%s", st.message);
    return page;
}

/* A store with a retention on a Redis of its own, started under the fixture's directory. */
static page_store *store_of_its_own(const char *name, int64_t retention_ms, harness_process *redis) {
    const char *dir = arena_sprintf(mem, "%s/%s", fixture_dir(), name);
    mkdir(dir, 0700);
    cr_assert(harness_redis_start(dir, 0, redis), "redis-server did not start");
    page_store *store = NULL;
    status st;
    cr_assert_eq(page_store_open(redis->url, &mypage_login, 2000, NULL, &store, &st), STATUS_OK, "%s", st.message);
    page_store_set_retention(store, retention_ms);
    return store;
}

/* The page's last mark ("x:") stays through a sweep just before due_ms and goes at one just
 * after. */
static void expect_last_mark_goes_at(page_store *store, redisContext *c, const char *key, int64_t due_ms,
                                     atomic_int *told) {
    removal_tally marks = {.store = store, .now_ms = due_ms - 100, .told = told};
    sweeper_main(&marks);
    cr_assert_eq(count_fields(c, key, "x:"), 1, "the mark went before its time");
    marks.now_ms = due_ms + 100;
    sweeper_main(&marks);
    cr_assert_not(marks.failed);
    cr_assert_eq(count_fields(c, key, "x:"), 0, "the mark outlived two retentions after the settle time");
}

/* RETENTION=2s in the store: a final event older than that never shows, nor does its loan's
 * fine or a later copy of its events; one younger leaves at the sweep 2 s after it, with its
 * fine, open loans stay; the marks go two retentions after the settle time; and two replicas
 * sweeping 200 pages at once remove each loan once. */
Test(mypage, the_store_removes_settled_loans_once_and_keeps_them_removed) {
    harness_process redis;
    page_store *store = store_of_its_own("retention-store", 2000, &redis), *replica = NULL;
    status st;
    cr_assert_eq(page_store_open(redis.url, &mypage_login, 2000, NULL, &replica, &st), STATUS_OK, "%s", st.message);
    page_store_set_retention(replica, 2000);
    int64_t now = timestamp_now_ms();

    /* settled long ago: its final event puts nothing on the page, and nothing brings it back */
    const char *user = "keeper", *old = new_hold_id(), *recent = new_hold_id(), *open = new_hold_id();
    apply_loan(store, loan_event(user, old, PENDING, PAGE_RANK_PENDING, now - 9000), 1);
    apply_loan(store, loan_event(user, old, RETURNED, PAGE_RANK_FINAL, now - 5000), 2);
    apply_loan(store, loan_event(user, old, ACTIVE, PAGE_RANK_ACTIVE, now - 8000), 3);
    apply_loan(store, loan_event(user, open, ACTIVE, PAGE_RANK_ACTIVE, now - 100000), 4);
    apply_loan(store, loan_event(user, recent, RETURNED, PAGE_RANK_FINAL, now - 500), 5);
    event *fined = account_event(LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED, user, old, 1, 40, 0, FINE_OWED, now);
    account_change fine;
    cr_assert(page_account_change_from_event(mem, fined, &fine));
    cr_assert_eq(page_store_apply_account(store, &fine, NULL, &st), STATUS_OK, "%s", st.message);
    fined = account_event(LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED, user, recent, 2, 30, 0, FINE_OWED, now);
    cr_assert(page_account_change_from_event(mem, fined, &fine));
    cr_assert_eq(page_store_apply_account(store, &fine, NULL, &st), STATUS_OK, "%s", st.message);
    Mypage *page = stored_page(store, user);
    cr_assert_eq(page->n_loans, 2, "the page lists %zu loans", page->n_loans);
    cr_assert_str_eq(page->loans[0]->loan_id, recent);
    cr_assert_eq(page->loans[0]->fine, 30);
    cr_assert_str_eq(page->loans[1]->loan_id, open);
    cr_assert_eq(page->borrowed_count, 1);

    redisContext *c = harness_redis_connect(redis.port);
    const char *key = arena_sprintf(mem, "mypage:0:%s", text_base64url_encode(mem, (const uint8_t *)user, strlen(user)));
    cr_assert_eq(count_fields(c, key, "x:"), 1, "the loan settled long ago is marked");
    cr_assert_eq(count_fields(c, key, "f:"), 1, "only the loan on the page has a fine");

    /* a sweep before the retention changes nothing; one after it takes the recent loan, and
     * the mark of the old one (settled two retentions before) */
    atomic_int told = 0;
    removal_tally early = {.store = store, .now_ms = now - 1500, .told = &told};
    sweeper_main(&early);
    cr_assert_not(early.failed);
    cr_assert_eq(atomic_load(&told), 0);
    cr_assert_eq(count_fields(c, key, "x:"), 1);
    removal_tally due = {.store = store, .now_ms = now + 1600, .told = &told};
    sweeper_main(&due);
    cr_assert_eq(atomic_load(&told), 1, "the user whose page lost a loan is told once");
    page = stored_page(store, user);
    cr_assert_eq(page->n_loans, 1);
    cr_assert_str_eq(page->loans[0]->loan_id, open, "the open loan stays, however old");
    cr_assert_eq(page->borrowed_count, 1);
    cr_assert_eq(count_fields(c, key, "f:"), 0, "the fine went with its loan");
    cr_assert_eq(count_fields(c, key, "x:"), 1, "the old mark went, the recent loan's came");
    apply_loan(store, loan_event(user, recent, ACTIVE, PAGE_RANK_ACTIVE, now - 1000), 6);
    cr_assert_eq(page_store_apply_account(store, &fine, NULL, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(stored_page(store, user)->n_loans, 1, "a late copy of an event brought the loan back");
    cr_assert_eq(count_fields(c, key, "f:"), 0, "a snapshot listing its fine gave it back its fine");
    /* the recent loan's mark goes two retentions after it settled (now - 500) */
    expect_last_mark_goes_at(store, c, key, now + 3500, &told);
    cr_assert_eq(atomic_load(&told), 1, "dropping a mark changes no page");

    /* two replicas sweep 200 pages at once, 25 loans a step: each loan leaves once */
    enum { USERS = 200 };
    for (int i = 0; i < USERS; i++) {
        const char *someone = arena_sprintf(mem, "reader-%d", i);
        apply_loan(store, loan_event(someone, new_hold_id(), RETURNED, PAGE_RANK_FINAL, now), (uint64_t)(10 + i));
    }
    atomic_store(&told, 0);
    removal_tally one = {.store = store, .now_ms = now + 2000, .told = &told};
    removal_tally two = {.store = replica, .now_ms = now + 2000, .told = &told};
    pthread_create(&one.thread, NULL, sweeper_main, &one);
    pthread_create(&two.thread, NULL, sweeper_main, &two);
    pthread_join(one.thread, NULL);
    pthread_join(two.thread, NULL);
    cr_assert(!one.failed && !two.failed);
    cr_assert_eq(atomic_load(&told), USERS, "%d pages were told of a removal, want %d", atomic_load(&told), USERS);
    for (int i = 0; i < USERS; i += 37)
        cr_assert_eq(stored_page(store, arena_sprintf(mem, "reader-%d", i))->n_loans, 0);
    redisReply *reply = redisCommand(c, "ZCARD mypage:0:retention:settled");
    cr_assert_eq(reply->integer, 0);
    freeReplyObject(reply);
    cr_log_info("two replicas swept %d pages in %d + %d steps", USERS, one.steps, two.steps);
    redisFree(c);
    page_store_close(store);
    page_store_close(replica);
    harness_process_stop(&redis, SIGTERM, 5000);
}

static void apply_hold_event(page_store *store, const char *user, const char *hold_id, int status_value, int rank,
                             int64_t at_ms, uint64_t sequence) {
    hold_change change = {.user_id = user, .hold_id = hold_id, .status = status_value, .rank = rank,
                          .book_id = "held-book", .book_title = "Held", .place_seconds = at_ms / 1000,
                          .event_time_ms = at_ms, .order_ms = at_ms, .queue_book_id = ""};
    status st;
    cr_assert_eq(page_store_apply_hold(store, &change, sequence, NULL, NULL, NULL, &st), STATUS_OK, "%s", st.message);
}

static bool has_field(redisContext *c, const char *key, const char *field) {
    redisReply *reply = redisCommand(c, "HEXISTS %s %s", key, field);
    bool exists = reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
    freeReplyObject(reply);
    return exists;
}

/* RETENTION=2s in the store, for holds as for loans: a hold closed longer ago than that leaves
 * nothing in the hash (its "h:" and "p:" go at once) and a late event does not bring it back;
 * one closed recently stays hidden in the hash until the sweep a retention after its final
 * event takes its "h:" and "p:", an open hold stays however old, and the marks go two
 * retentions after the close. A closed hold is not shown, so its removal tells no one; an
 * event of a removed hold still gives its book's queue snapshot. */
Test(mypage, the_store_removes_closed_holds_once_and_keeps_them_removed) {
    harness_process redis;
    page_store *store = store_of_its_own("retention-holds", 2000, &redis);
    status st;
    int64_t now = timestamp_now_ms();
    const char *user = "holder", *old = new_hold_id(), *recent = new_hold_id(), *open = new_hold_id();
    apply_hold_event(store, user, old, WAITING, PAGE_HOLD_RANK_WAITING, now - 9000, 1);
    apply_hold_event(store, user, old, LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_CANCELED, PAGE_HOLD_RANK_FINAL,
                     now - 5000, 2);
    apply_hold_event(store, user, old, WAITING, PAGE_HOLD_RANK_WAITING, now - 8000, 3); /* a late HoldQueued */
    apply_hold_event(store, user, open, WAITING, PAGE_HOLD_RANK_WAITING, now - 100000, 4);
    apply_hold_event(store, user, recent, WAITING, PAGE_HOLD_RANK_WAITING, now - 3000, 5);
    apply_hold_event(store, user, recent, LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_EXPIRED, PAGE_HOLD_RANK_FINAL,
                     now - 500, 6);
    Mypage *page = stored_page(store, user);
    cr_assert_eq(page->n_holds, 1, "the page lists %zu holds", page->n_holds);
    cr_assert_str_eq(page->holds[0]->hold_id, open);

    redisContext *c = harness_redis_connect(redis.port);
    const char *encoded = text_base64url_encode(mem, (const uint8_t *)user, strlen(user));
    const char *key = arena_sprintf(mem, "mypage:0:%s", encoded);
    cr_assert_not(has_field(c, key, arena_sprintf(mem, "h:%s", old)), "the hold closed long ago is in the hash");
    cr_assert_not(has_field(c, key, arena_sprintf(mem, "p:%s", old)));
    cr_assert(has_field(c, key, arena_sprintf(mem, "x:h:%s", old)), "the hold closed long ago is not marked");
    cr_assert(has_field(c, key, arena_sprintf(mem, "h:%s", recent)), "the hold closed recently left before its time");
    redisReply *reply = redisCommand(c, "ZSCORE mypage:0:retention:settled %s|h:%s", encoded, recent);
    cr_assert(reply->type == REDIS_REPLY_STRING && atoll(reply->str) == now - 500,
              "the closed hold is not in the settled set at its final event's time");
    freeReplyObject(reply);

    /* a sweep before the retention changes nothing; one after it takes the recent hold */
    atomic_int told = 0;
    removal_tally early = {.store = store, .now_ms = now - 1500, .told = &told};
    sweeper_main(&early);
    cr_assert_not(early.failed);
    cr_assert(has_field(c, key, arena_sprintf(mem, "h:%s", recent)));
    removal_tally due = {.store = store, .now_ms = now + 1600, .told = &told};
    sweeper_main(&due);
    cr_assert_not(due.failed);
    cr_assert_not(has_field(c, key, arena_sprintf(mem, "h:%s", recent)), "the closed hold's h: stayed");
    cr_assert_not(has_field(c, key, arena_sprintf(mem, "p:%s", recent)), "the closed hold's p: stayed");
    cr_assert(has_field(c, key, arena_sprintf(mem, "x:h:%s", recent)));
    cr_assert(has_field(c, key, arena_sprintf(mem, "h:%s", open)), "the open hold left");
    cr_assert(has_field(c, key, arena_sprintf(mem, "p:%s", open)));
    cr_assert_eq(count_fields(c, key, "h:"), 1, "only the open hold is left in the hash");
    cr_assert_eq(atomic_load(&told), 0, "a closed hold's removal changes no page shown");

    /* a late HoldReady of the removed hold, with its book's queue: the hold stays gone, the
     * queue counts */
    hold_change late = {.user_id = user, .hold_id = recent, .status = LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_READY,
                        .rank = PAGE_HOLD_RANK_READY, .book_id = "held-book", .book_title = "Held",
                        .event_time_ms = now - 1000, .order_ms = now - 3000, .queue_book_id = "held-book",
                        .queue_version = 7, .queue_hold_ids = (char *)open};
    cr_assert_eq(page_store_apply_hold(store, &late, 7, NULL, NULL, NULL, &st), STATUS_OK, "%s", st.message);
    cr_assert_not(has_field(c, key, arena_sprintf(mem, "h:%s", recent)), "a late event brought the hold back");
    cr_assert_not(has_field(c, key, arena_sprintf(mem, "p:%s", recent)));
    page = stored_page(store, user);
    cr_assert_eq(page->n_holds, 1);
    cr_assert_eq(page->holds[0]->position, 1, "the late event's queue snapshot was dropped");

    /* the marks go two retentions after the close (the recent hold's at now + 3500) */
    cr_assert_eq(count_fields(c, key, "x:h:"), 1, "the mark of the hold closed long ago outlived two retentions");
    expect_last_mark_goes_at(store, c, key, now + 3500, &told);
    reply = redisCommand(c, "HKEYS %s", key);
    cr_log_info("the hash keeps %zu fields after the sweeps", reply->elements);
    freeReplyObject(reply);

    /* pages stored by an older release: a closed hold and a returned loan without an entry in
     * the settled set. The sweep's pass over the pages enters them as of the page's newest
     * event, and they leave a retention after it; on a page whose newest event is older than
     * the retention they leave at once. Open holds stay. */
    const char *stale = "stale-holder", *lapsed = "lapsed-holder";
    const char *stale_key = arena_sprintf(mem, "mypage:0:%s", text_base64url_encode(mem, (const uint8_t *)stale, strlen(stale)));
    const char *lapsed_key =
        arena_sprintf(mem, "mypage:0:%s", text_base64url_encode(mem, (const uint8_t *)lapsed, strlen(lapsed)));
    const char *closed = new_hold_id(), *waiting = new_hold_id(), *loan = new_hold_id();
    freeReplyObject(redisCommand(c, "HSET %s t %lld h:%s 8|3|4|100|0|held-book|Held p:%s 100000 h:%s 9|1|1|100|0|held-book|Held "
                                    "l:%s 7|3|4|200|0|kept-book|Kept",
                                 stale_key, (long long)(now - 500), closed, closed, waiting, loan));
    freeReplyObject(redisCommand(c, "HSET %s t %lld h:%s 8|3|4|100|0|held-book|Held", lapsed_key,
                                 (long long)(now - 5000), closed));
    freeReplyObject(redisCommand(c, "DEL mypage:0:retention:scan")); /* what an older release left */
    atomic_store(&told, 0);
    removal_tally pass = {.store = store, .now_ms = now, .told = &told};
    sweeper_main(&pass);
    cr_assert_not(pass.failed);
    cr_assert_eq(count_fields(c, lapsed_key, "h:"), 0, "a closed hold of a page idle for a retention stayed");
    cr_assert_eq(count_fields(c, stale_key, "h:"), 2, "the pass took a hold before its time");
    cr_assert_eq(count_fields(c, stale_key, "l:"), 1, "the pass took a loan before its time");
    cr_assert_eq(atomic_load(&told), 0);
    reply = redisCommand(c, "ZSCORE mypage:0:retention:settled %s|h:%s",
                         text_base64url_encode(mem, (const uint8_t *)stale, strlen(stale)), closed);
    cr_assert(reply->type == REDIS_REPLY_STRING && atoll(reply->str) == now - 500,
              "the old closed hold is not entered at its page's newest event");
    freeReplyObject(reply);
    pass.now_ms = now + 1600;
    sweeper_main(&pass);
    cr_assert_eq(count_fields(c, stale_key, "h:"), 1, "the old closed hold stayed");
    cr_assert(has_field(c, stale_key, arena_sprintf(mem, "h:%s", waiting)), "the open hold left");
    cr_assert_not(has_field(c, stale_key, arena_sprintf(mem, "p:%s", closed)));
    cr_assert_eq(count_fields(c, stale_key, "l:"), 0, "the old returned loan stayed");
    cr_assert_eq(atomic_load(&told), 1, "the user whose page lost the loan is told once");
    cr_log_info("the two sweeps with the pass over the pages took %d steps", pass.steps);
    redisFree(c);
    page_store_close(store);
    harness_process_stop(&redis, SIGTERM, 5000);
}

/* The store orders a page by each loan's borrow time and each hold's place time ("b:", "p:",
 * the earliest seen), whatever stream sequences their events had: the sequences here are those
 * of a rebuild that found the older loan and hold only as announcements made after the newer
 * ones. An event without the time (from before it was carried) changes nothing; a removal by
 * retention takes "b:" with its loan; a page left with nothing shows no time. */
Test(mypage, the_store_orders_by_borrow_and_place_time_not_by_sequence) {
    harness_process redis;
    page_store *store = store_of_its_own("order-store", 2000, &redis);
    status st;
    int64_t now = timestamp_now_ms();
    const char *user = "orderly", *kept = new_hold_id(), *newer = new_hold_id();
    loan_change change = loan_event(user, newer, ACTIVE, PAGE_RANK_ACTIVE, now - 1000);
    change.order_ms = now - 60000;
    apply_loan(store, change, 10);
    change = loan_event(user, kept, ACTIVE, PAGE_RANK_ACTIVE, now - 500);
    change.order_ms = now - 90000;
    apply_loan(store, change, 20);
    change.order_ms = 0; /* an older release's event of the same loan */
    apply_loan(store, change, 5);
    const char *old_hold = new_hold_id(), *new_hold = new_hold_id();
    hold_change hold = {.user_id = user, .hold_id = new_hold, .status = WAITING, .rank = PAGE_HOLD_RANK_WAITING,
                        .book_id = "b1", .book_title = "New", .place_seconds = now / 1000 - 30,
                        .event_time_ms = now - 400, .order_ms = now - 30000, .queue_book_id = ""};
    cr_assert_eq(page_store_apply_hold(store, &hold, 11, NULL, NULL, NULL, &st), STATUS_OK, "%s", st.message);
    hold.hold_id = old_hold;
    hold.book_title = "Old";
    hold.order_ms = now - 80000;
    cr_assert_eq(page_store_apply_hold(store, &hold, 21, NULL, NULL, NULL, &st), STATUS_OK, "%s", st.message);
    Mypage *page = stored_page(store, user);
    cr_assert_eq(page->n_loans, 2);
    cr_assert_str_eq(page->loans[0]->loan_id, newer, "the loan borrowed last is not first");
    cr_assert_str_eq(page->loans[1]->loan_id, kept);
    cr_assert_eq(page->n_holds, 2);
    cr_assert_str_eq(page->holds[0]->hold_id, old_hold, "the hold placed first is not first");

    redisContext *c = harness_redis_connect(redis.port);
    const char *key =
        arena_sprintf(mem, "mypage:0:%s", text_base64url_encode(mem, (const uint8_t *)user, strlen(user)));
    redisReply *reply = redisCommand(c, "HGET %s b:%s", key, kept);
    cr_assert(reply->type == REDIS_REPLY_STRING && atoll(reply->str) == now - 90000, "b: is not the borrow time");
    freeReplyObject(reply);

    /* both loans end, long ago: removed at once, with their borrow times; the holds end */
    for (int i = 0; i < 2; i++) {
        change = loan_event(user, i ? kept : newer, RETURNED, PAGE_RANK_FINAL, now - 5000);
        change.order_ms = i ? now - 90000 : now - 60000;
        apply_loan(store, change, (uint64_t)(30 + i));
        hold.hold_id = i ? old_hold : new_hold;
        hold.status = LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_CANCELED;
        hold.rank = PAGE_HOLD_RANK_FINAL;
        cr_assert_eq(page_store_apply_hold(store, &hold, (uint64_t)(40 + i), NULL, NULL, NULL, &st), STATUS_OK, "%s",
                     st.message);
    }
    cr_assert_eq(count_fields(c, key, "b:"), 0, "a removed loan left its borrow time");
    page = stored_page(store, user);
    cr_assert_eq(page->n_loans + page->n_holds, 0);
    cr_assert_null(page->last_event_time, "a page that shows nothing tells a time");
    redisFree(c);
    page_store_close(store);
    harness_process_stop(&redis, SIGTERM, 5000);
}
