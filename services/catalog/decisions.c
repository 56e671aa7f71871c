/* decisions.c - the window, the archive and the filter of a book's loan decisions. */
#include "decisions.h"

#include <string.h>

#include "id_filter.h"

const loan_decision *decisions_find(loan_decision *const *list, size_t count, const char *loan_id) {
    for (size_t i = count; i-- > 0;)
        if (strcmp(list[i]->loan_id, loan_id) == 0)
            return list[i];
    return NULL;
}

bool decisions_filter_may_hold(ProtobufCBinaryData filter, const char *loan_id) {
    return id_filter_may_hold(filter, loan_id);
}

bool decisions_filter_build(arena *a, const decision_archive *archive, ProtobufCBinaryData *filter) {
    const char **ids = arena_alloc(a, (archive->n_decisions + 1) * sizeof *ids);
    if (ids == NULL)
        return false;
    for (size_t i = 0; i < archive->n_decisions; i++)
        ids[i] = archive->decisions[i]->loan_id;
    return id_filter_build(a, ids, archive->n_decisions, filter);
}

bool decisions_window_full(const decisions_book *record) {
    return record->n_recent_decisions > DECISIONS_HOT_MAX;
}

bool decisions_archive_merge(arena *a, decision_archive *archive, loan_decision *const *window, size_t count,
                             bool *changed) {
    *changed = false;
    size_t moving = count > DECISIONS_HOT ? count - DECISIONS_HOT : 0;
    for (size_t i = 0; i < moving; i++) {
        if (decisions_find(archive->decisions, archive->n_decisions, window[i]->loan_id) != NULL)
            continue;
        if (!arena_append_kept(a, &archive->decisions, &archive->n_decisions, window[i], DECISIONS_KEPT))
            return false;
        *changed = true;
    }
    return true;
}

bool decisions_drop_archived(arena *a, decisions_book *record, const decision_archive *archive, uint64_t revision,
                             bool *changed) {
    *changed = false;
    size_t kept = 0;
    for (size_t i = 0; i < record->n_recent_decisions; i++) {
        loan_decision *decision = record->recent_decisions[i];
        if (decisions_find(archive->decisions, archive->n_decisions, decision->loan_id) != NULL)
            *changed = true;
        else
            record->recent_decisions[kept++] = decision;
    }
    record->n_recent_decisions = kept;
    if (!*changed || record->archive_revision >= revision)
        return true; /* the record's filter covers this archive already, or nothing left */
    if (!decisions_filter_build(a, archive, &record->decided_filter))
        return false;
    record->archive_revision = revision;
    return true;
}
