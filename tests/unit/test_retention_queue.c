/* test_retention_queue.c - the reconciler's queue of settled records by the time each may be
 * forgotten: earliest first, only what is due, at most max per call, and a visit may put an
 * entry back. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "retention.h"

typedef struct visits {
    char ids[64][16];
    retention_kind kinds[64];
    size_t count;
    retention_queue *queue; /* set: each visit puts its entry back, due at requeue_ms */
    int64_t requeue_ms;
} visits;

static void remember(void *arg, retention_kind kind, const char *id) {
    visits *v = arg;
    snprintf(v->ids[v->count], sizeof v->ids[0], "%s", id);
    v->kinds[v->count++] = kind;
    if (v->queue)
        cr_assert(retention_queue_push(v->queue, v->requeue_ms, kind, id));
}

Test(retention_queue, entries_come_out_earliest_first_and_only_when_due) {
    retention_queue *queue = retention_queue_create();
    cr_assert_not_null(queue);
    const int64_t due[] = {500, 100, 900, 300, 700, 200, 800, 400, 600};
    for (size_t i = 0; i < sizeof due / sizeof due[0]; i++) {
        char id[16];
        snprintf(id, sizeof id, "loan-%lld", (long long)due[i]);
        cr_assert(retention_queue_push(queue, due[i], i % 2 ? RETENTION_HOLD : RETENTION_LOAN, id));
    }
    visits v = {0};
    cr_assert_eq(retention_queue_due(queue, 50, 100, remember, &v), 0, "nothing is due before the earliest");
    cr_assert_eq(retention_queue_due(queue, 450, 100, remember, &v), 4);
    cr_assert_eq(retention_queue_due(queue, 1000, 3, remember, &v), 3, "at most max per call");
    cr_assert_eq(retention_queue_count(queue), 2);
    cr_assert_eq(retention_queue_due(queue, 1000, 100, remember, &v), 2);
    cr_assert_eq(v.count, 9);
    for (size_t i = 0; i < v.count; i++) {
        char expected[16];
        snprintf(expected, sizeof expected, "loan-%zu", (i + 1) * 100);
        cr_assert_str_eq(v.ids[i], expected, "visit %zu", i);
    }
    cr_assert_eq(v.kinds[0], RETENTION_HOLD, "loan-100 was pushed as a hold");
    retention_queue_destroy(queue);
}

Test(retention_queue, a_visit_may_put_its_entry_back_for_later) {
    retention_queue *queue = retention_queue_create();
    cr_assert(retention_queue_push(queue, 10, RETENTION_LOAN, "owes-a-fine"));
    visits v = {.queue = queue, .requeue_ms = 5000};
    cr_assert_eq(retention_queue_due(queue, 100, 100, remember, &v), 1, "the entry put back is not due again");
    cr_assert_eq(retention_queue_count(queue), 1);
    v.queue = NULL;
    cr_assert_eq(retention_queue_due(queue, 4999, 100, remember, &v), 0);
    cr_assert_eq(retention_queue_due(queue, 5000, 100, remember, &v), 1);
    cr_assert_str_eq(v.ids[1], "owes-a-fine");
    retention_queue_destroy(queue);
}

/* Ids are their due times: each visit's is no earlier than the one before. */
static void remember_order(void *arg, retention_kind kind, const char *id) {
    (void)kind;
    int64_t *last = arg, due = atoll(id);
    cr_assert_geq(due, *last, "%lld came out after %lld", (long long)due, (long long)*last);
    *last = due;
}

Test(retention_queue, many_random_entries_keep_the_order_and_clear_empties_it) {
    retention_queue *queue = retention_queue_create();
    unsigned seed = 7;
    for (int i = 0; i < 5000; i++) {
        char id[16];
        int64_t due = rand_r(&seed) % 100000;
        snprintf(id, sizeof id, "%lld", (long long)due);
        cr_assert(retention_queue_push(queue, due, RETENTION_LOAN, id));
    }
    int64_t last = -1;
    size_t seen = 0;
    for (int64_t now = 0; now < 100000 + 997; now += 997) {
        size_t before = retention_queue_count(queue);
        seen += retention_queue_due(queue, now, 100000, remember_order, &last);
        cr_assert_leq(retention_queue_count(queue), before);
    }
    cr_assert_eq(seen, 5000);
    for (int i = 0; i < 10; i++)
        cr_assert(retention_queue_push(queue, i, RETENTION_HOLD, "again"));
    retention_queue_clear(queue);
    cr_assert_eq(retention_queue_count(queue), 0);
    retention_queue_destroy(queue);
}
