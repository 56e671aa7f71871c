/* test_policy.c - the patron groups' policy file: a good file read row by row, fields and
 * groups it leaves out taken from the defaults, and every kind of mistake refused with the
 * field named. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy.h"

#define DAY_MS (24LL * 3600 * 1000)
#define HOUR_MS (3600LL * 1000)

static char dir[64];
static char path[128];

static const loan_policy defaults = {
    .loan_period_ms = 14 * DAY_MS, .max_active_loans = 5, .max_renewals = 2, .max_holds = 5,
    .hold_pickup_ms = 72 * HOUR_MS, .fine_per_interval = 25, .fine_interval_ms = 24 * HOUR_MS,
    .fine_max_per_loan = 1000, .fine_block_at = 500,
};

static void setup(void) {
    snprintf(dir, sizeof dir, "/tmp/policy-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/policy.json", dir);
}

static void teardown(void) {
    unlink(path);
    rmdir(dir);
}

TestSuite(policy, .init = setup, .fini = teardown);

/* Field by field: memcmp would compare the struct's padding too. */
static bool same_policy(const loan_policy *x, const loan_policy *y) {
    return x->loan_period_ms == y->loan_period_ms && x->max_active_loans == y->max_active_loans &&
           x->max_renewals == y->max_renewals && x->max_holds == y->max_holds &&
           x->hold_pickup_ms == y->hold_pickup_ms && x->fine_per_interval == y->fine_per_interval &&
           x->fine_interval_ms == y->fine_interval_ms && x->fine_max_per_loan == y->fine_max_per_loan &&
           x->fine_block_at == y->fine_block_at;
}

static void write_policy(const char *text) {
    FILE *file = fopen(path, "w");
    cr_assert_not_null(file);
    fputs(text, file);
    fclose(file);
}

static policy_table *load(const char *text) {
    write_policy(text);
    policy_table *t = NULL;
    status st;
    cr_assert_eq(policy_table_load(path, &defaults, &t, &st), STATUS_OK, "%s", st.message);
    cr_assert_not_null(t);
    return t;
}

/* The file is refused, and the message names the file and says `expected`. */
static void expect_refused(const char *text, const char *expected) {
    write_policy(text);
    policy_table *t = NULL;
    status st;
    cr_assert_eq(policy_table_load(path, &defaults, &t, &st), STATUS_INVALID_ARGUMENT, "accepted: %s", text);
    cr_assert_null(t);
    cr_assert_str_eq(st.reason, "BAD_POLICY_FILE");
    cr_assert_eq(strncmp(st.message, path, strlen(path)), 0, "the message names the file: %s", st.message);
    cr_assert_not_null(strstr(st.message, expected), "\"%s\" does not say \"%s\"", st.message, expected);
}

Test(policy, a_good_file_gives_each_group_its_row) {
    policy_table *t = load(
        "{\"groups\": {\n"
        "  \"patron\": {\"loan_period\": \"14d\", \"max_active_loans\": 5, \"max_renewals\": 2,\n"
        "              \"max_holds\": 5, \"hold_pickup\": \"72h\", \"fine_per_interval\": 25,\n"
        "              \"fine_interval\": \"24h\", \"fine_max_per_loan\": 1000, \"fine_block_at\": 500},\n"
        "  \"child\": {\"loan_period\": \"21d\", \"max_active_loans\": 3, \"max_renewals\": 0,\n"
        "             \"max_holds\": 2, \"hold_pickup\": \"5d\", \"fine_per_interval\": 0,\n"
        "             \"fine_interval\": \"1s\", \"fine_max_per_loan\": 0, \"fine_block_at\": 0},\n"
        "  \"staff.ft\": {\"loan_period\": \"90d\", \"max_active_loans\": 20}\n"
        "}}\n");
    cr_assert_eq(policy_table_group_count(t), 3);
    const loan_policy *patron = policy_for(t, "patron");
    cr_assert(same_policy(patron, &defaults));
    const loan_policy *child = policy_for(t, "child");
    cr_assert_eq(child->loan_period_ms, 21 * DAY_MS);
    cr_assert_eq(child->max_active_loans, 3);
    cr_assert_eq(child->max_renewals, 0);
    cr_assert_eq(child->max_holds, 2);
    cr_assert_eq(child->hold_pickup_ms, 5 * DAY_MS);
    cr_assert_eq(child->fine_per_interval, 0);
    cr_assert_eq(child->fine_interval_ms, 1000);
    cr_assert_eq(child->fine_max_per_loan, 0);
    cr_assert_eq(child->fine_block_at, 0, "0: fines never block a child");
    const loan_policy *staff = policy_for(t, "staff.ft");
    cr_assert_eq(staff->loan_period_ms, 90 * DAY_MS);
    cr_assert_eq(staff->max_active_loans, 20);
    policy_table_destroy(t);
}

Test(policy, fields_a_row_leaves_out_are_the_defaults) {
    policy_table *t = load("{\"groups\": {\"child\": {\"max_active_loans\": 1}, \"empty\": {}}}");
    const loan_policy *child = policy_for(t, "child");
    loan_policy expected = defaults;
    expected.max_active_loans = 1;
    cr_assert(same_policy(child, &expected));
    cr_assert(same_policy(policy_for(t, "empty"), &defaults));
    policy_table_destroy(t);
}

Test(policy, an_unknown_group_gets_the_defaults) {
    policy_table *t = load("{\"groups\": {\"child\": {\"max_active_loans\": 1}}}");
    cr_assert(same_policy(policy_for(t, "patron"), &defaults));
    cr_assert(same_policy(policy_for(t, "Child"), &defaults), "group names are exact");
    cr_assert(same_policy(policy_for(t, NULL), &defaults));
    policy_table_destroy(t);
}

Test(policy, no_file_or_no_groups_gives_everyone_the_defaults) {
    policy_table *t = NULL;
    status st;
    cr_assert_eq(policy_table_load("", &defaults, &t, &st), STATUS_OK);
    cr_assert_eq(policy_table_group_count(t), 0);
    cr_assert(same_policy(policy_for(t, "child"), &defaults));
    policy_table_destroy(t);
    cr_assert_eq(policy_table_load(NULL, &defaults, &t, &st), STATUS_OK);
    policy_table_destroy(t);
    t = load("{}");
    cr_assert(same_policy(policy_for(t, "patron"), &defaults));
    policy_table_destroy(t);
    t = load("{\"groups\": {}}");
    cr_assert_eq(policy_table_group_count(t), 0);
    policy_table_destroy(t);
    policy_table_destroy(NULL);
}

Test(policy, each_bad_field_is_named) {
    static const struct {
        const char *row;
        const char *expected;
    } cases[] = {
        {"{\"loan_period\": 14}", "groups.child.loan_period: must be a duration string"},
        {"{\"loan_period\": \"14 days\"}", "groups.child.loan_period: must be a duration string"},
        {"{\"loan_period\": \"0s\"}", "groups.child.loan_period: must be from 1s to 3650d"},
        {"{\"loan_period\": \"500ms\"}", "groups.child.loan_period: must be from 1s"},
        {"{\"loan_period\": \"4000d\"}", "groups.child.loan_period: must be from 1s to 3650d"},
        {"{\"max_active_loans\": 0}", "groups.child.max_active_loans: must be an integer from 1 to 1000"},
        {"{\"max_active_loans\": \"3\"}", "groups.child.max_active_loans: must be an integer"},
        {"{\"max_active_loans\": 2.5}", "groups.child.max_active_loans: must be an integer"},
        {"{\"max_active_loans\": 1001}", "groups.child.max_active_loans: must be an integer from 1 to 1000"},
        {"{\"max_renewals\": -1}", "groups.child.max_renewals: must be an integer from 0 to 1000"},
        {"{\"max_holds\": true}", "groups.child.max_holds: must be an integer from 0"},
        {"{\"hold_pickup\": \"0s\"}", "groups.child.hold_pickup: must be from 1s"},
        {"{\"hold_pickup\": null}", "groups.child.hold_pickup: must be a duration string"},
        {"{\"fine_per_interval\": -25}", "groups.child.fine_per_interval: must be an integer from 0"},
        {"{\"fine_interval\": \"0s\"}", "groups.child.fine_interval: must be from 1s"},
        {"{\"fine_interval\": \"1500ms\"}", "groups.child.fine_interval: must be whole seconds"},
        {"{\"fine_max_per_loan\": 1000000000001}", "groups.child.fine_max_per_loan: must be an integer from 0 to"},
        {"{\"fine_block_at\": -1}", "groups.child.fine_block_at: must be an integer from 0 to 1000000000000"},
        {"{\"fine_per_interval\": 1000000001}", "groups.child.fine_per_interval: must be an integer from 0 to 1000000000"},
        {"{\"loan_periods\": \"14d\"}", "groups.child.loan_periods: unknown field; the fields are loan_period,"},
        {"{\"max_active_loans\": 1, \"maxholds\": 2}", "groups.child.maxholds: unknown field"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "{\"groups\": {\"staff\": {}, \"child\": %s}}", cases[i].row);
        expect_refused(text, cases[i].expected);
    }
}

Test(policy, bad_groups_and_keys_are_named) {
    expect_refused("{\"groups\": {\"child care\": {}}}", "groups.child care: a group name is");
    expect_refused("{\"groups\": {\"\": {}}}", "groups.: a group name is");
    expect_refused("{\"groups\": {\"child\": 3}}", "groups.child: must be an object");
    expect_refused("{\"groups\": [\"child\"]}", "groups: must be an object");
    expect_refused("{\"group\": {\"child\": {}}}", "group: unknown key; the file has only \"groups\"");
    expect_refused("{\"groups\": {}, \"default\": {}}", "default: unknown key");
    expect_refused("[]", "the file must hold one JSON object");
}

Test(policy, malformed_json_is_refused_with_line_and_column) {
    expect_refused("{\"groups\": {\n  \"child\": {\"max_active_loans\": 1,}\n}}", "line 2, column");
    expect_refused("{\"groups\": {\"child\": {\"loan_period\": \"2s\"}}", "line");
    expect_refused("", "line");
    expect_refused("{\"groups\": {\"child\": {}, \"child\": {}}}", "duplicate");
}

Test(policy, a_missing_file_is_refused) {
    policy_table *t = NULL;
    status st;
    cr_assert_eq(policy_table_load("/nonexistent/policy.json", &defaults, &t, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_not_null(strstr(st.message, "/nonexistent/policy.json"), "%s", st.message);
    cr_assert_null(t);
}
