/* catalog.c - the catalog's rules. */
#include "catalog.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "field.h"
#include "text.h"

static status_code check_text(const char *text, const char *field, bool required, size_t max,
                              status *st) {
    size_t length = text ? strlen(text) : 0;
    if (length == 0) {
        if (required)
            return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_REQUIRED", "%s is required", field);
        return STATUS_OK;
    }
    if (length > max)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_TOO_LONG",
                          "%s is %zu bytes long; at most %zu are allowed", field, length, max);
    if (!text_is_valid_utf8(text, length, false))
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_MALFORMED",
                          "%s must be UTF-8 text without control characters", field);
    bool blank = true;
    for (size_t i = 0; i < length && blank; i++)
        blank = text[i] == ' ';
    if (blank)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_REQUIRED", "%s must not be blank", field);
    return STATUS_OK;
}

status_code catalog_check_title(const char *title, const char *field, bool required, status *st) {
    return check_text(title, field, required, CATALOG_TITLE_MAX, st);
}

status_code catalog_check_author(const char *author, const char *field, bool required, status *st) {
    return check_text(author, field, required, CATALOG_AUTHOR_MAX, st);
}

status_code catalog_check_isbn(const char *isbn, status *st) {
    size_t length = isbn ? strlen(isbn) : 0;
    if (length > CATALOG_ISBN_MAX)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_TOO_LONG",
                          "isbn is %zu characters long; at most %d are allowed", length,
                          CATALOG_ISBN_MAX);
    size_t digits = 0;
    for (size_t i = 0; i < length; i++) {
        char c = isbn[i];
        if (isdigit((unsigned char)c) || c == 'X' || c == 'x')
            digits++;
        else if (c != '-' && c != ' ')
            return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_MALFORMED",
                              "isbn may contain only digits, X, hyphens and spaces");
    }
    if (length > 0 && digits == 0)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_MALFORMED", "isbn has no digits");
    return STATUS_OK;
}

status_code catalog_check_copies(int32_t copies, status *st) {
    if (copies < 0 || copies > CATALOG_MAX_COPIES)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_OUT_OF_RANGE",
                          "copies must be between 0 and %d, got %d", CATALOG_MAX_COPIES, copies);
    return STATUS_OK;
}

status_code catalog_check_book_id(const char *book_id, status *st) {
    return field_check_id(book_id, "book_id", st);
}

status_code catalog_check_register(const char *title, const char *author, const char *isbn,
                                   int32_t copies, const char *request_id, status *st) {
    if (catalog_check_title(title, "title", true, st) ||
        catalog_check_author(author, "author", true, st) || catalog_check_isbn(isbn, st) ||
        catalog_check_copies(copies, st) || field_check_request_id(request_id, st))
        return st->code;
    return STATUS_OK;
}

status_code catalog_check_update(const char *book_id, const char *title, const char *author,
                                 const char *isbn, status *st) {
    if (catalog_check_book_id(book_id, st) || catalog_check_title(title, "title", false, st) ||
        catalog_check_author(author, "author", false, st) || catalog_check_isbn(isbn, st))
        return st->code;
    if ((title == NULL || title[0] == '\0') && (author == NULL || author[0] == '\0') &&
        (isbn == NULL || isbn[0] == '\0'))
        return status_set(st, STATUS_INVALID_ARGUMENT, "NOTHING_TO_UPDATE",
                          "set at least one of title, author or isbn");
    return STATUS_OK;
}

status_code catalog_check_adjust(const char *book_id, const char *request_id, status *st) {
    if (catalog_check_book_id(book_id, st) || field_check_request_id(request_id, st))
        return st->code;
    return STATUS_OK;
}

void catalog_new_book_id(const char *caller, const char *request_id,
                         char out[CATALOG_BOOK_ID_MAX + 1]) {
    if (request_id == NULL || request_id[0] == '\0') {
        text_random_hex(out, 10);
        return;
    }
    char digest[65];
    const char *parts[] = {"RegisterBook", caller, request_id, NULL};
    text_sha256_hex(parts, digest);
    snprintf(out, CATALOG_BOOK_ID_MAX + 1, "%.20s", digest);
}

void catalog_request_key(const char *method, const char *caller, const char *request_id,
                         char out[65]) {
    const char *parts[] = {method, caller, request_id, NULL};
    text_sha256_hex(parts, out);
}

status_code catalog_adjust_stock(int32_t total, int32_t available, int32_t delta,
                                 int32_t *new_total, int32_t *new_available, status *st) {
    if (delta == 0)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_OUT_OF_RANGE",
                          "delta must not be 0");
    if (delta > CATALOG_MAX_COPIES || delta < -CATALOG_MAX_COPIES)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_OUT_OF_RANGE",
                          "delta must be between -%d and %d", CATALOG_MAX_COPIES, CATALOG_MAX_COPIES);
    int64_t next_total = (int64_t)total + delta;
    int64_t next_available = (int64_t)available + delta;
    if (next_total > CATALOG_MAX_COPIES)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_OUT_OF_RANGE",
                          "a book may have at most %d copies; this would make %lld",
                          CATALOG_MAX_COPIES, (long long)next_total);
    if (next_available < 0)
        return status_set(st, STATUS_FAILED_PRECONDITION, "COPIES_ON_LOAN",
                          "cannot withdraw %d copies: %d are on the shelf and %d on loan or set aside "
                          "for holds", -delta, available, total - available);
    *new_total = (int32_t)next_total;
    *new_available = (int32_t)next_available;
    return STATUS_OK;
}

void catalog_fold(const char *text, char *out, size_t out_size) {
    size_t i = 0;
    for (; text && text[i] && i + 1 < out_size; i++)
        out[i] = (char)tolower((unsigned char)text[i]);
    out[i] = '\0';
}

void catalog_isbn_digits(const char *isbn, char *out, size_t out_size) {
    size_t n = 0;
    for (size_t i = 0; isbn && isbn[i] && n + 1 < out_size; i++) {
        if (isbn[i] == '-' || isbn[i] == ' ')
            continue;
        out[n++] = (char)toupper((unsigned char)isbn[i]);
    }
    out[n] = '\0';
}

bool catalog_matches(const char *query_folded, const char *title_folded,
                     const char *author_folded, const char *isbn_digits) {
    if (query_folded[0] == '\0')
        return true;
    if (strstr(title_folded, query_folded) || strstr(author_folded, query_folded))
        return true;
    char query_isbn[CATALOG_QUERY_MAX + 1];
    catalog_isbn_digits(query_folded, query_isbn, sizeof query_isbn);
    return query_isbn[0] != '\0' && strstr(isbn_digits, query_isbn) != NULL;
}

status_code catalog_page_size(int32_t requested, int32_t *out, status *st) {
    if (requested < 0)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_OUT_OF_RANGE",
                          "page_size must not be negative");
    *out = requested == 0 ? CATALOG_PAGE_SIZE_DEFAULT
                          : requested > CATALOG_PAGE_SIZE_MAX ? CATALOG_PAGE_SIZE_MAX : requested;
    return STATUS_OK;
}

/* Token layout before base64url: "c1" NUL query-hash(16 hex) NUL title NUL book_id. */
char *catalog_page_token_encode(arena *a, const char *query_folded, const catalog_cursor *cursor) {
    char digest[65];
    const char *parts[] = {"SearchBooks", query_folded, NULL};
    text_sha256_hex(parts, digest);
    size_t title_length = strlen(cursor->title_folded), id_length = strlen(cursor->book_id);
    size_t size = 3 + 17 + title_length + 1 + id_length;
    uint8_t *raw = arena_alloc(a, size);
    if (raw == NULL)
        return NULL;
    memcpy(raw, "c1", 3);
    memcpy(raw + 3, digest, 16);
    raw[19] = '\0';
    memcpy(raw + 20, cursor->title_folded, title_length + 1);
    memcpy(raw + 20 + title_length + 1, cursor->book_id, id_length);
    return text_base64url_encode(a, raw, size);
}

status_code catalog_page_token_decode(arena *a, const char *token, const char *query_folded,
                                      catalog_cursor *cursor, bool *has_cursor, status *st) {
    *has_cursor = false;
    if (token == NULL || token[0] == '\0')
        return STATUS_OK;
    uint8_t *raw = NULL;
    size_t size = 0;
    if (strlen(token) > 2048 || !text_base64url_decode(a, token, &raw, &size) || size < 21 ||
        memcmp(raw, "c1", 3) != 0 || raw[19] != '\0')
        return status_set(st, STATUS_INVALID_ARGUMENT, "INVALID_PAGE_TOKEN",
                          "page_token is not a token this service issued");
    char digest[65];
    const char *parts[] = {"SearchBooks", query_folded, NULL};
    text_sha256_hex(parts, digest);
    if (memcmp(raw + 3, digest, 16) != 0)
        return status_set(st, STATUS_INVALID_ARGUMENT, "INVALID_PAGE_TOKEN",
                          "page_token belongs to a different query");
    const char *title = (const char *)raw + 20;
    size_t title_length = strnlen(title, size - 20);
    if (20 + title_length >= size)
        return status_set(st, STATUS_INVALID_ARGUMENT, "INVALID_PAGE_TOKEN",
                          "page_token is not a token this service issued");
    cursor->title_folded = arena_strndup(a, title, title_length);
    cursor->book_id = arena_strndup(a, title + title_length + 1, size - 20 - title_length - 1);
    if (cursor->title_folded == NULL || cursor->book_id == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    *has_cursor = true;
    return STATUS_OK;
}

status_code catalog_search_parse(arena *a, const char *query, int32_t page_size,
                                 const char *page_token, catalog_search *out, status *st) {
    size_t query_length = query ? strlen(query) : 0;
    if (query_length > CATALOG_QUERY_MAX)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_TOO_LONG",
                          "query is %zu bytes long; at most %d are allowed", query_length,
                          CATALOG_QUERY_MAX);
    if (catalog_page_size(page_size, &out->page_size, st))
        return st->code;
    catalog_fold(query, out->query_folded, sizeof out->query_folded);
    return catalog_page_token_decode(a, page_token, out->query_folded, &out->cursor,
                                     &out->has_cursor, st);
}
