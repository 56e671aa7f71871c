/* catalog.h - the catalog's rules as plain functions: what a valid book is, how stock may
 * change, what a search matches and how a page token encodes a position. No I/O here, so
 * the unit tests call these directly. */
#ifndef CATALOG_CATALOG_H
#define CATALOG_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "field.h"
#include "status.h"

enum {
    CATALOG_TITLE_MAX = 512,
    CATALOG_AUTHOR_MAX = 256,
    CATALOG_ISBN_MAX = 32,
    CATALOG_QUERY_MAX = 256,
    CATALOG_BOOK_ID_MAX = FIELD_ID_MAX,
    CATALOG_MAX_COPIES = 100000,
    CATALOG_PAGE_SIZE_DEFAULT = 20,
    CATALOG_PAGE_SIZE_MAX = 100,
    CATALOG_APPLIED_REQUESTS_KEPT = 64,
};

/* Title and author: required, valid UTF-8 without control characters, within their maximum.
 * ISBN: optional; digits, hyphens, spaces and X. field names the field in the message. */
status_code catalog_check_title(const char *title, const char *field, bool required, status *st);
status_code catalog_check_author(const char *author, const char *field, bool required, status *st);
status_code catalog_check_isbn(const char *isbn, status *st);
status_code catalog_check_copies(int32_t copies, status *st);
/* Book ids are server-made (field_check_id): INVALID_ARGUMENT for anything else, NATS
 * subject wildcards included, before it reaches the store. */
status_code catalog_check_book_id(const char *book_id, status *st);

/* The checks of whole requests, one per method, shared by the handlers and the fuzz
 * harnesses (tests/fuzz). Each returns the first problem found, naming its field. */
status_code catalog_check_register(const char *title, const char *author, const char *isbn,
                                   int32_t copies, const char *request_id, status *st);
/* At least one of title, author and isbn must be set (NOTHING_TO_UPDATE otherwise). */
status_code catalog_check_update(const char *book_id, const char *title, const char *author,
                                 const char *isbn, status *st);
status_code catalog_check_adjust(const char *book_id, const char *request_id, status *st);

/* A new id: 20 random hex digits. With a request id, the id is derived from
 * (caller, request_id) instead, so a retried RegisterBook finds the book it made. */
void catalog_new_book_id(const char *caller, const char *request_id, char out[CATALOG_BOOK_ID_MAX + 1]);
/* sha256 of (method, caller, request_id) in hex: the key of an idempotent request. */
void catalog_request_key(const char *method, const char *caller, const char *request_id,
                         char out[65]);

/* Applies delta to (total, available). Withdrawing more copies than are on the shelf is
 * FAILED_PRECONDITION (reason COPIES_ON_LOAN); delta 0 or beyond the limits is
 * INVALID_ARGUMENT. Outputs are set only on success. */
status_code catalog_adjust_stock(int32_t total, int32_t available, int32_t delta,
                                 int32_t *new_total, int32_t *new_available, status *st);

/* Search: ASCII case-insensitive substring of title or author, or of the ISBN with
 * hyphens and spaces ignored. query_folded comes from catalog_fold. */
void catalog_fold(const char *text, char *out, size_t out_size);
bool catalog_matches(const char *query_folded, const char *title_folded,
                     const char *author_folded, const char *isbn_digits);
/* The ISBN with hyphens and spaces removed, upper-case X. */
void catalog_isbn_digits(const char *isbn, char *out, size_t out_size);

/* Page size: 0 -> default, above the maximum -> the maximum, negative -> INVALID_ARGUMENT. */
status_code catalog_page_size(int32_t requested, int32_t *out, status *st);

/* A page token is an opaque, URL-safe encoding of the last position returned (folded title,
 * book id) bound to the query it came from. */
typedef struct catalog_cursor {
    const char *title_folded;
    const char *book_id;
} catalog_cursor;
char *catalog_page_token_encode(arena *a, const char *query_folded, const catalog_cursor *cursor);
/* Empty token -> *has_cursor false. Garbage, or a token of another query -> INVALID_ARGUMENT
 * naming page_token. */
status_code catalog_page_token_decode(arena *a, const char *token, const char *query_folded,
                                      catalog_cursor *cursor, bool *has_cursor, status *st);

/* A SearchBooks request, checked and decoded: the query (at most CATALOG_QUERY_MAX bytes)
 * folded, the page size applied, the page token decoded against the query. */
typedef struct catalog_search {
    char query_folded[CATALOG_QUERY_MAX + 1];
    int32_t page_size;
    catalog_cursor cursor; /* valid when has_cursor; strings in the arena */
    bool has_cursor;
} catalog_search;
status_code catalog_search_parse(arena *a, const char *query, int32_t page_size,
                                 const char *page_token, catalog_search *out, status *st);

#endif
