/* book_index.h - the catalog's in-memory search index: every book, ordered by folded title
 * then book id, fed from the key-value bucket by a watcher. It is a cache: the bucket is the
 * truth, and an entry with an older revision never replaces a newer one. Thread-safe. */
#ifndef CATALOG_BOOK_INDEX_H
#define CATALOG_BOOK_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "status.h"

typedef struct book_entry {
    const char *book_id, *isbn, *title, *author;
    int32_t total_copies, available_copies, on_hold_copies;
    int32_t outbox_count;   /* hold events the record still has to publish */
    int64_t next_expiry_ms; /* the earliest expire time of its READY holds, 0: none */
    int64_t create_seconds, update_seconds;
    int32_t create_nanos, update_nanos;
    uint64_t revision;
} book_entry;

typedef struct book_index book_index;

book_index *book_index_create(void); /* NULL when out of memory */
void book_index_destroy(book_index *index); /* NULL is a no-op */

/* Inserts or replaces the book (strings are copied) unless the index already holds the same
 * or a newer revision of it. */
status_code book_index_put(book_index *index, const book_entry *book, status *st);
/* Removes the book unless the index holds a newer revision of it. */
void book_index_remove(book_index *index, const char *book_id, uint64_t revision);
size_t book_index_count(book_index *index);
/* Calls visit with the book (under the read lock: copy and return) and returns true, or
 * returns false when the index does not hold it. */
bool book_index_get(book_index *index, const char *book_id,
                    void (*visit)(void *arg, const book_entry *book), void *arg);

/* Calls visit for every book, in order, under the read lock (copy what you need and return). */
void book_index_each(book_index *index, void (*visit)(void *arg, const book_entry *book), void *arg);

/* Calls visit for up to limit books matching query_folded that come after cursor (NULL: from
 * the start), in order. *more tells whether further matches exist. visit runs under the read
 * lock: copy what you need and return. Returns the number visited. */
size_t book_index_search(book_index *index, const char *query_folded, const catalog_cursor *cursor,
                         size_t limit, void (*visit)(void *arg, const book_entry *book), void *arg,
                         bool *more);

/* The folded title of a book entry as the index orders it (for building cursors). */
void book_index_sort_key(const book_entry *book, char *title_folded, size_t size);

#endif
