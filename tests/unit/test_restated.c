/* test_restated.c - the queue of loans' final events waiting to be announced again. */
#include <criterion/criterion.h>
#include <string.h>

#include "restated.h"

static void push(restated_queue *q, int64_t due, const char *text) {
    cr_assert(restated_push(q, due, (const uint8_t *)text, strlen(text)));
}

static bool is(ProtobufCBinaryData data, const char *text) {
    return data.len == strlen(text) && memcmp(data.data, text, data.len) == 0;
}

Test(restated, due_events_come_in_order_in_batches_and_stay_until_dropped) {
    restated_queue *q = restated_create(100);
    push(q, 10, "a");
    push(q, 20, "bb");
    push(q, 30, "ccc");
    ProtobufCBinaryData out[4];
    cr_assert_eq(restated_due(q, 5, out, 4), 0, "nothing is due before its time");
    cr_assert_eq(restated_due(q, 20, out, 4), 2);
    cr_assert(is(out[0], "a") && is(out[1], "bb"));
    cr_assert_eq(restated_due(q, 30, out, 1), 1, "at most max");
    cr_assert(is(out[0], "a"));
    cr_assert_eq(restated_due(q, 20, out, 4), 2, "a batch not dropped (its send failed) comes again");
    restated_drop(q, 2);
    cr_assert_eq(restated_count(q), 1);
    cr_assert_eq(restated_due(q, 100, out, 4), 1);
    cr_assert(is(out[0], "ccc"));
    restated_drop(q, 1);
    cr_assert_eq(restated_due(q, 100, out, 4), 0);
    push(q, 40, "d"); /* the queue works on after it was emptied */
    cr_assert_eq(restated_due(q, 40, out, 4), 1);
    cr_assert(is(out[0], "d"));
    restated_destroy(q);
}

Test(restated, a_later_event_holds_back_those_behind_it_until_its_time) {
    restated_queue *q = restated_create(100);
    push(q, 50, "late"); /* another replica's clock, or a record written twice */
    push(q, 10, "early");
    ProtobufCBinaryData out[4];
    cr_assert_eq(restated_due(q, 20, out, 4), 0);
    cr_assert_eq(restated_due(q, 50, out, 4), 2);
    restated_destroy(q);
}

Test(restated, a_full_queue_takes_no_more_and_says_so_without_failing) {
    restated_queue *q = restated_create(2);
    push(q, 1, "a");
    push(q, 1, "b");
    push(q, 1, "c"); /* true: not an out-of-memory failure */
    cr_assert_eq(restated_count(q), 2);
    ProtobufCBinaryData out[4];
    cr_assert_eq(restated_due(q, 1, out, 4), 2);
    cr_assert(is(out[1], "b"));
    restated_drop(q, 5); /* more than it holds */
    cr_assert_eq(restated_count(q), 0);
    restated_destroy(q);
    restated_destroy(NULL);
}
