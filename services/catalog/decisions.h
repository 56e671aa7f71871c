/* decisions.h - the catalog's memory of the loans it decided, kept small where every saga step
 * rewrites it (issue 19 item 6). A book record keeps its newest decisions (the window) and a
 * Bloom filter; older ones live in the book's DecisionArchive ("decided.<book_id>"), written
 * once per DECISIONS_HOT decisions. A LoanRequested is answered from the window, or, when the
 * filter names its loan, from the archive; a loan neither names was never decided. Pure
 * functions over decoded records: saga.c does the reads and writes. */
#ifndef CATALOG_DECISIONS_H
#define CATALOG_DECISIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "book_record.pb-c.h"
#include "id_filter.h"

enum {
    DECISIONS_HOT = 32,           /* a book record keeps at least this many newest decisions */
    DECISIONS_HOT_MAX = 64,       /* past this many, the older ones move to the archive */
    DECISIONS_KEPT = 1024,        /* the archive keeps the newest this many (and so does a window
                                     whose archive cannot be written) */
};

typedef Library__Catalog__Internal__LoanDecision loan_decision;
typedef Library__Catalog__Internal__DecisionArchive decision_archive;
typedef Library__Catalog__Internal__BookRecord decisions_book;

/* The newest decision for loan_id in list (newest last), or NULL. */
const loan_decision *decisions_find(loan_decision *const *list, size_t count, const char *loan_id);

/* False when the filter surely does not name loan_id (always, for an empty filter); true when
 * it may. */
bool decisions_filter_may_hold(ProtobufCBinaryData filter, const char *loan_id);

/* The filter over every loan id of the archive, from a; false when out of memory. */
bool decisions_filter_build(arena *a, const decision_archive *archive, ProtobufCBinaryData *filter);

/* True when the record's window has grown past DECISIONS_HOT_MAX: time to archive. */
bool decisions_window_full(const decisions_book *record);

/* Adds the window's decisions but the newest DECISIONS_HOT to the archive, those it does not
 * hold yet, oldest first, keeping the newest DECISIONS_KEPT. *changed: the archive changed.
 * False when out of memory. */
bool decisions_archive_merge(arena *a, decision_archive *archive, loan_decision *const *window, size_t count,
                             bool *changed);

/* The archive at `revision` holds what the window moved: every window decision the archive
 * holds leaves the window, and the filter becomes the archive's, unless the record's filter
 * is already from this revision or a newer one. *changed: the record changed. False when out
 * of memory. */
bool decisions_drop_archived(arena *a, decisions_book *record, const decision_archive *archive, uint64_t revision,
                             bool *changed);

#endif
