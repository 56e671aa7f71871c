/* book_store.h - books in the JetStream key-value bucket "books" (key "book.<id>", value a
 * serialized BookRecord), with compare-and-set updates, plus the search index kept current by
 * a watcher on the bucket (and by this process's own writes, so a writer reads its writes). */
#ifndef CATALOG_BOOK_STORE_H
#define CATALOG_BOOK_STORE_H

#include <stdbool.h>

#include "arena.h"
#include "book_index.h"
#include "book_record.pb-c.h"
#include "decisions.h"
#include "nats_connection.h"
#include "status.h"

typedef struct book_store book_store;
typedef Library__Catalog__Internal__BookRecord book_record;

/* Opens (creating if needed) the bucket, loads every book into the index, and keeps
 * watching. *out is owned by the caller (book_store_close). */
status_code book_store_open(nats_connection *connection, int replicas, book_store **out,
                            status *st);
void book_store_close(book_store *store); /* NULL is a no-op */
book_index *book_store_index(book_store *store);

/* NOT_FOUND (reason BOOK_NOT_FOUND) when there is no such book. The record lives in a. */
status_code book_store_get(book_store *store, const char *book_id, arena *a, book_record **out,
                           status *st);
/* ALREADY_EXISTS when a book with this id exists. */
status_code book_store_create(book_store *store, const book_record *record, arena *a, status *st);

/* Changes a book in place; set *changed to false to write nothing. Runs again on a conflict. */
typedef status_code (*book_change)(void *arg, arena *a, book_record *record, bool *changed,
                                   status *st);
/* Read-modify-write with compare-and-set. *out is the record as stored afterwards. */
status_code book_store_update(book_store *store, const char *book_id, arena *a, book_change change,
                              void *arg, book_record **out, status *st);

/* The book's decision archive ("decided.<book_id>") and its revision; an empty one at
 * revision 0 when it was never written. */
status_code book_store_get_archive(book_store *store, const char *book_id, arena *a, decision_archive **out,
                                   uint64_t *revision, status *st);
/* Adds the window's older decisions to the archive (decisions_archive_merge) by
 * compare-and-set; *out and *revision: the archive as stored afterwards. */
status_code book_store_archive(book_store *store, const char *book_id, loan_decision *const *window, size_t count,
                               arena *a, decision_archive **out, uint64_t *revision, status *st);

#endif
