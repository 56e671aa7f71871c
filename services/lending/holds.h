/* holds.h - lending's part of holds: the Hold resource a reader sees (PlaceHold, CancelHold,
 * GetHold, ListHolds), the per-user limits, and following the catalog, which owns each
 * book's queue and the copies set aside (docs/decisions.md, "Holds"). Lending announces
 * HoldPlaced and HoldCanceled; the catalog answers HoldQueued, HoldReady, HoldExpired and
 * HoldReleased, each with the book's queue, which lending keeps for positions. */
#ifndef LENDING_HOLDS_H
#define LENDING_HOLDS_H

#include <stdbool.h>
#include <stdint.h>

#include "events.h"
#include "loan_store.h"
#include "open_loans.h"
#include "rpc_server.h"

typedef struct lending_handlers lending_handlers;

/* The four hold methods, for lending's method table. */
status_code holds_place_hold(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                             ProtobufCMessage **response, status *st);
status_code holds_cancel_hold(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                              ProtobufCMessage **response, status *st);
status_code holds_get_hold(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                           ProtobufCMessage **response, status *st);
status_code holds_list_holds(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                             ProtobufCMessage **response, status *st);

/* A catalog event about holds (HoldQueued, HoldReady, HoldExpired, HoldReleased): the hold
 * record, the user's open holds and the book's queue follow it. Idempotent. */
status_code holds_follow_catalog(loan_store *store, nats_connection *connection, arena *a, const event *e,
                                 status *st);

/* The loan took the set-aside copy of hold_id (CopyReserved named it): FULFILLED, out of the
 * user's open holds, HoldFulfilled announced. Idempotent. */
status_code holds_fulfil(loan_store *store, nats_connection *connection, arena *a, const char *hold_id,
                         const char *loan_id, status *st);

/* The copy of hold_id went to a loan that was canceled meanwhile (BorrowBook interrupted): the
 * catalog settled the hold when the loan took it, so it is CANCELED here too and leaves the
 * user's open holds. Idempotent. */
status_code holds_lost(loan_store *store, arena *a, const char *hold_id, status *st);

/* The reconciler's step for one hold: a WAITING hold the catalog never answered is announced
 * again (HoldPlaced), a canceled one it never confirmed too (HoldCanceled), with the attempt
 * its age gives. An open hold unchanged for announce_after_ms (half the retention; 0: never)
 * is announced again with an attempt of its own, which the catalog answers with the hold's
 * place in its queue, so the event stream, kept for the retention, always holds it. */
void holds_reconcile(loan_store *store, nats_connection *connection, arena *a, const char *hold_id,
                     int64_t now_ms, int64_t after_ms, int64_t announce_after_ms);

/* The hold in the terms of the reconciler's index of loans (open_loans.h): a WAITING hold the
 * catalog has not answered is PENDING, an open one it has is ACTIVE (no step, but open, so the
 * user record listing it is in order), a canceled one it has not confirmed is RETURNED without
 * the release confirmed. False for a settled hold, which the index forgets. */
bool holds_index_facts(const hold_record *record, open_loan_facts *facts);

/* A user record lists holds as open that the index has not seen open for RECONCILE_AFTER:
 * PlaceHold died between writing the user record and storing the hold, or the hold was
 * settled without the record hearing of it. A hold never stored is claimed as CANCELED (by
 * create, so a PlaceHold storing it later finds the claim); each settled one leaves the
 * record's open holds, so its slot is free again. */
void holds_reconcile_user(loan_store *store, nats_connection *connection, arena *a, const char *user_id,
                          const char *const *hold_ids, size_t count);

/* Registers library_holds_total and library_hold_wait_seconds, so they show from the start. */
void holds_metrics_register(void);

/* True when holds wait for the book (RenewLoan's HOLDS_WAITING). */
status_code holds_waiting(loan_store *store, const char *book_id, arena *a, bool *waiting, status *st);

#endif
