/* test_faults.c - issue 9's fault scenario. Several users borrow and return books through the
 * nginx gateway while, one at a time, lending, the catalog and mypage are killed with SIGKILL
 * and restarted on their port, nats-server and redis-server are stopped and started on the
 * same port and data, and a service is paused with SIGSTOP past the clients' deadline. After
 * the load the system must settle: no acknowledged loan lost (a borrow answered PENDING
 * included), no loan PENDING, for every book available + ACTIVE == the copies registered,
 * every mypage equal to ListLoans; and the clients must have seen only the statuses a fault
 * may cause, each within its deadline + 1 s, and, once recovered from a fault, mostly OK. The users also place, collect and
 * cancel holds: at rest every acknowledged hold is in a state its history allows, every
 * WAITING hold is in its book's queue, no copy is on the shelf while a reader waits for it,
 * available + on hold + ACTIVE == the copies registered, a book's copies on hold are its
 * READY holds, and mypage lists the open holds lending has.
 *
 * faults/each_fault_once_under_load runs every fault once (tools/test);
 * faults/random_faults_for_minutes repeats rounds of random faults for FAULTS_MINUTES
 * minutes (tools/chaos) and is skipped without it. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "library/lending/v1/lending.pb-c.h"
#include "library/mypage/v1/mypage.pb-c.h"
#include "stack_fixture.h"
#include "text.h"

typedef Library__Lending__V1__Loan Loan;
typedef Library__Lending__V1__Hold Hold;
typedef Library__Mypage__V1__Mypage Mypage;

#define LENDING "/library.lending.v1.LendingService/"
#define MYPAGE "/library.mypage.v1.MypageService/"
#define ACTIVE LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE
#define PENDING LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING
#define RETURNED LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED
#define CANCELED LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED
#define HOLD_WAITING LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_WAITING
#define HOLD_READY LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_READY
#define HOLD_CANCELED LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_CANCELED

enum {
    CALL_DEADLINE_MS = 3000, /* every client call */
    LATE_MS = 1000,          /* an answer later than deadline + this is a hang */
    WORKERS = 6,             /* users, one thread each */
    BOOKS = 4,
    COPIES = 4,              /* 16 copies for up to 30 loans: some borrows run out of stock */
    PAUSE_MS = 40,           /* between one user's calls: ~20 calls/s each, so a user stays
                                under the 1000 loans ListLoans keeps */
    HELD_MAX = 16,
    HOLDS_MAX = 5,           /* MAX_HOLDS */
    SETTLE_MS = 30000,       /* after the load: time for the system to settle */
    STATUS_CODES = 17,
    /* Calm calls: started RECOVERY_MS or more after the last fault ended and answered before
     * the next began. Once the system has recovered, CALM_FLOOR_PERCENT of them must end OK
     * or with a business refusal. A share of all calls would depend on how much of the run
     * the faults take: a chaos run of six 4.8 s pauses with 2 s of load between them answered
     * only 56% OK and was right, while a lending whose catalog circuit stays open answers
     * next to nothing once calm. */
    RECOVERY_MS = 2000,
    CALM_FLOOR_PERCENT = 90,
    CALM_CALLS_MIN = 100, /* fewer and the floor says nothing */
};

TestSuite(faults, .init = fixture_setup, .fini = fixture_teardown);

/* --- the stack: test_stack + the gateway, and how each part is restarted ------------------ */

static const char *const lending_env[] = {"RECONCILE_INTERVAL=500ms", "RECONCILE_AFTER=1s",
                                          "EVENT_ACK_WAIT=2s", NULL};
static const char *const mypage_env[] = {"EVENT_ACK_WAIT=2s", NULL};

typedef struct fault_stack {
    test_stack s;
    harness_process gateway;
} fault_stack;

/* Clients made before a restart may sit in gRPC's reconnect backoff: checks use fresh ones. */
static void reconnect_clients(test_stack *s) {
    rpc_client_destroy(s->catalog_client);
    rpc_client_destroy(s->lending_client);
    rpc_client_destroy(s->mypage_client);
    cr_assert_eq(rpc_client_create(s->catalog.address, 10000, &s->catalog_client, NULL), STATUS_OK);
    cr_assert_eq(rpc_client_create(s->lending.address, 10000, &s->lending_client, NULL), STATUS_OK);
    cr_assert_eq(rpc_client_create(s->mypage.address, 10000, &s->mypage_client, NULL), STATUS_OK);
}

static void fault_stack_start(fault_stack *f, const char *name) {
    test_stack_start(&f->s, name, lending_env, true, mypage_env);
    cr_assert(harness_gateway_start(f->s.dir, f->s.catalog.port, f->s.lending.port, f->s.mypage.port,
                                    &f->gateway),
              "the gateway did not start: %s", f->gateway.log_path);
}

static void fault_stack_stop(fault_stack *f) {
    harness_process_stop(&f->gateway, SIGTERM, 5000);
    test_stack_stop(&f->s);
}

/* "GRPC_PORT=<port>" in static storage of the caller's choice. */
static const char *port_setting(char buffer[32], int port) {
    snprintf(buffer, 32, "GRPC_PORT=%d", port);
    return buffer;
}

static void restart_lending(test_stack *s, int port) {
    char setting[32];
    const char *env[] = {lending_env[0], lending_env[1], lending_env[2], port_setting(setting, port), NULL};
    cr_assert(fixture_start_lending(s->dir, s->nats.url, s->catalog.address, env, &s->lending),
              "lending did not restart: %s", s->lending.log_path);
}

static void restart_catalog(test_stack *s, int port) {
    char setting[32], nats[160];
    snprintf(nats, sizeof nats, "NATS_URL=%s", s->nats.url);
    const char *env[] = {nats, "EVENT_ACK_WAIT=2s", port_setting(setting, port), NULL};
    cr_assert(harness_service_start("catalog", s->dir, env, &s->catalog), "the catalog did not restart: %s",
              s->catalog.log_path);
}

static void restart_mypage(test_stack *s, int port) {
    char setting[32];
    const char *env[] = {mypage_env[0], port_setting(setting, port), NULL};
    cr_assert(fixture_start_mypage(s->dir, s->nats.url, s->redis.url, env, &s->mypage),
              "mypage did not restart: %s", s->mypage.log_path);
}

typedef enum fault {
    FAULT_KILL_LENDING,
    FAULT_KILL_CATALOG,
    FAULT_KILL_MYPAGE,
    FAULT_RESTART_NATS,
    FAULT_RESTART_REDIS,
    FAULT_PAUSE_LENDING,
    FAULT_PAUSE_CATALOG,
    FAULT_PAUSE_MYPAGE,
    FAULT_PAUSE_NATS,
    FAULT_PAUSE_REDIS,
    FAULT_KINDS,
} fault;

static const char *const fault_names[FAULT_KINDS] = {
    "kill -9 lending",      "kill -9 catalog",     "kill -9 mypage",      "restart nats-server",
    "restart redis-server", "SIGSTOP lending",     "SIGSTOP catalog",     "SIGSTOP mypage",
    "SIGSTOP nats-server",  "SIGSTOP redis-server",
};

static void kill_and_restart(test_stack *s, harness_process *victim,
                             void (*restart)(test_stack *, int)) {
    int port = victim->port;
    cr_assert_eq(harness_process_stop(victim, SIGKILL, 5000), 128 + SIGKILL);
    harness_sleep_ms(300);
    restart(s, port);
}

/* The faults' clock, shared with the workers: a call started before calm_from_ms is not calm,
 * and faults_begun moves when a fault begins, so a call it overlaps is not calm either. */
static _Atomic int64_t calm_from_ms;
static atomic_long faults_begun;

/* Injects one fault and returns when the system has everything running again. downtime_ms:
 * how long nats-server or redis-server stays stopped, or a process paused beyond the clients'
 * deadline. */
static void inject(fault_stack *f, fault kind, int64_t downtime_ms) {
    test_stack *s = &f->s;
    atomic_fetch_add(&faults_begun, 1);
    atomic_store(&calm_from_ms, INT64_MAX);
    int64_t start = harness_now_ms();
    switch (kind) {
    case FAULT_KILL_LENDING: kill_and_restart(s, &s->lending, restart_lending); break;
    case FAULT_KILL_CATALOG: kill_and_restart(s, &s->catalog, restart_catalog); break;
    case FAULT_KILL_MYPAGE: kill_and_restart(s, &s->mypage, restart_mypage); break;
    case FAULT_RESTART_NATS: {
        /* SIGTERM: a clean shutdown; the JetStream file store stays in s->dir/nats */
        int port = s->nats.port;
        cr_assert_neq(harness_process_stop(&s->nats, SIGTERM, 10000), -1, "nats-server did not stop");
        harness_sleep_ms(downtime_ms);
        cr_assert(harness_nats_start(s->dir, port, &s->nats), "nats-server did not restart");
        break;
    }
    case FAULT_RESTART_REDIS: {
        int port = s->redis.port;
        cr_assert_neq(harness_process_stop(&s->redis, SIGTERM, 10000), -1, "redis-server did not stop");
        harness_sleep_ms(downtime_ms);
        cr_assert(harness_redis_start(s->dir, port, &s->redis), "redis-server did not restart");
        break;
    }
    case FAULT_PAUSE_LENDING:
    case FAULT_PAUSE_CATALOG:
    case FAULT_PAUSE_MYPAGE:
    case FAULT_PAUSE_NATS:
    case FAULT_PAUSE_REDIS: {
        harness_process *victim = kind == FAULT_PAUSE_LENDING   ? &s->lending
                                  : kind == FAULT_PAUSE_CATALOG ? &s->catalog
                                  : kind == FAULT_PAUSE_MYPAGE  ? &s->mypage
                                  : kind == FAULT_PAUSE_NATS    ? &s->nats
                                                                : &s->redis;
        cr_assert_eq(kill(victim->pid, SIGSTOP), 0);
        harness_sleep_ms(CALL_DEADLINE_MS + downtime_ms);
        cr_assert_eq(kill(victim->pid, SIGCONT), 0);
        break;
    }
    default: break;
    }
    atomic_store(&calm_from_ms, harness_now_ms() + RECOVERY_MS);
    fprintf(stderr, "faults: %s (%lld ms)\n", fault_names[kind], (long long)(harness_now_ms() - start));
}

/* --- the load: one user per thread, through the gateway ------------------------------------ */

typedef struct call_counts {
    long by_code[STATUS_CODES];
    long calls;
    long unexpected; /* a status no fault may cause */
    long late;       /* answered after its deadline + LATE_MS */
    long calm;       /* calls started RECOVERY_MS after a fault and ended before the next */
    long calm_answered; /* of those, OK or a business refusal */
    int64_t slowest_ms;
    char first_unexpected[400];
} call_counts;

/* A loan a client was told of: BorrowBook answered OK (ACTIVE, CANCELED, or PENDING when the
 * saga was slower than BORROW_WAIT, which is what a fault makes it), or ReturnBook answered
 * OK (RETURNED). */
typedef struct acknowledged {
    char *loan_id;
    int answered;
} acknowledged;

/* A hold a client was told of: PlaceHold answered OK (WAITING or READY), or CancelHold. */
typedef struct hold_ack {
    char *hold_id;
    int book;
    int answered;
} hold_ack;

typedef struct worker {
    pthread_t thread;
    const char *user, *bearer;
    const char *const *books;
    rpc_client *gateway;
    atomic_bool *stop;
    unsigned seed;
    arena *scratch; /* one call's request and response */
    call_counts counts;
    acknowledged *acks;
    size_t ack_count, ack_capacity;
    char *held[HELD_MAX]; /* ACTIVE loans to give back */
    int held_count;
    char retry_request_id[80]; /* a borrow that failed is retried with its request id */
    const char *retry_book;
    hold_ack *hold_acks;
    size_t hold_count, hold_capacity;
    char hold_request_id[80]; /* a PlaceHold that failed is retried with its request id */
    int hold_book;
} worker;

/* The refusals the load's own calls earn, fault or not. */
static bool business_refusal(status_code code, const status *st) {
    return code == STATUS_FAILED_PRECONDITION &&
           (strcmp(st->reason, "LOAN_LIMIT") == 0 || strcmp(st->reason, "ALREADY_HELD") == 0 ||
            strcmp(st->reason, "ALREADY_BORROWED") == 0 || strcmp(st->reason, "HOLD_LIMIT") == 0 ||
            strcmp(st->reason, "HOLD_NOT_OPEN") == 0);
}

/* Statuses a client may see while a fault is under way, besides the business answers. */
static bool expected_status(status_code code, const status *st) {
    return code == STATUS_OK || code == STATUS_UNAVAILABLE || code == STATUS_RESOURCE_EXHAUSTED ||
           code == STATUS_DEADLINE_EXCEEDED || business_refusal(code, st);
}

static status_code timed_call(worker *w, const char *method, const ProtobufCMessage *request,
                              const ProtobufCMessageDescriptor *response_type,
                              ProtobufCMessage **response, status *st) {
    rpc_call_options options = {.timeout_ms = CALL_DEADLINE_MS, .authorization = w->bearer};
    status_clear(st);
    long faults_before = atomic_load(&faults_begun);
    int64_t start = harness_now_ms();
    bool calm = start >= atomic_load(&calm_from_ms);
    status_code code = rpc_client_call(w->gateway, method, request, response_type, w->scratch,
                                       response, &options, st);
    int64_t took = harness_now_ms() - start;
    call_counts *c = &w->counts;
    c->calls++;
    if (calm && atomic_load(&faults_begun) == faults_before) {
        c->calm++;
        c->calm_answered += code == STATUS_OK || business_refusal(code, st);
    }
    c->by_code[(int)code >= 0 && (int)code < STATUS_CODES ? (int)code : STATUS_UNKNOWN]++;
    if (took > c->slowest_ms)
        c->slowest_ms = took;
    if (took > CALL_DEADLINE_MS + LATE_MS)
        c->late++;
    if (!expected_status(code, st) && c->unexpected++ == 0)
        snprintf(c->first_unexpected, sizeof c->first_unexpected, "%s: %s %s: %.200s", method,
                 status_code_name(code), st->reason, st->message);
    return code;
}

static bool holds(const worker *w, const char *loan_id) {
    for (int i = 0; i < w->held_count; i++)
        if (strcmp(w->held[i], loan_id) == 0)
            return true;
    return false;
}

static void hold(worker *w, const char *loan_id) {
    if (w->held_count < HELD_MAX && !holds(w, loan_id))
        w->held[w->held_count++] = strdup(loan_id);
}

static void acknowledge(worker *w, const char *loan_id, int answered) {
    for (size_t i = 0; i < w->ack_count; i++) /* a retried request answers the same loan */
        if (strcmp(w->acks[i].loan_id, loan_id) == 0) {
            if (answered == RETURNED)
                w->acks[i].answered = RETURNED;
            return;
        }
    if (w->ack_count == w->ack_capacity) {
        w->ack_capacity = w->ack_capacity ? w->ack_capacity * 2 : 64;
        w->acks = realloc(w->acks, w->ack_capacity * sizeof *w->acks);
        if (w->acks == NULL)
            abort(); /* a worker thread cannot fail the test with cr_assert */
    }
    w->acks[w->ack_count++] = (acknowledged){.loan_id = strdup(loan_id), .answered = answered};
}

/* At the loan limit: loans that were answered PENDING may be ACTIVE by now; hold them too. */
static void refresh_held(worker *w) {
    Library__Lending__V1__ListLoansRequest request = LIBRARY__LENDING__V1__LIST_LOANS_REQUEST__INIT;
    request.status = ACTIVE;
    request.page_size = 100;
    ProtobufCMessage *response = NULL;
    status st;
    if (timed_call(w, LENDING "ListLoans", &request.base,
                   &library__lending__v1__list_loans_response__descriptor, &response, &st) != STATUS_OK)
        return;
    Library__Lending__V1__ListLoansResponse *list = (void *)response;
    for (size_t i = 0; i < list->n_loans; i++)
        hold(w, list->loans[i]->loan_id);
}

static void borrow(worker *w) {
    if (w->retry_request_id[0] == '\0') {
        char id[17];
        text_random_hex(id, 8);
        snprintf(w->retry_request_id, sizeof w->retry_request_id, "%s-%s", w->user, id);
        w->retry_book = w->books[rand_r(&w->seed) % BOOKS];
    }
    Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    request.book_id = (char *)w->retry_book;
    request.request_id = w->retry_request_id;
    ProtobufCMessage *response = NULL;
    status st;
    status_code code = timed_call(w, LENDING "BorrowBook", &request.base,
                                  &library__lending__v1__loan__descriptor, &response, &st);
    if (code == STATUS_UNAVAILABLE || code == STATUS_DEADLINE_EXCEEDED ||
        code == STATUS_RESOURCE_EXHAUSTED)
        return; /* the next borrow is the same request again */
    w->retry_request_id[0] = '\0';
    if (code == STATUS_FAILED_PRECONDITION) {
        refresh_held(w);
    } else if (code == STATUS_OK) {
        const Loan *loan = (Loan *)response;
        acknowledge(w, loan->loan_id, (int)loan->status);
        if (loan->status == ACTIVE)
            hold(w, loan->loan_id);
    }
}

static void give_back(worker *w, int k) {
    Library__Lending__V1__ReturnBookRequest request = LIBRARY__LENDING__V1__RETURN_BOOK_REQUEST__INIT;
    request.loan_id = w->held[k];
    ProtobufCMessage *response = NULL;
    status st;
    status_code code = timed_call(w, LENDING "ReturnBook", &request.base,
                                  &library__lending__v1__loan__descriptor, &response, &st);
    if (code == STATUS_UNAVAILABLE || code == STATUS_DEADLINE_EXCEEDED ||
        code == STATUS_RESOURCE_EXHAUSTED)
        return; /* still held: returned again later (a second return changes nothing) */
    if (code == STATUS_OK)
        acknowledge(w, w->held[k], RETURNED);
    free(w->held[k]);
    w->held[k] = w->held[--w->held_count];
}

static void acknowledge_hold(worker *w, const char *hold_id, int book, int answered) {
    for (size_t i = 0; i < w->hold_count; i++)
        if (strcmp(w->hold_acks[i].hold_id, hold_id) == 0) {
            if (answered == HOLD_CANCELED || answered == HOLD_READY)
                w->hold_acks[i].answered = answered;
            return;
        }
    if (w->hold_count == w->hold_capacity) {
        w->hold_capacity = w->hold_capacity ? w->hold_capacity * 2 : 32;
        w->hold_acks = realloc(w->hold_acks, w->hold_capacity * sizeof *w->hold_acks);
        if (w->hold_acks == NULL)
            abort();
    }
    w->hold_acks[w->hold_count++] = (hold_ack){.hold_id = strdup(hold_id), .book = book, .answered = answered};
}

static void place_hold(worker *w) {
    if (w->hold_request_id[0] == '\0') {
        char id[17];
        text_random_hex(id, 8);
        snprintf(w->hold_request_id, sizeof w->hold_request_id, "%s-h%s", w->user, id);
        w->hold_book = (int)(rand_r(&w->seed) % BOOKS);
    }
    Library__Lending__V1__PlaceHoldRequest request = LIBRARY__LENDING__V1__PLACE_HOLD_REQUEST__INIT;
    request.book_id = (char *)w->books[w->hold_book];
    request.request_id = w->hold_request_id;
    ProtobufCMessage *response = NULL;
    status st;
    status_code code = timed_call(w, LENDING "PlaceHold", &request.base, &library__lending__v1__hold__descriptor,
                                  &response, &st);
    if (code == STATUS_UNAVAILABLE || code == STATUS_DEADLINE_EXCEEDED || code == STATUS_RESOURCE_EXHAUSTED)
        return; /* the next hold is the same request again */
    w->hold_request_id[0] = '\0';
    if (code == STATUS_OK)
        acknowledge_hold(w, ((Hold *)response)->hold_id, w->hold_book, (int)((Hold *)response)->status);
}

/* Collects a hold (BorrowBook of its book takes the set-aside copy when it is READY) or
 * withdraws it. */
static void collect_or_cancel(worker *w) {
    if (w->hold_count == 0)
        return;
    hold_ack *h = &w->hold_acks[rand_r(&w->seed) % w->hold_count];
    if (h->answered == HOLD_CANCELED)
        return;
    if (rand_r(&w->seed) % 2) {
        w->retry_request_id[0] = '\0';
        char id[17];
        text_random_hex(id, 8);
        snprintf(w->retry_request_id, sizeof w->retry_request_id, "%s-c%s", w->user, id);
        w->retry_book = w->books[h->book];
        borrow(w);
        return;
    }
    Library__Lending__V1__CancelHoldRequest request = LIBRARY__LENDING__V1__CANCEL_HOLD_REQUEST__INIT;
    request.hold_id = h->hold_id;
    ProtobufCMessage *response = NULL;
    status st;
    if (timed_call(w, LENDING "CancelHold", &request.base, &library__lending__v1__hold__descriptor, &response,
                   &st) == STATUS_OK)
        h->answered = HOLD_CANCELED;
}

static void read_page(worker *w) {
    Library__Mypage__V1__GetMypageRequest request = LIBRARY__MYPAGE__V1__GET_MYPAGE_REQUEST__INIT;
    ProtobufCMessage *response = NULL;
    status st;
    timed_call(w, MYPAGE "GetMypage", &request.base, &library__mypage__v1__mypage__descriptor,
               &response, &st);
}

/* Borrows (40%), returns (30%, and whenever four loans are held), places holds (10%),
 * collects or cancels them (10%) and reads the page (10%). */
static void *worker_main(void *arg) {
    worker *w = arg;
    while (!atomic_load(w->stop)) {
        arena_reset(w->scratch);
        unsigned dice = rand_r(&w->seed) % 10;
        if (w->held_count > 0 && (dice < 3 || w->held_count >= 4))
            give_back(w, (int)(rand_r(&w->seed) % (unsigned)w->held_count));
        else if (dice == 9)
            read_page(w);
        else if (dice == 8)
            place_hold(w);
        else if (dice == 7)
            collect_or_cancel(w);
        else
            borrow(w);
        harness_sleep_ms(PAUSE_MS);
    }
    return NULL;
}

static void worker_free(worker *w) {
    for (size_t i = 0; i < w->ack_count; i++)
        free(w->acks[i].loan_id);
    free(w->acks);
    for (size_t i = 0; i < w->hold_count; i++)
        free(w->hold_acks[i].hold_id);
    free(w->hold_acks);
    for (int i = 0; i < w->held_count; i++)
        free(w->held[i]);
    arena_destroy(w->scratch);
    rpc_client_destroy(w->gateway);
}

/* --- after the load: settle and check ------------------------------------------------------ */

typedef struct totals {
    call_counts calls;
    long loans_checked, answered_active, answered_canceled, answered_pending, violations;
    int rounds, faults;
} totals;

typedef struct findings {
    long loans_checked, violations;
    char first[4][300];
} findings;

static void found(findings *f, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void found(findings *f, const char *format, ...) {
    if (f->violations < 4) {
        va_list args;
        va_start(args, format);
        vsnprintf(f->first[f->violations], sizeof f->first[0], format, args);
        va_end(args);
    }
    f->violations++;
}

/* Every loan of the user (admin ListLoans, all pages); false when lending did not answer. */

static const char *loan_status_name(int value) {
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&library__lending__v1__loan_status__descriptor, value);
    return v ? v->name : "missing";
}

/* Whether a loan at rest is what its client was told: RETURNED and CANCELED are final; an
 * ACTIVE loan may have been given back since; a PENDING one must have settled either way
 * (and may have been returned after refresh_held took it up). */
static bool outcome_kept(int answered, const Loan *now) {
    if (now == NULL)
        return false;
    switch (answered) {
    case ACTIVE: return now->status == ACTIVE || now->status == RETURNED;
    case PENDING: return now->status == ACTIVE || now->status == CANCELED || now->status == RETURNED;
    default: return (int)now->status == answered;
    }
}

static const Loan *find_loan(Loan **loans, size_t count, const char *loan_id) {
    for (size_t i = 0; i < count; i++)
        if (strcmp(loans[i]->loan_id, loan_id) == 0)
            return loans[i];
    return NULL;
}

/* The user's mypage against lending's loans. */
static void compare_page(test_stack *s, arena *a, const char *bearer, const char *user, Loan **loans,
                         size_t count, findings *f) {
    Library__Mypage__V1__GetMypageRequest request = LIBRARY__MYPAGE__V1__GET_MYPAGE_REQUEST__INIT;
    request.user_id = (char *)user;
    ProtobufCMessage *response = NULL;
    status st;
    if (harness_call(s->mypage_client, MYPAGE "GetMypage", &request.base,
                     &library__mypage__v1__mypage__descriptor, a, bearer, &response, &st) != STATUS_OK) {
        found(f, "GetMypage(%s): %s %s", user, status_code_name(st.code), st.message);
        return;
    }
    Mypage *page = (Mypage *)response;
    int active = 0;
    for (size_t i = 0; i < count; i++)
        active += loans[i]->status == ACTIVE;
    if (page->n_loans != count || page->borrowed_count != active) {
        found(f, "%s: mypage has %zu loans (%d borrowed), lending %zu (%d ACTIVE)", user,
              page->n_loans, page->borrowed_count, count, active);
        return;
    }
    for (size_t j = 0; j < page->n_loans; j++) {
        const Loan *truth = find_loan(loans, count, page->loans[j]->loan_id);
        if (truth == NULL || (int)truth->status != (int)page->loans[j]->status ||
            strcmp(truth->book_id, page->loans[j]->book_id) != 0) {
            found(f, "%s: loan %s on mypage (status %d) differs from lending (%d)", user,
                  page->loans[j]->loan_id, page->loans[j]->status, truth ? (int)truth->status : -1);
            return;
        }
    }
}

/* Every hold of the user (admin ListHolds, all pages); false when lending did not answer. */
static bool list_holds(test_stack *s, arena *a, const char *admin, const char *user, Hold ***out, size_t *count) {
    Hold **all = NULL;
    size_t n = 0;
    char *token = "";
    do {
        Library__Lending__V1__ListHoldsRequest request = LIBRARY__LENDING__V1__LIST_HOLDS_REQUEST__INIT;
        request.user_id = (char *)user;
        request.page_size = 100;
        request.page_token = token;
        ProtobufCMessage *response = NULL;
        status st;
        if (harness_call(s->lending_client, LENDING "ListHolds", &request.base,
                         &library__lending__v1__list_holds_response__descriptor, a, admin, &response, &st) != STATUS_OK)
            return false;
        Library__Lending__V1__ListHoldsResponse *page = (void *)response;
        Hold **grown = arena_alloc(a, (n + page->n_holds + 1) * sizeof *grown);
        if (n)
            memcpy(grown, all, n * sizeof *grown);
        memcpy(grown + n, page->holds, page->n_holds * sizeof *grown);
        all = grown;
        n += page->n_holds;
        token = page->next_page_token;
    } while (token && token[0]);
    *out = all;
    *count = n;
    return true;
}

static const char *hold_status_name(int value) {
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&library__lending__v1__hold_status__descriptor, value);
    return v ? v->name : "missing";
}

/* Whether a hold at rest is what its client was told: CANCELED is final; READY can only have
 * moved on (FULFILLED, CANCELED, EXPIRED), never back to WAITING. */
static bool hold_kept(int answered, const Hold *now) {
    if (now == NULL)
        return false;
    if (answered == HOLD_CANCELED)
        return now->status == HOLD_CANCELED;
    if (answered == HOLD_READY)
        return now->status != HOLD_WAITING;
    return true;
}

/* Checks every invariant once; f->violations == 0 means the system is settled and right. */
static void check_round(test_stack *s, arena *a, const char *admin, worker *workers,
                        const char *const *books, findings *f) {
    memset(f, 0, sizeof *f);
    int active_by_book[BOOKS] = {0}, ready_by_book[BOOKS] = {0}, waiting_by_book[BOOKS] = {0};
    for (int u = 0; u < WORKERS; u++) {
        worker *w = &workers[u];
        Hold **holds_now = NULL;
        size_t hold_count = 0;
        if (!list_holds(s, a, admin, w->user, &holds_now, &hold_count)) {
            found(f, "ListHolds(%s) failed", w->user);
            continue;
        }
        size_t open_holds = 0;
        for (size_t i = 0; i < hold_count; i++) {
            const Hold *h = holds_now[i];
            open_holds += h->status == HOLD_WAITING || h->status == HOLD_READY;
            if (h->status == HOLD_WAITING && h->position == 0)
                found(f, "%s: hold %s is WAITING but in no queue", w->user, h->hold_id);
            for (int b = 0; b < BOOKS; b++) {
                if (strcmp(h->book_id, books[b]) != 0)
                    continue;
                ready_by_book[b] += h->status == HOLD_READY;
                waiting_by_book[b] += h->status == HOLD_WAITING;
            }
        }
        for (size_t k = 0; k < w->hold_count; k++) {
            const hold_ack *ack = &w->hold_acks[k];
            const Hold *now = NULL;
            for (size_t i = 0; i < hold_count && now == NULL; i++)
                if (strcmp(holds_now[i]->hold_id, ack->hold_id) == 0)
                    now = holds_now[i];
            if (!hold_kept(ack->answered, now))
                found(f, "%s: hold %s was answered %s but is %s now", w->user, ack->hold_id,
                      hold_status_name(ack->answered), now ? hold_status_name((int)now->status) : "missing");
        }
        Library__Mypage__V1__GetMypageRequest page_request = LIBRARY__MYPAGE__V1__GET_MYPAGE_REQUEST__INIT;
        page_request.user_id = (char *)w->user;
        ProtobufCMessage *page = NULL;
        status page_st;
        if (harness_call(s->mypage_client, MYPAGE "GetMypage", &page_request.base,
                         &library__mypage__v1__mypage__descriptor, a, admin, &page, &page_st) == STATUS_OK &&
            ((Mypage *)page)->n_holds != open_holds)
            found(f, "%s: mypage lists %zu holds, lending %zu open", w->user, ((Mypage *)page)->n_holds, open_holds);
        Loan **loans = NULL;
        size_t count = 0;
        if (!fixture_list_loans(s->lending_client, a, admin, w->user, &loans, &count)) {
            found(f, "ListLoans(%s) failed", w->user);
            continue;
        }
        f->loans_checked += (long)count;
        for (size_t i = 0; i < count; i++) {
            if (loans[i]->status == PENDING)
                found(f, "%s: loan %s is still PENDING", w->user, loans[i]->loan_id);
            for (int b = 0; b < BOOKS; b++)
                active_by_book[b] += loans[i]->status == ACTIVE && strcmp(loans[i]->book_id, books[b]) == 0;
        }
        for (size_t k = 0; k < w->ack_count; k++) {
            const acknowledged *ack = &w->acks[k];
            const Loan *loan = find_loan(loans, count, ack->loan_id);
            if (!outcome_kept(ack->answered, loan))
                found(f, "%s: loan %s was answered %s but is %s now", w->user, ack->loan_id,
                      loan_status_name(ack->answered), loan ? loan_status_name((int)loan->status) : "missing");
        }
        compare_page(s, a, admin, w->user, loans, count, f);
    }
    for (int b = 0; b < BOOKS; b++) {
        Library__Catalog__V1__GetBookRequest request = LIBRARY__CATALOG__V1__GET_BOOK_REQUEST__INIT;
        request.book_id = (char *)books[b];
        ProtobufCMessage *response = NULL;
        status st;
        if (harness_call(s->catalog_client, CATALOG "GetBook", &request.base,
                         &library__catalog__v1__book__descriptor, a, admin, &response, &st) != STATUS_OK) {
            found(f, "GetBook(%s): %s %s", books[b], status_code_name(st.code), st.message);
            continue;
        }
        /* against the copies registered: total_copies is the catalog's own word, which a
         * copy lost or made twice would change along with available_copies */
        Book *book = (Book *)response;
        if (book->total_copies != COPIES ||
            book->available_copies + book->on_hold_copies + active_by_book[b] != COPIES)
            found(f, "book %s: available %d + on hold %d + ACTIVE %d != %d copies registered (total_copies %d)",
                  books[b], book->available_copies, book->on_hold_copies, active_by_book[b], COPIES,
                  book->total_copies);
        if (book->on_hold_copies != ready_by_book[b])
            found(f, "book %s: %d copies on hold for %d READY holds", books[b], book->on_hold_copies, ready_by_book[b]);
        if (book->available_copies > 0 && waiting_by_book[b] > 0)
            found(f, "book %s: %d copies on the shelf while %d holds wait", books[b], book->available_copies,
                  waiting_by_book[b]);
    }
}

static void add_counts(call_counts *sum, const call_counts *c) {
    for (int i = 0; i < STATUS_CODES; i++)
        sum->by_code[i] += c->by_code[i];
    sum->calls += c->calls;
    sum->late += c->late;
    sum->calm += c->calm;
    sum->calm_answered += c->calm_answered;
    if (c->unexpected > 0 && sum->unexpected == 0)
        memcpy(sum->first_unexpected, c->first_unexpected, sizeof sum->first_unexpected);
    sum->unexpected += c->unexpected;
    if (c->slowest_ms > sum->slowest_ms)
        sum->slowest_ms = c->slowest_ms;
}

/* One round: fresh users and books, the load, the faults one after another with load_ms of
 * load after each (and downtime_ms for each stop or pause), then the load stops and the
 * system must settle. */
static void run_round(fault_stack *f, const fault *faults, int fault_count, int64_t load_ms,
                      int64_t downtime_ms, totals *t) {
    test_stack *s = &f->s;
    char round_id[13];
    text_random_hex(round_id, 6);
    const char *books[BOOKS];
    for (int b = 0; b < BOOKS; b++)
        books[b] = test_stack_register(s, arena_sprintf(mem, "Fault %s %d", round_id, b), COPIES)->book_id;

    atomic_store(&calm_from_ms, 0); /* the load is calm until the first fault */
    atomic_bool stop = false;
    worker workers[WORKERS];
    memset(workers, 0, sizeof workers);
    for (int u = 0; u < WORKERS; u++) {
        worker *w = &workers[u];
        w->user = arena_sprintf(mem, "fault-%s-%d", round_id, u);
        w->bearer = harness_bearer(mem, s->dir, w->user, false);
        w->books = books;
        w->stop = &stop;
        w->seed = (unsigned)(harness_now_ms() * 31 + u);
        w->scratch = arena_create(0);
        cr_assert_eq(rpc_client_create(f->gateway.address, CALL_DEADLINE_MS, &w->gateway, NULL), STATUS_OK);
        cr_assert_eq(pthread_create(&w->thread, NULL, worker_main, w), 0);
    }
    harness_sleep_ms(1000); /* the load is steady before the first fault */
    for (int i = 0; i < fault_count; i++) {
        inject(f, faults[i], downtime_ms);
        harness_sleep_ms(load_ms);
    }
    atomic_store(&stop, true);
    call_counts round_calls = {0};
    for (int u = 0; u < WORKERS; u++) {
        pthread_join(workers[u].thread, NULL);
        add_counts(&round_calls, &workers[u].counts);
    }

    reconnect_clients(s);
    int64_t settle_start = harness_now_ms();
    findings result;
    arena *a = arena_create(0);
    const char *admin = harness_bearer(mem, s->dir, "admin", true);
    for (;;) {
        arena_reset(a);
        check_round(s, a, admin, workers, books, &result);
        if (result.violations == 0 || harness_now_ms() - settle_start > SETTLE_MS)
            break;
        harness_sleep_ms(500);
    }
    arena_destroy(a);
    long active = 0, canceled = 0, pending = 0, holds_placed = 0, holds_ready = 0, holds_canceled = 0;
    for (int u = 0; u < WORKERS; u++)
        for (size_t k = 0; k < workers[u].hold_count; k++) {
            holds_placed++;
            holds_ready += workers[u].hold_acks[k].answered == HOLD_READY;
            holds_canceled += workers[u].hold_acks[k].answered == HOLD_CANCELED;
        }
    for (int u = 0; u < WORKERS; u++)
        for (size_t k = 0; k < workers[u].ack_count; k++) {
            int answered = workers[u].acks[k].answered;
            active += answered == ACTIVE || answered == RETURNED;
            canceled += answered == CANCELED;
            pending += answered == PENDING;
        }
    fprintf(stderr,
            "faults: round %d: %ld calls, settled in %lld ms, %ld loans checked (%ld answered ACTIVE or "
            "RETURNED, %ld CANCELED, %ld PENDING), %ld holds acknowledged (%ld last answered READY, %ld "
            "CANCELED), %ld violations\n",
            t->rounds + 1, round_calls.calls, (long long)(harness_now_ms() - settle_start),
            result.loans_checked, active, canceled, pending, holds_placed, holds_ready, holds_canceled,
            result.violations);
    for (long i = 0; i < result.violations && i < 4; i++) {
        cr_log_warn("violation: %s", result.first[i]);
        fprintf(stderr, "faults: violation: %s\n", result.first[i]);
    }
    add_counts(&t->calls, &round_calls);
    t->loans_checked += result.loans_checked;
    t->answered_active += active;
    t->answered_canceled += canceled;
    t->answered_pending += pending;
    t->violations += result.violations;
    t->rounds++;
    t->faults += fault_count;
    for (int u = 0; u < WORKERS; u++)
        worker_free(&workers[u]);
}

/* The counts, in the log and as one plain line on stderr; then the assertions. */
static void report(const char *name, const totals *t) {
    char by_code[600] = "";
    size_t used = 0;
    for (int i = 0; i < STATUS_CODES; i++)
        if (t->calls.by_code[i] > 0 && used < sizeof by_code)
            used += (size_t)snprintf(by_code + used, sizeof by_code - used, "%s%s %ld",
                                     used ? ", " : "", status_code_name((status_code)i), t->calls.by_code[i]);
    char line[1200];
    snprintf(line, sizeof line,
             "%s: %d rounds, %d faults, %ld calls (%s), %ld of %ld calm calls answered, slowest %lld ms, "
             "%ld late, %ld unexpected; "
             "%ld loans checked (%ld answered ACTIVE or RETURNED, %ld CANCELED, %ld PENDING), "
             "%ld invariant violations",
             name, t->rounds, t->faults, t->calls.calls, by_code, t->calls.calm_answered, t->calls.calm,
             (long long)t->calls.slowest_ms,
             t->calls.late, t->calls.unexpected, t->loans_checked, t->answered_active, t->answered_canceled,
             t->answered_pending, t->violations);
    cr_log_info("%s", line);
    fprintf(stderr, "faults: %s\n", line);
    cr_expect_eq(t->calls.unexpected, 0, "%ld calls got a status no fault may cause; first: %s",
                 t->calls.unexpected, t->calls.first_unexpected);
    cr_expect_eq(t->calls.late, 0, "%ld calls answered later than %d ms (slowest %lld ms)", t->calls.late,
                 CALL_DEADLINE_MS + LATE_MS, (long long)t->calls.slowest_ms);
    cr_expect_eq(t->violations, 0, "%ld invariant violations after the system settled", t->violations);
    long calm = t->calls.calm, answered = t->calls.calm_answered;
    cr_expect(calm >= CALM_CALLS_MIN && answered * 100 >= CALM_FLOOR_PERCENT * calm,
              "%ld of %ld calls made %d ms or more after a fault (%ld%%) were answered OK or refused "
              "for a business reason; the floor is %d%% of at least %d",
              answered, calm, RECOVERY_MS, calm ? answered * 100 / calm : 0, CALM_FLOOR_PERCENT, CALM_CALLS_MIN);
}

/* --- the scenarios -------------------------------------------------------------------------- */

Test(faults, each_fault_once_under_load, .timeout = 300) {
    fault_stack f;
    fault_stack_start(&f, "faults");
    const fault faults[] = {FAULT_KILL_LENDING, FAULT_KILL_CATALOG,  FAULT_KILL_MYPAGE,
                            FAULT_RESTART_NATS, FAULT_RESTART_REDIS, FAULT_PAUSE_LENDING};
    totals t = {0};
    run_round(&f, faults, sizeof faults / sizeof faults[0], 3000, 1000, &t);
    report("bounded", &t);
    fault_stack_stop(&f);
}

/* tools/chaos: FAULTS_MINUTES=N runs rounds of six random faults until N minutes have gone;
 * FAULTS_SEED=S repeats the faults of the run that printed seed S. */
Test(faults, random_faults_for_minutes, .timeout = 0) {
    const char *minutes_setting = getenv("FAULTS_MINUTES");
    if (minutes_setting == NULL || atof(minutes_setting) <= 0)
        cr_skip_test("set FAULTS_MINUTES (tools/chaos) to run random faults");
    int64_t until = harness_now_ms() + (int64_t)(atof(minutes_setting) * 60000);
    fault_stack f;
    fault_stack_start(&f, "chaos");
    const char *seed_setting = getenv("FAULTS_SEED"); /* to replay a run's choice of faults */
    unsigned seed = seed_setting && seed_setting[0] ? (unsigned)strtoul(seed_setting, NULL, 10) : (unsigned)harness_now_ms();
    fprintf(stderr, "faults: chaos for %s minutes, seed %u\n", minutes_setting, seed);
    totals t = {0};
    while (t.rounds == 0 || harness_now_ms() < until) {
        fault faults[6];
        for (int i = 0; i < 6; i++)
            faults[i] = (fault)(rand_r(&seed) % FAULT_KINDS);
        int64_t load_ms = RECOVERY_MS + 1000 + rand_r(&seed) % 3000; /* each fault leaves calm calls */
        int64_t downtime_ms = 300 + rand_r(&seed) % 2700;
        run_round(&f, faults, 6, load_ms, downtime_ms, &t);
    }
    report("chaos", &t);
    fault_stack_stop(&f);
}
