/* book_index.c - a sorted array of entries for ordered scans plus an open-addressing hash
 * table from book id to entry for updates. */
#include "book_index.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

typedef struct indexed_book {
    book_entry book;        /* strings point into text below */
    char *title_folded, *author_folded, *isbn_digits;
    char text[];
} indexed_book;

struct book_index {
    pthread_rwlock_t lock;
    indexed_book **sorted;
    size_t count, capacity;
    indexed_book **slots; /* hash table, power-of-two size, linear probing, no tombstones */
    size_t slot_count;
};

static size_t slot_find(const book_index *index, const char *id) {
    size_t mask = index->slot_count - 1;
    size_t i = text_hash(id) & mask;
    while (index->slots[i] != NULL && strcmp(index->slots[i]->book.book_id, id) != 0)
        i = (i + 1) & mask;
    return i;
}

static bool slots_grow(book_index *index) {
    size_t count = index->slot_count ? index->slot_count * 2 : 64;
    indexed_book **old = index->slots;
    size_t old_count = index->slot_count;
    index->slots = calloc(count, sizeof *index->slots);
    if (index->slots == NULL) {
        index->slots = old;
        return false;
    }
    index->slot_count = count;
    for (size_t i = 0; i < old_count; i++)
        if (old[i])
            index->slots[slot_find(index, old[i]->book.book_id)] = old[i];
    free(old);
    return true;
}

/* Deletion in a linear-probing table: re-seat the entries of the probe run that follows. */
static void slot_delete(book_index *index, size_t i) {
    size_t mask = index->slot_count - 1;
    index->slots[i] = NULL;
    for (size_t j = (i + 1) & mask; index->slots[j] != NULL; j = (j + 1) & mask) {
        indexed_book *moved = index->slots[j];
        index->slots[j] = NULL;
        index->slots[slot_find(index, moved->book.book_id)] = moved;
    }
}

static int compare_key(const char *title_a, const char *id_a, const char *title_b, const char *id_b) {
    int c = strcmp(title_a, title_b);
    return c != 0 ? c : strcmp(id_a, id_b);
}

/* First position whose key is greater than (title, id) (strictly when after is true). */
static size_t lower_bound(const book_index *index, const char *title, const char *id, bool after) {
    size_t low = 0, high = index->count;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        const indexed_book *e = index->sorted[mid];
        int c = compare_key(e->title_folded, e->book.book_id, title, id);
        if (c < 0 || (after && c == 0))
            low = mid + 1;
        else
            high = mid;
    }
    return low;
}

book_index *book_index_create(void) {
    book_index *index = calloc(1, sizeof *index);
    if (index == NULL)
        return NULL;
    pthread_rwlock_init(&index->lock, NULL);
    if (!slots_grow(index)) {
        free(index);
        return NULL;
    }
    return index;
}

void book_index_destroy(book_index *index) {
    if (index == NULL)
        return;
    for (size_t i = 0; i < index->count; i++)
        free(index->sorted[i]);
    free(index->sorted);
    free(index->slots);
    pthread_rwlock_destroy(&index->lock);
    free(index);
}

void book_index_sort_key(const book_entry *book, char *title_folded, size_t size) {
    catalog_fold(book->title, title_folded, size);
}

static indexed_book *entry_build(const book_entry *book) {
    const char *id = book->book_id ? book->book_id : "", *isbn = book->isbn ? book->isbn : "";
    const char *title = book->title ? book->title : "", *author = book->author ? book->author : "";
    size_t id_n = strlen(id) + 1, isbn_n = strlen(isbn) + 1, title_n = strlen(title) + 1,
           author_n = strlen(author) + 1;
    indexed_book *e = malloc(sizeof *e + id_n + isbn_n + 2 * title_n + 2 * author_n + isbn_n);
    if (e == NULL)
        return NULL;
    e->book = *book;
    char *p = e->text;
    e->book.book_id = memcpy(p, id, id_n), p += id_n;
    e->book.isbn = memcpy(p, isbn, isbn_n), p += isbn_n;
    e->book.title = memcpy(p, title, title_n), p += title_n;
    e->book.author = memcpy(p, author, author_n), p += author_n;
    e->title_folded = p, catalog_fold(title, p, title_n), p += title_n;
    e->author_folded = p, catalog_fold(author, p, author_n), p += author_n;
    e->isbn_digits = p, catalog_isbn_digits(isbn, p, isbn_n);
    return e;
}

static void sorted_remove(book_index *index, const indexed_book *e) {
    size_t at = lower_bound(index, e->title_folded, e->book.book_id, false);
    if (at < index->count && index->sorted[at] == e) {
        memmove(&index->sorted[at], &index->sorted[at + 1],
                (index->count - at - 1) * sizeof *index->sorted);
        index->count--;
    }
}

status_code book_index_put(book_index *index, const book_entry *book, status *st) {
    indexed_book *fresh = entry_build(book);
    if (fresh == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    pthread_rwlock_wrlock(&index->lock);
    if ((index->count + 1) * 2 > index->slot_count && !slots_grow(index))
        goto out_of_memory;
    if (index->count == index->capacity) {
        size_t capacity = index->capacity ? index->capacity * 2 : 256;
        indexed_book **grown = realloc(index->sorted, capacity * sizeof *grown);
        if (grown == NULL)
            goto out_of_memory;
        index->sorted = grown;
        index->capacity = capacity;
    }
    size_t slot = slot_find(index, fresh->book.book_id);
    indexed_book *old = index->slots[slot];
    if (old != NULL) {
        if (old->book.revision >= fresh->book.revision) {
            pthread_rwlock_unlock(&index->lock);
            free(fresh);
            return STATUS_OK;
        }
        sorted_remove(index, old);
        free(old);
    }
    index->slots[slot] = fresh;
    size_t at = lower_bound(index, fresh->title_folded, fresh->book.book_id, false);
    memmove(&index->sorted[at + 1], &index->sorted[at], (index->count - at) * sizeof *index->sorted);
    index->sorted[at] = fresh;
    index->count++;
    pthread_rwlock_unlock(&index->lock);
    return STATUS_OK;

out_of_memory:
    pthread_rwlock_unlock(&index->lock);
    free(fresh);
    return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
}

void book_index_remove(book_index *index, const char *book_id, uint64_t revision) {
    pthread_rwlock_wrlock(&index->lock);
    size_t slot = slot_find(index, book_id);
    indexed_book *old = index->slots[slot];
    if (old != NULL && old->book.revision < revision) {
        sorted_remove(index, old);
        slot_delete(index, slot);
        free(old);
    }
    pthread_rwlock_unlock(&index->lock);
}

void book_index_each(book_index *index, void (*visit)(void *arg, const book_entry *book), void *arg) {
    pthread_rwlock_rdlock(&index->lock);
    for (size_t i = 0; i < index->count; i++)
        visit(arg, &index->sorted[i]->book);
    pthread_rwlock_unlock(&index->lock);
}

size_t book_index_count(book_index *index) {
    pthread_rwlock_rdlock(&index->lock);
    size_t count = index->count;
    pthread_rwlock_unlock(&index->lock);
    return count;
}

bool book_index_get(book_index *index, const char *book_id,
                    void (*visit)(void *arg, const book_entry *book), void *arg) {
    pthread_rwlock_rdlock(&index->lock);
    const indexed_book *e = index->slot_count ? index->slots[slot_find(index, book_id)] : NULL;
    if (e != NULL)
        visit(arg, &e->book);
    pthread_rwlock_unlock(&index->lock);
    return e != NULL;
}

size_t book_index_search(book_index *index, const char *query_folded, const catalog_cursor *cursor,
                         size_t limit, void (*visit)(void *arg, const book_entry *book), void *arg,
                         bool *more) {
    size_t visited = 0;
    *more = false;
    pthread_rwlock_rdlock(&index->lock);
    size_t at = cursor ? lower_bound(index, cursor->title_folded, cursor->book_id, true) : 0;
    for (; at < index->count; at++) {
        const indexed_book *e = index->sorted[at];
        if (!catalog_matches(query_folded, e->title_folded, e->author_folded, e->isbn_digits))
            continue;
        if (visited == limit) {
            *more = true;
            break;
        }
        visit(arg, &e->book);
        visited++;
    }
    pthread_rwlock_unlock(&index->lock);
    return visited;
}
