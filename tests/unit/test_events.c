/* test_events.c - the ids of saga announcements and the attempt a re-announcement is. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "events.h"

Test(events, the_first_announcement_has_the_plain_id) {
    char id[EVENT_ID_MAX];
    cr_assert(events_format_id(id, sizeof id, LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED, "0123456789abcdef0123", 0));
    cr_assert_str_eq(id, "loan-requested-0123456789abcdef0123");
    cr_assert(events_format_id(id, sizeof id, LIBRARY__EVENTS__V1__EVENT__BODY_COPY_RESERVED, "0123456789abcdef0123", 3));
    cr_assert_str_eq(id, "copy-reserved-0123456789abcdef0123-r3");
}

Test(events, an_id_that_does_not_fit_is_refused) {
    char id[16];
    cr_assert_not(events_format_id(id, sizeof id, LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED, "0123456789abcdef0123", 0));
    char roomy[EVENT_ID_MAX];
    char longest[65] = {0};
    for (int i = 0; i < 64; i++)
        longest[i] = 'a';
    cr_assert(events_format_id(roomy, sizeof roomy, LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED, longest, UINT32_MAX),
              "the longest server-made id with the largest attempt fits EVENT_ID_MAX");
}

Test(events, every_event_type_has_a_subject_under_its_side_and_a_kind) {
    for (int type = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED; type <= LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_OVERDUE;
         type++) {
        const char *subject = events_subject((event_type)type), *kind = events_kind((event_type)type);
        cr_assert_not_null(subject, "event type %d has no subject", type);
        cr_assert_not_null(kind, "event type %d has no kind", type);
        bool copy = strncmp(subject, "library.events.copy.", 20) == 0;
        bool loan = strncmp(subject, "library.events.loan.", 20) == 0;
        cr_assert(copy || loan, "%s is under neither filter the consumers use", subject);
        for (int other = type + 1; other <= LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_OVERDUE; other++)
            cr_assert_str_neq(subject, events_subject((event_type)other), "two types share %s", subject);
    }
    /* lending's restatements: under library.events (mypage reads them) and under neither
     * consumer filter of the catalog and lending, which have nothing to do with them */
    const char *restated = events_subject(LIBRARY__EVENTS__V1__EVENT__BODY_EVENTS_RESTATED);
    cr_assert_not_null(restated);
    cr_assert_str_eq(restated, EVENTS_RESTATED_SUBJECT);
    cr_assert(strncmp(restated, "library.events.", 15) == 0);
    cr_assert(strncmp(restated, "library.events.copy.", 20) != 0 && strncmp(restated, "library.events.loan.", 20) != 0);
    cr_assert_null(events_subject(LIBRARY__EVENTS__V1__EVENT__BODY__NOT_SET));
    char id[EVENT_ID_MAX];
    cr_assert_not(events_format_id(id, sizeof id, LIBRARY__EVENTS__V1__EVENT__BODY__NOT_SET, "x", 0));
}

Test(events, the_attempt_counts_up_as_the_step_ages_twice_over) {
    const int64_t after = 1000;
    cr_assert_eq(events_attempt_for_age(0, after), 0);
    cr_assert_eq(events_attempt_for_age(1000, after), 0, "the first republish keeps the id: it may be stored");
    cr_assert_eq(events_attempt_for_age(1999, after), 0);
    cr_assert_eq(events_attempt_for_age(2000, after), 1);
    cr_assert_eq(events_attempt_for_age(3999, after), 1);
    cr_assert_eq(events_attempt_for_age(4000, after), 2);
    cr_assert_eq(events_attempt_for_age(3600 * 1000, after), 11, "an hour of outage adds 11 attempts, not 3,600");
    cr_assert_lt(events_attempt_for_age(INT64_MAX, 86400000), 64, "no overflow on the oldest age");
    cr_assert_eq(events_attempt_for_age(-5, after), 0, "a clock step back is the first attempt");
    cr_assert_eq(events_attempt_for_age(10, 0), 3, "a zero grace counts from 1 ms");
}
