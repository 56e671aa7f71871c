/* decisions.c - the window, the archive and the filter of a book's loan decisions. */
#include "decisions.h"

#include <string.h>

const loan_decision *decisions_find(loan_decision *const *list, size_t count, const char *loan_id) {
    for (size_t i = count; i-- > 0;)
        if (strcmp(list[i]->loan_id, loan_id) == 0)
            return list[i];
    return NULL;
}

/* FNV-1a, 64 bits: stored filters depend on it, so it never changes. */
static uint64_t hash_id(const char *id) {
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return h;
}

/* The i-th bit of loan_id in a filter of `bits` bits (double hashing). */
static size_t bit_of(uint64_t h, int i, size_t bits) {
    uint64_t step = (h >> 32) | 1;
    return (size_t)((h + (uint64_t)i * step) % bits);
}

bool decisions_filter_may_hold(ProtobufCBinaryData filter, const char *loan_id) {
    if (filter.len == 0)
        return false;
    uint64_t h = hash_id(loan_id);
    for (int i = 0; i < DECISIONS_FILTER_HASHES; i++) {
        size_t bit = bit_of(h, i, filter.len * 8);
        if (!(filter.data[bit / 8] & (1u << (bit % 8))))
            return false;
    }
    return true;
}

bool decisions_filter_build(arena *a, const decision_archive *archive, ProtobufCBinaryData *filter) {
    *filter = (ProtobufCBinaryData){0};
    if (archive->n_decisions == 0)
        return true;
    uint8_t *bits = arena_alloc(a, DECISIONS_FILTER_BYTES);
    if (bits == NULL)
        return false;
    memset(bits, 0, DECISIONS_FILTER_BYTES);
    for (size_t d = 0; d < archive->n_decisions; d++) {
        uint64_t h = hash_id(archive->decisions[d]->loan_id);
        for (int i = 0; i < DECISIONS_FILTER_HASHES; i++) {
            size_t bit = bit_of(h, i, DECISIONS_FILTER_BYTES * 8);
            bits[bit / 8] |= (uint8_t)(1u << (bit % 8));
        }
    }
    *filter = (ProtobufCBinaryData){.len = DECISIONS_FILTER_BYTES, .data = bits};
    return true;
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
