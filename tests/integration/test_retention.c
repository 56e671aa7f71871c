/* test_retention.c - RETENTION in lending, over gRPC against real nats-server, catalog and
 * lending processes, with a retention of seconds: a returned loan is forgotten (GetLoan
 * NOT_FOUND, gone from ListLoans) once its retention is over and not before; a loan kept out is
 * not, and is announced again so that the stream, which keeps events for the retention only,
 * still holds it while its first events are gone; a waiting hold likewise, answered by the
 * catalog each time; a canceled hold is forgotten; a returned loan with a fine still owed stays
 * until the fine is paid. */
#include <criterion/criterion.h>
#include <hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "kv.h"
#include "loan_record.pb-c.h"
#include "library/lending/v1/lending.pb-c.h"
#include "library/mypage/v1/mypage.pb-c.h"
#include "stack_fixture.h"
#include "text.h"
#include "timestamp.h"

typedef Library__Lending__V1__Loan Loan;

#define LENDING "/library.lending.v1.LendingService/"
#define ACTIVE LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE
#define RETENTION_MS 4000

TestSuite(retention, .init = fixture_setup, .fini = fixture_teardown, .timeout = 120);

static status_code call(test_stack *s, const char *method, const ProtobufCMessage *request,
                        const ProtobufCMessageDescriptor *type, const char *bearer, ProtobufCMessage **out,
                        status *st) {
    return harness_call(s->lending_client, arena_sprintf(mem, LENDING "%s", method), request, type, mem, bearer,
                        out, st);
}

static status_code get_loan(test_stack *s, const char *bearer, const char *loan_id, status *st) {
    Library__Lending__V1__GetLoanRequest request = LIBRARY__LENDING__V1__GET_LOAN_REQUEST__INIT;
    request.loan_id = (char *)loan_id;
    ProtobufCMessage *response = NULL;
    return call(s, "GetLoan", &request.base, &library__lending__v1__loan__descriptor, bearer, &response, st);
}

typedef Library__Lending__V1__Hold Hold;

static Hold *hold_call(test_stack *s, const char *method, const ProtobufCMessage *request, const char *bearer) {
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(call(s, method, request, &library__lending__v1__hold__descriptor, bearer, &response, &st), STATUS_OK,
                 "%s: %s", method, st.message);
    return (Hold *)response;
}

static status_code get_hold(test_stack *s, const char *bearer, const char *hold_id, status *st) {
    Library__Lending__V1__GetHoldRequest request = LIBRARY__LENDING__V1__GET_HOLD_REQUEST__INIT;
    request.hold_id = (char *)hold_id;
    ProtobufCMessage *response = NULL;
    return call(s, "GetHold", &request.base, &library__lending__v1__hold__descriptor, bearer, &response, st);
}

/* Polls GetLoan until NOT_FOUND; the time it first was, or -1 at the deadline. */
static int64_t forgotten_at(test_stack *s, const char *bearer, const char *loan_id, int64_t deadline_ms) {
    while (timestamp_now_ms() < deadline_ms) {
        status st;
        status_code code = get_loan(s, bearer, loan_id, &st);
        if (code == STATUS_NOT_FOUND)
            return timestamp_now_ms();
        cr_assert_eq(code, STATUS_OK, "GetLoan(%s): %s", loan_id, st.message);
        harness_sleep_ms(100);
    }
    return -1;
}

static bool lists(test_stack *s, const char *admin, const char *user, const char *loan_id, size_t *count) {
    Loan **loans = NULL;
    cr_assert(fixture_list_loans(s->lending_client, mem, admin, user, &loans, count), "ListLoans failed");
    for (size_t i = 0; i < *count; i++)
        if (strcmp(loans[i]->loan_id, loan_id) == 0)
            return true;
    return false;
}

/* --- the stream, read back ----------------------------------------------------------------- */

typedef struct seen {
    const char *id;   /* of a loan or a hold */
    int events;       /* whose event id names it */
    int first_ids;    /* under its own id ("loan-activated-<id>", "hold-placed-<id>", ...) */
    int announced;    /* announced again ("...-<id>-a<ms>" for a loan, "...-<id>-r<second>" for a hold) */
    uint64_t first_sequence; /* of the oldest event the stream still has of it; 0: none */
} seen;

static status_code see(void *arg, const event *e, uint64_t sequence, status *st) {
    (void)st;
    seen *v = arg;
    const char *at = strstr(e->event_id, v->id);
    if (at == NULL)
        return STATUS_OK;
    const char *rest = at + strlen(v->id);
    if (v->events++ == 0)
        v->first_sequence = sequence;
    if (*rest == '\0')
        v->first_ids++;
    else if (strncmp(rest, "-a", 2) == 0 || (strncmp(rest, "-r", 2) == 0 && strtoull(rest + 2, NULL, 10) > 1000000))
        v->announced++;
    return STATUS_OK;
}

static seen stream_of(test_stack *s, const char *id) {
    nats_connection_options options = harness_nats_options(s->nats.url, "retention-test");
    options.connect_timeout_ms = 5000;
    nats_connection *connection = NULL;
    status st;
    cr_assert_eq(nats_connection_open(&options, &connection, &st), STATUS_OK, "%s", st.message);
    seen v = {.id = id};
    cr_assert_eq(events_replay(connection, EVENTS_ALL_SUBJECTS, see, &v, NULL, &st), STATUS_OK, "%s", st.message);
    nats_connection_close(connection);
    return v;
}

/* A reader with a loan kept out, a hold waiting behind another reader's loan, and a loan
 * given back, on a stack started with retention settings. */
typedef struct reader {
    const char *user, *bearer, *admin;
    Loan *kept, *returned;
    Hold *waiting;
} reader;

static reader reader_with_history(test_stack *s) {
    char id[13];
    text_random_hex(id, 6);
    reader r = {.user = arena_sprintf(mem, "reader-%s", id)};
    r.bearer = harness_bearer(mem, s->dir, r.user, false);
    r.admin = harness_bearer(mem, s->dir, "librarian", true);
    r.kept = test_stack_borrow_as(s, r.bearer, test_stack_register(s, "Kept Out", 1)->book_id);
    const char *wanted = test_stack_register(s, "Much Wanted", 1)->book_id;
    test_stack_borrow_as(s, harness_bearer(mem, s->dir, arena_sprintf(mem, "other-%s", id), false), wanted);
    Library__Lending__V1__PlaceHoldRequest wait = LIBRARY__LENDING__V1__PLACE_HOLD_REQUEST__INIT;
    wait.book_id = (char *)wanted;
    r.waiting = hold_call(s, "PlaceHold", &wait.base, r.bearer);
    r.returned = test_stack_borrow_as(s, r.bearer, test_stack_register(s, "Given Back", 1)->book_id);
    return r;
}

/* --- the tests ------------------------------------------------------------------------------ */

Test(retention, a_returned_loan_is_forgotten_after_the_retention_and_a_kept_one_is_announced_again) {
    const char *env[] = {"RETENTION=4s", "RECONCILE_INTERVAL=200ms", "RECONCILE_AFTER=1s", NULL};
    test_stack s;
    test_stack_start(&s, "retention", env, false, NULL);
    reader r = reader_with_history(&s);
    const char *user = r.user, *bearer = r.bearer, *admin = r.admin;
    Loan *kept = r.kept, *returned = r.returned;
    Hold *waiting = r.waiting;
    Library__Lending__V1__PlaceHoldRequest place = LIBRARY__LENDING__V1__PLACE_HOLD_REQUEST__INIT;
    place.book_id = (char *)test_stack_register(&s, "Held Then Not", 1)->book_id;
    Hold *hold = hold_call(&s, "PlaceHold", &place.base, bearer);
    Library__Lending__V1__CancelHoldRequest cancel = LIBRARY__LENDING__V1__CANCEL_HOLD_REQUEST__INIT;
    cancel.hold_id = hold->hold_id;
    hold_call(&s, "CancelHold", &cancel.base, bearer);
    test_stack_return_as(&s, bearer, returned->loan_id);
    int64_t returned_ms = timestamp_now_ms();
    size_t count = 0;
    cr_assert(lists(&s, admin, user, returned->loan_id, &count), "ListLoans lost the returned loan at once");
    cr_assert_eq(count, 2);

    int64_t gone = forgotten_at(&s, bearer, returned->loan_id, returned_ms + RETENTION_MS + 10000);
    cr_assert_neq(gone, -1, "the returned loan was still there %d ms after its retention", 10000);
    cr_assert_geq(gone, returned_ms + RETENTION_MS - 100, "forgotten %lld ms after the return, before its retention",
                  (long long)(gone - returned_ms));
    cr_assert_not(lists(&s, admin, user, returned->loan_id, &count), "ListLoans still lists the forgotten loan");
    cr_assert_eq(count, 1, "ListLoans lists %zu loans, the kept one alone expected", count);
    status st;
    cr_assert_eq(get_loan(&s, bearer, kept->loan_id, &st), STATUS_OK, "the kept loan went too: %s", st.message);
    int64_t hold_deadline = timestamp_now_ms() + 5000;
    status_code hold_code;
    while ((hold_code = get_hold(&s, bearer, hold->hold_id, &st)) == STATUS_OK && timestamp_now_ms() < hold_deadline)
        harness_sleep_ms(100);
    cr_assert_eq(hold_code, STATUS_NOT_FOUND, "the canceled hold outlived its retention: %s %s",
                 status_code_name(hold_code), st.message);

    /* the stream: the returned loan's events age out; the kept loan's first ones too, but it was
     * announced again, so a rebuild still finds it */
    int64_t deadline = timestamp_now_ms() + 10000;
    seen old = stream_of(&s, returned->loan_id), out = stream_of(&s, kept->loan_id),
         queued = stream_of(&s, waiting->hold_id);
    while ((old.events > 0 || out.first_ids > 0 || queued.first_ids > 0) && timestamp_now_ms() < deadline) {
        harness_sleep_ms(250);
        old = stream_of(&s, returned->loan_id);
        out = stream_of(&s, kept->loan_id);
        queued = stream_of(&s, waiting->hold_id);
    }
    cr_assert_eq(old.events, 0, "%d events of the forgotten loan are still in the stream", old.events);
    cr_assert_eq(out.first_ids, 0, "the kept loan's first events outlived the retention");
    cr_assert_gt(out.announced, 0, "the kept loan was not announced again: a rebuild would lose it");
    cr_assert_eq(queued.first_ids, 0, "the waiting hold's first events outlived the retention");
    cr_assert_geq(queued.announced, 2, "the waiting hold was not announced again, with the catalog's answer "
                  "(%d events)", queued.announced);
    cr_assert_eq(get_hold(&s, bearer, waiting->hold_id, &st), STATUS_OK, "the open hold went: %s", st.message);
    test_stack_stop(&s);
}

Test(retention, a_loan_with_a_fine_owed_stays_until_the_fine_is_paid) {
    const char *env[] = {"RETENTION=3s", "RECONCILE_INTERVAL=200ms", "RECONCILE_AFTER=1s", "LOAN_PERIOD=2s",
                         "FINE_INTERVAL=1s", "FINE_PER_INTERVAL=10", "FINE_BLOCK_AT=1000", NULL};
    test_stack s;
    test_stack_start(&s, "retention-fine", env, false, NULL);
    char id[13];
    text_random_hex(id, 6);
    const char *user = arena_sprintf(mem, "late-%s", id);
    const char *bearer = harness_bearer(mem, s.dir, user, false);
    const char *admin = harness_bearer(mem, s.dir, "librarian", true);
    Loan *late = test_stack_borrow_as(&s, bearer, test_stack_register(&s, "Returned Late", 1)->book_id);
    while (timestamp_now_ms() < late->due_time->seconds * 1000 + 1500)
        harness_sleep_ms(100);
    test_stack_return_as(&s, bearer, late->loan_id);

    /* past its retention, with the fine owed: still there */
    harness_sleep_ms(3000 + 2000);
    status st;
    cr_assert_eq(get_loan(&s, bearer, late->loan_id, &st), STATUS_OK,
                 "a loan with a fine owed was forgotten: %s", st.message);

    Library__Lending__V1__GetAccountRequest account_request = LIBRARY__LENDING__V1__GET_ACCOUNT_REQUEST__INIT;
    account_request.user_id = (char *)user;
    ProtobufCMessage *account = NULL;
    cr_assert_eq(call(&s, "GetAccount", &account_request.base, &library__lending__v1__account__descriptor, admin,
                      &account, &st),
                 STATUS_OK, "GetAccount: %s", st.message);
    int64_t owed = ((Library__Lending__V1__Account *)account)->balance;
    cr_assert_gt(owed, 0, "the late return left no fine");
    Library__Lending__V1__PayFinesRequest pay = LIBRARY__LENDING__V1__PAY_FINES_REQUEST__INIT;
    pay.user_id = (char *)user;
    pay.amount = owed;
    pay.request_id = "pay-all";
    cr_assert_eq(call(&s, "PayFines", &pay.base, &library__lending__v1__account__descriptor, admin, &account, &st),
                 STATUS_OK, "PayFines: %s", st.message);

    /* paid: it goes within RECONCILE_AFTER and a round */
    cr_assert_neq(forgotten_at(&s, bearer, late->loan_id, timestamp_now_ms() + 10000), -1,
                  "the loan stayed after its fine was paid");
    /* and the settled fine leaves the account */
    int64_t deadline = timestamp_now_ms() + 10000;
    Library__Lending__V1__Account *now = NULL;
    do {
        harness_sleep_ms(200);
        cr_assert_eq(call(&s, "GetAccount", &account_request.base, &library__lending__v1__account__descriptor, admin,
                          &account, &st),
                     STATUS_OK, "GetAccount: %s", st.message);
        now = (Library__Lending__V1__Account *)account;
    } while (now->n_fines > 0 && timestamp_now_ms() < deadline);
    cr_assert_eq(now->n_fines, 0, "the paid fine of a forgotten loan is still in the account");
    cr_assert_eq(now->balance, 0);
    test_stack_stop(&s);
}

/* --- the page, rebuilt from what the stream kept ---------------------------------------------- */

typedef Library__Mypage__V1__Mypage Mypage;

static Mypage *page_of(test_stack *s, const char *admin, const char *user) {
    Library__Mypage__V1__GetMypageRequest request = LIBRARY__MYPAGE__V1__GET_MYPAGE_REQUEST__INIT;
    request.user_id = (char *)user;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(harness_call(s->mypage_client, "/library.mypage.v1.MypageService/GetMypage", &request.base,
                              &library__mypage__v1__mypage__descriptor, mem, admin, &response, &st),
                 STATUS_OK, "GetMypage: %s", st.message);
    return (Mypage *)response;
}

/* The page's bytes, last_event_time included. */
static uint8_t *page_bytes(Mypage *page, size_t *size) {
    *size = protobuf_c_message_get_packed_size(&page->base);
    uint8_t *bytes = arena_alloc(mem, *size + 1);
    protobuf_c_message_pack(&page->base, bytes);
    return bytes;
}

static bool same_page(Mypage *x, Mypage *y) {
    size_t x_size = 0, y_size = 0;
    uint8_t *x_bytes = page_bytes(x, &x_size), *y_bytes = page_bytes(y, &y_size);
    return x_size == y_size && memcmp(x_bytes, y_bytes, x_size) == 0;
}

static long long page_ms(const Mypage *page) {
    const Google__Protobuf__Timestamp *t = page->last_event_time;
    return t ? (long long)t->seconds * 1000 + t->nanos / 1000000 : -1;
}

/* How many of a hold's fields ("h:<id>", "p:<id>") the user's hash in the pages in use keeps,
 * read from Redis itself: a closed hold does not show on the page, so GetMypage cannot tell. */
static int hold_fields_kept(test_stack *s, const char *user, const char *hold_id) {
    redisContext *c = harness_redis_connect(s->redis.port);
    cr_assert_not_null(c, "cannot reach Redis");
    redisReply *generation = redisCommand(c, "GET mypage:generation");
    const char *key = arena_sprintf(mem, "mypage:%s:%s", generation->type == REDIS_REPLY_STRING ? generation->str : "0",
                                    text_base64url_encode(mem, (const uint8_t *)user, strlen(user)));
    freeReplyObject(generation);
    redisReply *fields = redisCommand(c, "HKEYS %s", key);
    cr_assert(fields != NULL && fields->type == REDIS_REPLY_ARRAY, "HKEYS %s failed", key);
    int kept = 0;
    for (size_t i = 0; i < fields->elements; i++) {
        const char *field = fields->element[i]->str;
        kept += (strncmp(field, "h:", 2) == 0 || strncmp(field, "p:", 2) == 0) && strcmp(field + 2, hold_id) == 0;
    }
    freeReplyObject(fields);
    redisFree(c);
    return kept;
}

#define PAGE_RETENTION_MS 8000

/* The reader keeps one loan out longer than the retention and borrows a newer one half a
 * retention after the kept one was first announced again; the rebuild runs while the stream
 * has the newer loan's first events but of the kept loan only announcements made after them,
 * which, ordered by stream sequence, made the kept loan the newer one. A second reader's only
 * loan was returned and left the page: nothing shows, and a rebuild finds no event of theirs.
 * Lending stops before the pages are compared, so no announcement comes in between. */
Test(retention, the_page_rebuilt_from_the_trimmed_stream_is_the_live_one) {
    const char *env[] = {"RETENTION=8s", "RECONCILE_INTERVAL=200ms", "RECONCILE_AFTER=1s", NULL};
    const char *mypage_env[] = {"RETENTION=8s", NULL};
    test_stack s;
    test_stack_start(&s, "retention-page", env, true, mypage_env);
    char id[13];
    text_random_hex(id, 6);
    const char *settled_user = arena_sprintf(mem, "settled-%s", id);
    const char *settled_bearer = harness_bearer(mem, s.dir, settled_user, false);
    Loan *settled = test_stack_borrow_as(&s, settled_bearer, test_stack_register(&s, "Read And Done", 1)->book_id);
    test_stack_return_as(&s, settled_bearer, settled->loan_id);
    reader r = reader_with_history(&s);
    const char *user = r.user, *admin = r.admin;
    Loan *kept = r.kept, *returned = r.returned;
    Hold *waiting = r.waiting;
    test_stack_return_as(&s, r.bearer, returned->loan_id);
    cr_assert_not_null(page_of(&s, admin, settled_user)->last_event_time, "the settled reader's page has no time");
    Library__Lending__V1__PlaceHoldRequest place = LIBRARY__LENDING__V1__PLACE_HOLD_REQUEST__INIT;
    place.book_id = (char *)test_stack_register(&s, "Held Then Not", 1)->book_id;
    Hold *canceled = hold_call(&s, "PlaceHold", &place.base, r.bearer);
    Library__Lending__V1__CancelHoldRequest cancel = LIBRARY__LENDING__V1__CANCEL_HOLD_REQUEST__INIT;
    cancel.hold_id = canceled->hold_id;
    hold_call(&s, "CancelHold", &cancel.base, r.bearer);
    int64_t canceled_ms = timestamp_now_ms();
    int64_t kept_deadline = canceled_ms + 5000, hold_gone_ms = 0;
    while (hold_fields_kept(&s, user, canceled->hold_id) == 0 && timestamp_now_ms() < kept_deadline)
        harness_sleep_ms(50);
    cr_assert_eq(hold_fields_kept(&s, user, canceled->hold_id), 2, "the canceled hold never reached the page's hash");

    /* the kept loan's first announcement; the newer loan a little before its second */
    int64_t deadline = timestamp_now_ms() + PAGE_RETENTION_MS + 5000;
    while (stream_of(&s, kept->loan_id).announced == 0 && timestamp_now_ms() < deadline)
        harness_sleep_ms(100);
    cr_assert_gt(stream_of(&s, kept->loan_id).announced, 0, "the kept loan was not announced again");
    harness_sleep_ms(PAGE_RETENTION_MS / 2 - 1000);
    Loan *newer = test_stack_borrow_as(&s, r.bearer, test_stack_register(&s, "Borrowed Later", 1)->book_id);
    int64_t newer_ms = timestamp_now_ms();

    /* the retention passes: the first events of the kept loan and of the hold are gone, the
     * kept loan's announcement before the newer loan too, the returned loans' events and the
     * returned loan from the page */
    deadline = timestamp_now_ms() + PAGE_RETENTION_MS + 5000;
    Mypage *page = page_of(&s, admin, user);
    seen out = stream_of(&s, kept->loan_id), later = stream_of(&s, newer->loan_id);
    while ((page->n_loans != 2 || out.first_ids > 0 || out.first_sequence < later.first_sequence ||
            stream_of(&s, waiting->hold_id).first_ids > 0 || stream_of(&s, returned->loan_id).events > 0 ||
            stream_of(&s, settled->loan_id).events > 0 || page_of(&s, admin, settled_user)->n_loans > 0 ||
            hold_fields_kept(&s, user, canceled->hold_id) > 0) &&
           timestamp_now_ms() < deadline) {
        harness_sleep_ms(100);
        if (hold_gone_ms == 0 && hold_fields_kept(&s, user, canceled->hold_id) == 0)
            hold_gone_ms = timestamp_now_ms();
        page = page_of(&s, admin, user);
        out = stream_of(&s, kept->loan_id);
        later = stream_of(&s, newer->loan_id);
    }
    cr_assert_gt(later.events, 0, "the newer loan's events are gone already");
    cr_assert_gt(out.events, 0, "no event of the kept loan is left in the stream");
    cr_assert_gt(out.first_sequence, later.first_sequence,
                 "the stream still holds an event of the kept loan from before the newer loan");
    cr_assert_eq(out.first_ids, 0, "the stream was not trimmed to the retention");
    cr_assert_eq(page->n_loans, 2, "the page lists %zu loans, the kept and the newer one expected", page->n_loans);
    cr_assert_str_eq(page->loans[0]->loan_id, newer->loan_id, "the loan borrowed last is not first");
    cr_assert_str_eq(page->loans[1]->loan_id, kept->loan_id);
    cr_assert_str_eq(page->loans[1]->book_title, "Kept Out", "the kept loan lost its title");
    cr_assert_eq(page->n_holds, 1, "the waiting hold is not on the page");
    cr_assert_eq(page->holds[0]->position, 1);
    cr_assert_eq(page_of(&s, admin, settled_user)->n_loans, 0,
                 "the returned loan did not leave the settled reader's page");
    cr_assert_eq(hold_fields_kept(&s, user, canceled->hold_id), 0,
                 "the canceled hold's h:/p: fields are still in the page's hash %lld ms after the cancel",
                 (long long)(timestamp_now_ms() - canceled_ms));
    cr_log_info("the canceled hold's fields left the hash %lld ms after the cancel",
                (long long)((hold_gone_ms ? hold_gone_ms : timestamp_now_ms()) - canceled_ms));

    /* no announcement from now on; what was on its way is applied */
    cr_assert_eq(harness_process_stop(&s.lending, SIGTERM, 10000), 0, "lending did not stop cleanly");
    cr_assert(harness_wait_consumer_idle(s.nats.url, "mypage", 10000), "mypage's consumer did not catch up");
    page = page_of(&s, admin, user);
    Mypage *settled_page = page_of(&s, admin, settled_user);
    cr_assert_not_null(page->last_event_time);
    int64_t rebuild_ms = timestamp_now_ms();
    char nats_env[160], redis_env[160];
    snprintf(nats_env, sizeof nats_env, "NATS_URL=%s", s.nats.url);
    snprintf(redis_env, sizeof redis_env, "REDIS_URL=%s", s.redis.url);
    const char *rebuild_env[] = {nats_env, redis_env, "RETENTION=8s", NULL};
    cr_assert_eq(harness_service_run("mypage", "--rebuild", s.dir, rebuild_env, harness_latency_bound_ms(45000)), 0,
                 "mypage --rebuild failed");
    cr_log_info("rebuilt %lld ms after the newer loan was borrowed (%d ms before its first events age out), in "
                "%lld ms", (long long)(rebuild_ms - newer_ms), (int)(newer_ms + PAGE_RETENTION_MS - rebuild_ms),
                (long long)(timestamp_now_ms() - rebuild_ms));
    Mypage *rebuilt = page_of(&s, admin, user);
    cr_assert_eq(rebuilt->n_loans, 2, "the rebuilt page lists %zu loans", rebuilt->n_loans);
    cr_assert_eq(rebuilt->n_holds, 1, "the rebuilt page lists %zu holds", rebuilt->n_holds);
    cr_assert_str_eq(rebuilt->loans[0]->loan_id, newer->loan_id, "the rebuilt page put the kept loan first");
    cr_assert_eq(page_ms(rebuilt), page_ms(page), "last_event_time: rebuilt %lld, live %lld", page_ms(rebuilt),
                 page_ms(page));
    cr_assert(same_page(page, rebuilt), "the page rebuilt from the trimmed stream differs from the live one");
    cr_assert_eq(hold_fields_kept(&s, user, canceled->hold_id), 0, "the rebuild put the canceled hold back in the hash");
    Mypage *settled_rebuilt = page_of(&s, admin, settled_user);
    cr_assert_eq(page_ms(settled_rebuilt), page_ms(settled_page),
                 "the settled reader's last_event_time: rebuilt %lld, live %lld", page_ms(settled_rebuilt),
                 page_ms(settled_page));
    cr_assert(same_page(settled_page, settled_rebuilt), "the settled reader's rebuilt page differs from the live one");
    cr_assert_null(settled_rebuilt->last_event_time, "a page that shows nothing tells a time");
    test_stack_stop(&s);
}

/* The hold ids of the user's older history (history.<user key>), from mem; NULL when none. */
static Library__Lending__Internal__UserHistory *older_holds(test_stack *s, const char *user) {
    nats_connection_options options = harness_nats_options(s->nats.url, "retention-test");
    nats_connection *connection = NULL;
    status st;
    cr_assert_eq(nats_connection_open(&options, &connection, &st), STATUS_OK, "%s", st.message);
    kv_bucket *loans = NULL;
    cr_assert_eq(kv_bucket_open(connection, "loans", 1, &loans, &st), STATUS_OK, "%s", st.message);
    char *key = text_base64url_encode(mem, (const uint8_t *)user, strlen(user));
    kv_value value;
    status_code code = kv_get(loans, arena_sprintf(mem, "history.%s", key), mem, &value, &st);
    kv_bucket_close(loans);
    nats_connection_close(connection);
    if (code == STATUS_NOT_FOUND)
        return NULL;
    cr_assert_eq(code, STATUS_OK, "%s", st.message);
    ProtobufCAllocator allocator = arena_protobuf_allocator(mem);
    return library__lending__internal__user_history__unpack(&allocator, value.size, (const uint8_t *)value.data);
}

static bool names(char **ids, size_t count, const char *id) {
    for (size_t i = 0; i < count; i++)
        if (strcmp(ids[i], id) == 0)
            return true;
    return false;
}

/* A hold whose id moved to the user's older history leaves that too when it is forgotten. */
Test(retention, a_forgotten_hold_leaves_the_older_hold_history_too) {
    enum { HOLDS = 70 }; /* past the record's window of 64: the oldest move */
    const char *env[] = {"RETENTION=10s", "RECONCILE_INTERVAL=200ms", "RECONCILE_AFTER=1s", NULL};
    test_stack s;
    test_stack_start(&s, "retention-holds", env, false, NULL);
    char suffix[13];
    text_random_hex(suffix, 6);
    const char *user = arena_sprintf(mem, "holder-%s", suffix);
    const char *bearer = harness_bearer(mem, s.dir, user, false);
    Library__Lending__V1__PlaceHoldRequest place = LIBRARY__LENDING__V1__PLACE_HOLD_REQUEST__INIT;
    place.book_id = (char *)test_stack_register(&s, "Held and Let Go", 0)->book_id;
    Library__Lending__V1__CancelHoldRequest cancel = LIBRARY__LENDING__V1__CANCEL_HOLD_REQUEST__INIT;
    const char *first = NULL;
    for (int i = 0; i < HOLDS; i++) {
        Hold *hold = hold_call(&s, "PlaceHold", &place.base, bearer);
        if (i == 0)
            first = hold->hold_id;
        cancel.hold_id = hold->hold_id;
        hold_call(&s, "CancelHold", &cancel.base, bearer);
    }
    status st;
    cr_assert_eq(get_hold(&s, bearer, first, &st), STATUS_OK, "forgotten before it could be looked at: %s",
                 st.message);
    Library__Lending__Internal__UserHistory *older = older_holds(&s, user);
    cr_assert(older != NULL && names(older->hold_ids, older->n_hold_ids, first), "the first hold did not move");

    int64_t deadline = timestamp_now_ms() + 10000 + 15000;
    status_code code;
    while ((code = get_hold(&s, bearer, first, &st)) == STATUS_OK && timestamp_now_ms() < deadline)
        harness_sleep_ms(200);
    cr_assert_eq(code, STATUS_NOT_FOUND, "the first hold outlived its retention: %s", st.message);
    older = older_holds(&s, user);
    cr_assert(older != NULL);
    cr_assert_not(names(older->hold_ids, older->n_hold_ids, first), "the older hold history still names it");
    test_stack_stop(&s);
}
