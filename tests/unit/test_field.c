/* test_field.c - the id and request-id checks every service shares. */
#include <criterion/criterion.h>
#include <string.h>

#include "field.h"

/* Asserts that check returned INVALID_ARGUMENT with reason and a message naming field. */
static void assert_refused(status_code code, const status *st, const char *reason,
                           const char *field) {
    cr_assert_eq(code, STATUS_INVALID_ARGUMENT, "got %s", status_code_name(code));
    cr_assert_str_eq(st->reason, reason);
    cr_assert_not_null(strstr(st->message, field), "message does not name %s: %s", field,
                       st->message);
}

Test(field, ids_are_lowercase_letters_digits_and_hyphens) {
    status st;
    cr_assert_eq(field_check_id("0f3c9e2a1b7d4c8e6a5b", "book_id", &st), STATUS_OK);
    cr_assert_eq(field_check_id("abc-123", "loan_id", &st), STATUS_OK);
    assert_refused(field_check_id(NULL, "book_id", &st), &st, "FIELD_REQUIRED", "book_id");
    assert_refused(field_check_id("", "loan_id", &st), &st, "FIELD_REQUIRED", "loan_id");
    /* NATS subject wildcards and separators, upper case, spaces, bytes beyond ASCII. */
    const char *bad[] = {"book.*", ">", "a.b", "*", "ABC", "a b", "a/b", "\xc3\xa9", "a\tb"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_refused(field_check_id(bad[i], "book_id", &st), &st, "FIELD_MALFORMED", "book_id");
}

Test(field, an_id_is_at_most_64_bytes) {
    status st;
    char id[FIELD_ID_MAX + 2];
    memset(id, 'a', FIELD_ID_MAX);
    id[FIELD_ID_MAX] = '\0';
    cr_assert_eq(field_check_id(id, "book_id", &st), STATUS_OK);
    id[FIELD_ID_MAX] = 'a';
    id[FIELD_ID_MAX + 1] = '\0';
    assert_refused(field_check_id(id, "book_id", &st), &st, "FIELD_MALFORMED", "book_id");
    cr_assert_not_null(strstr(st.message, "65 bytes"), "%s", st.message);
}

Test(field, request_ids_are_optional_text_of_at_most_128_bytes) {
    status st;
    cr_assert_eq(field_check_request_id(NULL, &st), STATUS_OK);
    cr_assert_eq(field_check_request_id("", &st), STATUS_OK);
    cr_assert_eq(field_check_request_id("retry 7 of Order/42 \xed\x95\x9c", &st), STATUS_OK);
    char id[FIELD_REQUEST_ID_MAX + 2];
    memset(id, 'x', FIELD_REQUEST_ID_MAX);
    id[FIELD_REQUEST_ID_MAX] = '\0';
    cr_assert_eq(field_check_request_id(id, &st), STATUS_OK);
    id[FIELD_REQUEST_ID_MAX] = 'x';
    id[FIELD_REQUEST_ID_MAX + 1] = '\0';
    assert_refused(field_check_request_id(id, &st), &st, "FIELD_TOO_LONG", "request_id");
    assert_refused(field_check_request_id("a\nb", &st), &st, "FIELD_MALFORMED", "request_id");
    assert_refused(field_check_request_id("\xc3\x28", &st), &st, "FIELD_MALFORMED", "request_id");
}
