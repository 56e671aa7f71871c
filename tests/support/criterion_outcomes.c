/* criterion_outcomes.c - one Criterion test per way a test can end, for
 * tests/e2e/test_results.sh: it runs them one by one (--filter) and checks that tools/test
 * counts each as Criterion should have. Not a suite of its own: some of these fail on purpose. */
#include <criterion/criterion.h>
#include <stdlib.h>

static void teardown_fails_an_assertion(void) {
    cr_assert(false, "teardown assertion");
}
static void teardown_crashes(void) {
    abort();
}
static void teardown_exits(void) {
    exit(3);
}

Test(outcome, passes) {
    cr_assert(true);
}
Test(outcome, passes_too) {
    cr_assert(true);
}
Test(outcome, fails) {
    cr_expect(false, "first failed expectation");
    cr_expect(false, "second failed expectation");
}
Test(outcome, passes_then_teardown_fails, .fini = teardown_fails_an_assertion) {
    cr_assert(true);
}
Test(outcome, passes_then_teardown_crashes, .fini = teardown_crashes) {
    cr_assert(true);
}
Test(outcome, passes_then_teardown_exits, .fini = teardown_exits) {
    cr_assert(true);
}
