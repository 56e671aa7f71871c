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

/* The reconciler's step for one hold: a WAITING hold the catalog never answered is announced
 * again (HoldPlaced), a canceled one it never confirmed too (HoldCanceled), with the attempt
 * its age gives. */
void holds_reconcile(loan_store *store, nats_connection *connection, arena *a, const char *hold_id,
                     int64_t now_ms, int64_t after_ms);

/* True when the hold needs the reconciler now or later (see holds_reconcile). */
bool holds_needs_step(const hold_record *record);

/* True when holds wait for the book (RenewLoan's HOLDS_WAITING). */
status_code holds_waiting(loan_store *store, const char *book_id, arena *a, bool *waiting, status *st);

#endif
