/* fuzz_page_token.c - the page tokens clients hand back: catalog SearchBooks tokens (base64url
 * of a position bound to the query) and lending ListLoans tokens. Garbage must be
 * INVALID_ARGUMENT; a decoded position (catalog) or loan id (lending), encoded again, must
 * decode to the same.
 *
 * Input: the query, a NUL byte, the token (the same bytes are also tried as a ListLoans
 * token). */
#include <stdbool.h>
#include <string.h>

#include "../../services/catalog/catalog.h"
#include "../../services/lending/lending.h"
#include "arena.h"
#include "fuzz.h"
#include "status.h"

static void check_rejected(status_code code, const status *st) {
    FUZZ_CHECK(code == STATUS_INVALID_ARGUMENT);
    FUZZ_CHECK(strcmp(st->reason, "INVALID_PAGE_TOKEN") == 0 || strcmp(st->reason, "FIELD_TOO_LONG") == 0);
}

static void catalog_token(arena *a, const char *query, const char *token) {
    status st;
    catalog_search search;
    status_code code = catalog_search_parse(a, query, 0, token, &search, &st);
    if (code != STATUS_OK) {
        check_rejected(code, &st);
        return;
    }
    if (!search.has_cursor) {
        FUZZ_CHECK(token[0] == '\0');
        return;
    }
    char *again = catalog_page_token_encode(a, search.query_folded, &search.cursor);
    FUZZ_CHECK(again != NULL);
    catalog_cursor cursor;
    bool has_cursor = false;
    FUZZ_CHECK(catalog_page_token_decode(a, again, search.query_folded, &cursor, &has_cursor, &st) ==
               STATUS_OK);
    FUZZ_CHECK(has_cursor && strcmp(cursor.title_folded, search.cursor.title_folded) == 0 &&
               strcmp(cursor.book_id, search.cursor.book_id) == 0);
    /* Bound to its query: another query's token is refused. */
    char other[CATALOG_QUERY_MAX + 2];
    snprintf(other, sizeof other, "%sx", search.query_folded);
    FUZZ_CHECK(catalog_page_token_decode(a, again, other, &cursor, &has_cursor, &st) ==
               STATUS_INVALID_ARGUMENT);
}

static void lending_token(const char *token) {
    status st;
    char start_at[LENDING_LOAN_ID_LENGTH + 1] = "unset";
    status_code code = lending_page_token_decode(token, start_at, &st);
    if (code != STATUS_OK) {
        check_rejected(code, &st);
        FUZZ_CHECK(start_at[0] == '\0');
        return;
    }
    FUZZ_CHECK(start_at[0] == '\0' || strlen(start_at) == LENDING_LOAN_ID_LENGTH);
    char again[LENDING_PAGE_TOKEN_MAX], decoded[LENDING_LOAN_ID_LENGTH + 1];
    lending_page_token_encode(start_at, again);
    if (start_at[0] != '\0')
        FUZZ_CHECK(lending_page_token_decode(again, decoded, &st) == STATUS_OK && strcmp(decoded, start_at) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *rest = NULL;
    size_t rest_size = 0;
    char *query = fuzz_split(data, size, 0, &rest, &rest_size);
    char *token = fuzz_string(rest, rest_size);
    arena *a = arena_create(0);
    FUZZ_CHECK(a != NULL);
    catalog_token(a, query, token);
    lending_token(token);
    lending_token(query);
    arena_destroy(a);
    free(query);
    free(token);
    return 0;
}
