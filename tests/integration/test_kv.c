/* test_kv.c - libshared's key-value helpers against a real nats-server, with two handles on
 * one bucket as two replicas of a service would have: kv_mutate tries its compare-and-set on
 * the value it remembers first, and must never lose an update nor believe a stale value. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kv.h"
#include "kv_record.h"
#include "kv_view.h"
#include "library/catalog/v1/catalog.pb-c.h"

static char dir[512];
static harness_process nats;
static nats_connection *connections[2];
static kv_bucket *buckets[2]; /* two handles on the same bucket: two "replicas" */

static void setup(void) {
    cr_assert(harness_temp_dir(dir, sizeof dir) != NULL);
    cr_assert(harness_nats_start(dir, 0, &nats), "nats-server did not start");
    for (int i = 0; i < 2; i++) {
        nats_connection_options options = harness_nats_options(nats.url, "test_kv");
        status st;
        cr_assert_eq(nats_connection_open(&options, &connections[i], &st), STATUS_OK, "%s", st.message);
        cr_assert_eq(kv_bucket_open(connections[i], "kv_test", 1, &buckets[i], &st), STATUS_OK, "%s",
                     st.message);
    }
}

static void teardown(void) {
    for (int i = 0; i < 2; i++) {
        kv_bucket_close(buckets[i]);
        nats_connection_close(connections[i]);
    }
    harness_process_stop(&nats, SIGTERM, 5000);
}

TestSuite(kv, .init = setup, .fini = teardown, .timeout = 60);

/* --- mutations ------------------------------------------------------------------------- */

/* The value is a decimal counter; adds 1 (a missing key counts as 0). */
static status_code increment(void *arg, arena *a, const kv_value *current, uint8_t **next,
                             size_t *next_size, status *st) {
    (void)arg;
    (void)st;
    long n = 0;
    if (current != NULL) {
        char text[32] = {0};
        memcpy(text, current->data, current->size < 31 ? current->size : 31);
        n = strtol(text, NULL, 10);
    }
    *next = (uint8_t *)arena_sprintf(a, "%ld", n + 1);
    *next_size = strlen((char *)*next);
    return STATUS_OK;
}

typedef struct rule {
    const char *refuse_on;  /* refuse (FAILED_PRECONDITION) when the value is this */
    const char *keep_on;    /* write nothing when the value is this */
    const char *write;      /* otherwise write this */
} rule;

static bool value_is(const kv_value *v, const char *text) {
    return v != NULL && text != NULL && v->size == strlen(text) && memcmp(v->data, text, v->size) == 0;
}

static status_code by_rule(void *arg, arena *a, const kv_value *current, uint8_t **next,
                           size_t *next_size, status *st) {
    const rule *r = arg;
    if (value_is(current, r->refuse_on))
        return status_set(st, STATUS_FAILED_PRECONDITION, "FULL", "refused on %s", r->refuse_on);
    if (value_is(current, r->keep_on))
        return STATUS_OK;
    *next = (uint8_t *)arena_sprintf(a, "%s", r->write);
    *next_size = strlen(r->write);
    return STATUS_OK;
}

static void put(kv_bucket *bucket, const char *key, const char *text) {
    arena *a = arena_create(0);
    rule r = {.write = text};
    status st;
    cr_assert_eq(kv_mutate(bucket, key, a, by_rule, &r, 10, NULL, &st), STATUS_OK, "%s", st.message);
    arena_destroy(a);
}

static char *get(kv_bucket *bucket, const char *key, arena *a) {
    kv_value v;
    status st;
    cr_assert_eq(kv_get(bucket, key, a, &v, &st), STATUS_OK, "%s", st.message);
    return arena_sprintf(a, "%.*s", (int)v.size, (const char *)v.data);
}

/* --- tests ------------------------------------------------------------------------------- */

typedef struct incrementer {
    kv_bucket *bucket;
    int times, failed;
} incrementer;

static void *increment_many(void *arg) {
    incrementer *job = arg;
    arena *a = arena_create(0);
    for (int i = 0; i < job->times; i++) {
        status st;
        if (kv_mutate(job->bucket, "counter", a, increment, NULL, 1000, NULL, &st) != STATUS_OK)
            job->failed++;
    }
    arena_destroy(a);
    return NULL;
}

typedef struct creator {
    pthread_t thread;
    kv_bucket *bucket;
    const char *key;
    status_code code;
    char message[STATUS_MESSAGE_MAX];
} creator;

static void *create_main(void *arg) {
    creator *c = arg;
    status st;
    status_clear(&st);
    c->code = kv_create(c->bucket, c->key, "x", 1, NULL, &st);
    snprintf(c->message, sizeof c->message, "%s", st.message);
    return NULL;
}

/* Creates racing on one key: exactly one wins, every other one hears ALREADY_EXISTS (or
 * ABORTED, "try again"), never INTERNAL, which a caller would take for a bug. */
Test(kv, racing_creates_of_one_key_give_one_winner_and_already_exists) {
    enum { KEYS = 30, RACERS = 6 };
    int winners = 0, exists = 0, aborted = 0;
    for (int k = 0; k < KEYS; k++) {
        char key[64];
        snprintf(key, sizeof key, "race.%d.%lld", k, (long long)harness_now_ms());
        creator racers[RACERS];
        for (int i = 0; i < RACERS; i++) {
            racers[i] = (creator){.bucket = buckets[i % 2], .key = key};
            pthread_create(&racers[i].thread, NULL, create_main, &racers[i]);
        }
        int won = 0;
        for (int i = 0; i < RACERS; i++) {
            pthread_join(racers[i].thread, NULL);
            won += racers[i].code == STATUS_OK;
            exists += racers[i].code == STATUS_ALREADY_EXISTS;
            aborted += racers[i].code == STATUS_ABORTED;
            cr_assert(racers[i].code == STATUS_OK || racers[i].code == STATUS_ALREADY_EXISTS ||
                          racers[i].code == STATUS_ABORTED,
                      "a losing create got %s: %s", status_code_name(racers[i].code), racers[i].message);
        }
        cr_assert_eq(won, 1, "%d creates of %s succeeded", won, key);
        winners += won;
    }
    cr_log_info("%d keys, %d racers each: %d won, %d ALREADY_EXISTS, %d ABORTED", KEYS, RACERS, winners, exists,
                aborted);
}

Test(kv, two_replicas_incrementing_one_key_lose_no_update) {
    enum { THREADS = 4, TIMES = 150 };
    incrementer jobs[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (incrementer){.bucket = buckets[i % 2], .times = TIMES};
        pthread_create(&threads[i], NULL, increment_many, &jobs[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        cr_assert_eq(jobs[i].failed, 0, "thread %d: %d increments failed", i, jobs[i].failed);
    }
    arena *a = arena_create(0);
    for (int i = 0; i < 2; i++)
        cr_assert_str_eq(get(buckets[i], "counter", a), "600", "replica %d reads the total", i);
    arena_destroy(a);
}

Test(kv, a_refusal_on_a_remembered_value_is_checked_on_a_fresh_one) {
    put(buckets[0], "shelf", "full"); /* replica 0 remembers "full" */
    put(buckets[1], "shelf", "room"); /* replica 1 changes it behind its back */
    arena *a = arena_create(0);
    rule r = {.refuse_on = "full", .write = "taken"};
    status st;
    cr_assert_eq(kv_mutate(buckets[0], "shelf", a, by_rule, &r, 10, NULL, &st), STATUS_OK,
                 "refused on a stale value: %s", st.message);
    cr_assert_str_eq(get(buckets[1], "shelf", a), "taken");
    arena_destroy(a);
}

Test(kv, nothing_to_write_on_a_remembered_value_is_checked_on_a_fresh_one) {
    put(buckets[0], "state", "done");
    put(buckets[1], "state", "undone");
    arena *a = arena_create(0);
    rule r = {.keep_on = "done", .write = "done"};
    uint64_t revision = 0;
    status st;
    cr_assert_eq(kv_mutate(buckets[0], "state", a, by_rule, &r, 10, &revision, &st), STATUS_OK, "%s",
                 st.message);
    cr_assert_str_eq(get(buckets[1], "state", a), "done", "the stale \"done\" was believed");
    kv_value v;
    cr_assert_eq(kv_get(buckets[1], "state", a, &v, &st), STATUS_OK);
    cr_assert_eq(revision, v.revision, "the revision written is reported");
    arena_destroy(a);
}

Test(kv, a_refusal_on_the_current_value_stands) {
    put(buckets[0], "quota", "full");
    arena *a = arena_create(0);
    rule r = {.refuse_on = "full", .write = "over"};
    status st;
    cr_assert_eq(kv_mutate(buckets[0], "quota", a, by_rule, &r, 10, NULL, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "FULL", "the mutation's own status reaches the caller");
    cr_assert_str_eq(get(buckets[1], "quota", a), "full");
    arena_destroy(a);
}

Test(kv, large_values_are_updated_by_both_replicas) {
    arena *a = arena_create(0);
    size_t size = 20000; /* a user or book record's size: remembered */
    char *big = arena_alloc(a, size + 1);
    for (int round = 0; round < 4; round++) {
        memset(big, 'a' + round, size);
        big[size] = '\0';
        put(buckets[round % 2], "big", big);
        char *read = get(buckets[(round + 1) % 2], "big", a);
        cr_assert_eq(strlen(read), size);
        cr_assert_eq(read[0], 'a' + round, "round %d read %c", round, read[0]);
    }
    arena_destroy(a);
}

/* More large values than the remembered ones may hold in all (8 MiB), and one too large to be
 * remembered at all: each is written by one replica, changed by the other, and changed again
 * by the first from what it remembers (stale by then, or pushed out): no change is lost. */
Test(kv, values_past_what_is_remembered_lose_no_change) {
    arena *a = arena_create(0);
    enum { KEYS = 240, SIZE = 40000, HUGE = 70000 };
    char *value = arena_alloc(a, HUGE + 1);
    char key[32];
    for (int step = 0; step < 3; step++) {
        for (int i = 0; i < KEYS; i++) {
            size_t size = i == 0 ? HUGE : SIZE;
            memset(value, 'a' + step, size);
            value[size] = '\0';
            snprintf(key, sizeof key, "large.%d", i);
            put(buckets[step % 2], key, value);
        }
    }
    for (int i = 0; i < KEYS; i++) {
        snprintf(key, sizeof key, "large.%d", i);
        char *read = get(buckets[1], key, a);
        cr_assert_eq(strlen(read), i == 0 ? (size_t)HUGE : (size_t)SIZE, "%s", key);
        cr_assert_eq(read[0], 'c', "%s holds %c, not the last write", key, read[0]);
    }
    arena_destroy(a);
}

/* --- following the bucket ----------------------------------------------------------------- */

/* The next event other than IDLE (IDLE itself after 5 s); *key gets an entry's key. */
static kv_follow_event next_event(kv_follow *follow, char *key, size_t size) {
    for (int i = 0; i < 50; i++) {
        kv_change change;
        kv_follow_event event = kv_follow_next(follow, 100, &change);
        if (event == KV_FOLLOW_IDLE)
            continue;
        if (event == KV_FOLLOW_ENTRY)
            snprintf(key, size, "%s", change.key);
        return event;
    }
    return KV_FOLLOW_IDLE;
}

static void *stop_later(void *arg) {
    harness_sleep_ms(300);
    kv_follow_stop(arg);
    return NULL;
}

Test(kv, a_follow_delivers_every_key_then_changes_and_starts_over_when_asked) {
    put(buckets[0], "f.a", "v");
    put(buckets[0], "f.b", "v");
    kv_follow *follow = kv_follow_start(buckets[1], 0);
    cr_assert_not_null(follow);
    char key[64];
    cr_assert_eq(next_event(follow, key, sizeof key), KV_FOLLOW_RESTART);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(next_event(follow, key, sizeof key), KV_FOLLOW_ENTRY);
    cr_assert_eq(next_event(follow, key, sizeof key), KV_FOLLOW_CAUGHT_UP);

    put(buckets[0], "f.c", "v"); /* another replica's write */
    cr_assert_eq(next_event(follow, key, sizeof key), KV_FOLLOW_ENTRY);
    cr_assert_str_eq(key, "f.c");

    kv_follow_restart(follow); /* e.g. the caller's view ran out of memory */
    cr_assert_eq(next_event(follow, key, sizeof key), KV_FOLLOW_RESTART);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(next_event(follow, key, sizeof key), KV_FOLLOW_ENTRY, "every key comes again");
    cr_assert_eq(next_event(follow, key, sizeof key), KV_FOLLOW_CAUGHT_UP);

    /* a stop from another thread ends a wait at once, and every later call */
    pthread_t stopper;
    pthread_create(&stopper, NULL, stop_later, follow);
    kv_change entry;
    int64_t start = harness_now_ms();
    cr_assert_eq(kv_follow_next(follow, 5000, &entry), KV_FOLLOW_STOPPED);
    cr_assert_lt(harness_now_ms() - start, harness_latency_bound_ms(2000), "the wait was not ended by the stop");
    pthread_join(stopper, NULL);
    cr_assert_eq(kv_follow_next(follow, 100, &entry), KV_FOLLOW_STOPPED);
    kv_follow_close(follow);
}

Test(kv, a_follow_starts_over_after_nats_comes_back) {
    kv_follow *follow = kv_follow_start(buckets[1], 0);
    char key[64];
    cr_assert_eq(next_event(follow, key, sizeof key), KV_FOLLOW_RESTART);
    cr_assert_eq(next_event(follow, key, sizeof key), KV_FOLLOW_CAUGHT_UP, "an empty bucket");
    int port = nats.port;
    cr_assert_neq(harness_process_stop(&nats, SIGTERM, 5000), -1);
    cr_assert(harness_nats_start(dir, port, &nats), "nats-server did not restart");
    kv_follow_event event = KV_FOLLOW_IDLE;
    for (int64_t until = harness_now_ms() + 10000; event != KV_FOLLOW_RESTART && harness_now_ms() < until;)
        event = next_event(follow, key, sizeof key);
    cr_assert_eq(event, KV_FOLLOW_RESTART, "no fresh watch after the reconnect");
    put(buckets[0], "f.after", "v");
    cr_assert_eq(next_event(follow, key, sizeof key), KV_FOLLOW_CAUGHT_UP);
    cr_assert_eq(next_event(follow, key, sizeof key), KV_FOLLOW_ENTRY);
    cr_assert_str_eq(key, "f.after");
    kv_follow_close(follow);
}

/* A follow's own reader on a thread of its own, as the loan store's watch thread is: counts
 * the entries it was handed, until stopped. */
typedef struct trunk_reader {
    kv_follow *follow;
    atomic_int entries;
    pthread_t thread;
} trunk_reader;

static void *read_trunk(void *arg) {
    trunk_reader *reader = arg;
    for (;;) {
        kv_change change;
        kv_follow_event event = kv_follow_next(reader->follow, 100, &change);
        if (event == KV_FOLLOW_STOPPED)
            return NULL;
        if (event == KV_FOLLOW_ENTRY)
            atomic_fetch_add(&reader->entries, 1);
    }
}

/* The branch's next event other than IDLE (IDLE after 5 s); an entry's key and value (as text)
 * go to key and value. */
static kv_follow_event next_change(kv_follow *branch, char *key, char *value, size_t size) {
    for (int i = 0; i < 50; i++) {
        kv_change change;
        kv_follow_event event = kv_follow_next(branch, 100, &change);
        if (event == KV_FOLLOW_IDLE)
            continue;
        if (event == KV_FOLLOW_ENTRY) {
            snprintf(key, size, "%s", change.key);
            snprintf(value, size, "%.*s", (int)change.size, change.value ? (const char *)change.value : "");
        }
        return event;
    }
    return KV_FOLLOW_IDLE;
}

Test(kv, a_branch_reads_the_follows_watch_in_order_from_a_fresh_start) {
    put(buckets[0], "g.a", "1");
    kv_follow *follow = kv_follow_start(buckets[1], 0);
    trunk_reader reader = {.follow = follow};
    pthread_create(&reader.thread, NULL, read_trunk, &reader);
    harness_sleep_ms(300); /* the follow is in the middle of its watch when the branch comes */
    kv_follow *branch = kv_follow_branch(follow);
    cr_assert_not_null(branch);
    cr_assert_null(kv_follow_branch(follow), "a second branch of one follow");
    cr_assert_null(kv_follow_branch(branch), "a branch of a branch");

    char key[64], value[64];
    cr_assert_eq(next_change(branch, key, value, sizeof key), KV_FOLLOW_RESTART, "the branch starts with a fresh watch");
    cr_assert_eq(next_change(branch, key, value, sizeof key), KV_FOLLOW_ENTRY);
    cr_assert_str_eq(key, "g.a");
    cr_assert_str_eq(value, "1");
    cr_assert_eq(next_change(branch, key, value, sizeof key), KV_FOLLOW_CAUGHT_UP);

    put(buckets[0], "g.b", "2");
    put(buckets[0], "g.a", "3");
    cr_assert_eq(next_change(branch, key, value, sizeof key), KV_FOLLOW_ENTRY);
    cr_assert_str_eq(key, "g.b");
    cr_assert_str_eq(value, "2");
    cr_assert_eq(next_change(branch, key, value, sizeof key), KV_FOLLOW_ENTRY);
    cr_assert_str_eq(key, "g.a");
    cr_assert_str_eq(value, "3", "the change as written, in order");

    int before = atomic_load(&reader.entries);
    kv_follow_restart(branch); /* the branch's view missed something: both start over */
    cr_assert_eq(next_change(branch, key, value, sizeof key), KV_FOLLOW_RESTART);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(next_change(branch, key, value, sizeof key), KV_FOLLOW_ENTRY, "every key comes again");
    cr_assert_eq(next_change(branch, key, value, sizeof key), KV_FOLLOW_CAUGHT_UP);
    cr_assert_geq(atomic_load(&reader.entries), before + 2, "the follow's own reader got every key again too");

    /* a closed branch holds nothing back: the follow's reader goes on alone */
    kv_follow_close(branch);
    before = atomic_load(&reader.entries);
    put(buckets[0], "g.c", "4");
    for (int64_t until = harness_now_ms() + 5000; atomic_load(&reader.entries) == before && harness_now_ms() < until;)
        harness_sleep_ms(10);
    cr_assert_eq(atomic_load(&reader.entries), before + 1, "the follow's reader missed a change after the branch closed");
    kv_follow_stop(follow);
    pthread_join(reader.thread, NULL);
    kv_follow_close(follow);
}

/* The branch's reader is busy elsewhere (a reconcile round) while 24 values of 900 KB are
 * written: the follow's reader stops once the branch holds 16 MiB, and nothing is dropped. */
Test(kv, a_branch_not_read_holds_its_follow_back_and_misses_nothing) {
    kv_follow *follow = kv_follow_start(buckets[1], 0);
    kv_follow *branch = kv_follow_branch(follow);
    cr_assert_not_null(branch);
    trunk_reader reader = {.follow = follow};
    pthread_create(&reader.thread, NULL, read_trunk, &reader);
    arena *a = arena_create(0);
    size_t size = 900 * 1024;
    char *big = arena_alloc(a, size + 1);
    enum { VALUES = 24 };
    for (int i = 0; i < VALUES; i++) {
        memset(big, 'a' + i, size);
        big[size] = '\0';
        put(buckets[0], arena_sprintf(a, "h.%02d", i), big);
    }
    harness_sleep_ms(1000);
    int held = atomic_load(&reader.entries);
    cr_assert_lt(held, VALUES, "the follow's reader ran %d changes ahead of an unread branch", held);
    cr_assert_geq(held, 16, "the follow's reader was held back before the branch was full (%d)", held);

    kv_change change;
    kv_follow_event event = KV_FOLLOW_IDLE;
    for (int64_t until = harness_now_ms() + 5000; event != KV_FOLLOW_RESTART && harness_now_ms() < until;)
        event = kv_follow_next(branch, 100, &change);
    cr_assert_eq(event, KV_FOLLOW_RESTART);
    int entries = 0;
    for (int64_t until = harness_now_ms() + 10000; entries < VALUES && harness_now_ms() < until;) {
        event = kv_follow_next(branch, 100, &change);
        if (event != KV_FOLLOW_ENTRY)
            continue;
        cr_assert_eq(change.size, size);
        cr_assert_eq(((const char *)change.value)[size - 1], 'a' + entries, "value %d came out of order", entries);
        entries++;
    }
    cr_assert_eq(entries, VALUES, "the branch got %d of %d changes", entries, VALUES);
    for (int64_t until = harness_now_ms() + 5000; atomic_load(&reader.entries) < VALUES && harness_now_ms() < until;)
        harness_sleep_ms(10);
    cr_assert_eq(atomic_load(&reader.entries), VALUES, "the follow's reader went on once the branch was read");
    kv_follow_stop(follow); /* with the branch open: its reader gets STOPPED */
    cr_assert_eq(kv_follow_next(branch, 100, &change), KV_FOLLOW_STOPPED);
    pthread_join(reader.thread, NULL);
    kv_follow_close(branch);
    kv_follow_close(follow);
    arena_destroy(a);
}

/* A view's code: counts the changes it was handed; refuses one change once when told to (as
 * an index out of memory would). */
typedef struct counting_view {
    atomic_int changes, caught_up, refuse;
} counting_view;

static bool count_change(void *arg, arena *a, const kv_change *change) {
    counting_view *v = arg;
    (void)a;
    (void)change;
    if (atomic_exchange(&v->refuse, 0))
        return false;
    atomic_fetch_add(&v->changes, 1);
    return true;
}

static void count_caught_up(void *arg) {
    atomic_fetch_add(&((counting_view *)arg)->caught_up, 1);
}

static bool wait_count(atomic_int *counter, int want, int64_t ms) {
    for (int64_t until = harness_now_ms() + ms; atomic_load(counter) < want && harness_now_ms() < until;)
        harness_sleep_ms(10);
    return atomic_load(counter) >= want;
}

Test(kv, a_view_holds_every_key_when_open_returns_then_follows_and_starts_over_on_a_miss) {
    for (int i = 0; i < 3; i++) {
        char key[8];
        snprintf(key, sizeof key, "v.%d", i);
        put(buckets[0], key, "x");
    }
    counting_view v = {0};
    kv_view_options options = {.bucket = "kv_test", .replicas = 1, .load_timeout_ms = 5000};
    kv_view_handlers handlers = {.on_change = count_change, .on_caught_up = count_caught_up, .arg = &v};
    kv_view *view = NULL;
    status st;
    cr_assert_eq(kv_view_open(connections[1], &options, &handlers, &view, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(atomic_load(&v.changes), 3, "open returned before the view held every key");
    cr_assert_eq(atomic_load(&v.caught_up), 1);
    cr_assert_not_null(kv_view_bucket(view));

    put(buckets[0], "v.3", "x"); /* another replica's write */
    cr_assert(wait_count(&v.changes, 4, 5000), "the view did not follow a change");

    atomic_store(&v.refuse, 1); /* the next change is missed: every key comes again */
    put(buckets[0], "v.4", "x");
    cr_assert(wait_count(&v.caught_up, 2, 5000), "no fresh watch after a missed change");
    cr_assert(wait_count(&v.changes, 4 + 5, 5000), "the fresh watch delivered %d of 5 keys",
              atomic_load(&v.changes) - 4);
    kv_view_close(view);
    kv_view_close(NULL);
}

/* --- protobuf records (kv_record) ------------------------------------------------------ */

typedef Library__Catalog__V1__Book Book;

static bool titled(const ProtobufCMessage *record) {
    const Book *book = (const Book *)record;
    return book->title != NULL && book->title[0] != '\0';
}

static const kv_record_type book_type = {.descriptor = &library__catalog__v1__book__descriptor, .name = "book",
                                         .whole = titled, .not_found_reason = "BOOK_NOT_FOUND"};

static status_code add_copy(void *arg, arena *a, ProtobufCMessage *record, bool *changed, status *st) {
    (void)arg;
    (void)a;
    (void)st;
    Book *book = (Book *)record;
    if (book->title == NULL || book->title[0] == '\0')
        book->title = "Made by the change";
    book->total_copies++;
    *changed = true;
    return STATUS_OK;
}

static status_code keep(void *arg, arena *a, ProtobufCMessage *record, bool *changed, status *st) {
    (void)arg;
    (void)a;
    (void)record;
    (void)st;
    *changed = false;
    return STATUS_OK;
}

Test(kv, a_record_is_created_once_read_back_and_missing_ones_are_named) {
    arena *a = arena_create(0);
    Book book = LIBRARY__CATALOG__V1__BOOK__INIT;
    book.book_id = "b1";
    book.title = "Dune";
    book.total_copies = 3;
    status st;
    kv_record_written written;
    cr_assert_eq(kv_record_create(buckets[0], "rec.b1", &book.base, a, &written, &st), STATUS_OK, "%s", st.message);
    cr_assert_gt(written.revision, 0);
    cr_assert_eq(kv_record_create(buckets[1], "rec.b1", &book.base, a, NULL, &st), STATUS_ALREADY_EXISTS);
    ProtobufCMessage *read = NULL;
    cr_assert_eq(kv_record_get(buckets[1], &book_type, "rec.b1", "b1", a, &read, &st), STATUS_OK, "%s", st.message);
    cr_assert_str_eq(((Book *)read)->title, "Dune");
    cr_assert_eq(((Book *)read)->total_copies, 3);
    cr_assert_eq(kv_record_get(buckets[0], &book_type, "rec.none", "none", a, &read, &st), STATUS_NOT_FOUND);
    cr_assert_str_eq(st.reason, "BOOK_NOT_FOUND");
    cr_assert_str_eq(st.message, "no book with id none");
    arena_destroy(a);
}

typedef struct record_adder {
    kv_bucket *bucket;
    int times;
    int failures;
    status first_failure;
} record_adder;

static void *add_copies(void *arg) {
    record_adder *adder = arg;
    for (int i = 0; i < adder->times; i++) {
        arena *a = arena_create(0);
        status st;
        if (kv_record_update(adder->bucket, &book_type, "rec.raced", "raced", true, add_copy, NULL, a, NULL, &st) !=
                STATUS_OK &&
            adder->failures++ == 0)
            adder->first_failure = st;
        arena_destroy(a);
    }
    return NULL;
}

Test(kv, two_replicas_updating_one_record_lose_no_change) {
    record_adder adders[2] = {{.bucket = buckets[0], .times = 100}, {.bucket = buckets[1], .times = 100}};
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&threads[i], NULL, add_copies, &adders[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(adders[i].failures, 0, "replica %d: %d of 100 changes failed, the first with %s %s: %s", i,
                     adders[i].failures, status_code_name(adders[i].first_failure.code),
                     adders[i].first_failure.reason, adders[i].first_failure.message);
    arena *a = arena_create(0);
    status st;
    ProtobufCMessage *read = NULL;
    cr_assert_eq(kv_record_get(buckets[0], &book_type, "rec.raced", "raced", a, &read, &st), STATUS_OK, "%s",
                 st.message);
    cr_assert_eq(((Book *)read)->total_copies, 200, "the first change created it, every one counted");
    kv_record_written written;
    cr_assert_eq(kv_record_update(buckets[1], &book_type, "rec.raced", "raced", false, keep, NULL, a, &written, &st),
                 STATUS_OK);
    cr_assert_null(written.bytes, "a change that changed nothing writes nothing");
    cr_assert_eq(((Book *)written.record)->total_copies, 200, "and answers the record as it is");
    arena_destroy(a);
}

Test(kv, a_record_that_does_not_parse_or_is_not_whole_is_data_loss) {
    arena *a = arena_create(0);
    status st;
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff};
    cr_assert_eq(kv_create(buckets[0], "rec.garbage", garbage, sizeof garbage, NULL, &st), STATUS_OK);
    ProtobufCMessage *read = NULL;
    cr_assert_eq(kv_record_get(buckets[0], &book_type, "rec.garbage", "garbage", a, &read, &st), STATUS_DATA_LOSS);
    cr_assert_str_eq(st.reason, "CORRUPT_RECORD");
    cr_assert_eq(kv_record_update(buckets[1], &book_type, "rec.garbage", "garbage", true, add_copy, NULL, a, NULL,
                                  &st),
                 STATUS_DATA_LOSS, "a corrupt record is never overwritten by a change");
    Book untitled = LIBRARY__CATALOG__V1__BOOK__INIT;
    untitled.book_id = "u";
    cr_assert_eq(kv_record_create(buckets[0], "rec.untitled", &untitled.base, a, NULL, &st), STATUS_OK);
    cr_assert_eq(kv_record_get(buckets[0], &book_type, "rec.untitled", "u", a, &read, &st), STATUS_DATA_LOSS,
                 "a record without what every stored one has");
    cr_assert_eq(kv_record_update(buckets[0], &book_type, "rec.missing", "missing", false, add_copy, NULL, a, NULL,
                                  &st),
                 STATUS_NOT_FOUND, "no record and no create_if_missing");
    arena_destroy(a);
}
