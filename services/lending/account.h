/* account.h - the account over gRPC (GetAccount, PayFines, WaiveFine), its events, and the
 * reconciler's visit to an account that needs a fine assessed or an event published. The
 * rules are fines.h; this is their I/O. */
#ifndef LENDING_ACCOUNT_H
#define LENDING_ACCOUNT_H

#include <stdint.h>

#include "arena.h"
#include "loan_store.h"
#include "rpc_server.h"
#include "status.h"

status_code account_get_account(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                                ProtobufCMessage **response, status *st);
status_code account_pay_fines(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                              ProtobufCMessage **response, status *st);
status_code account_waive_fine(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                               ProtobufCMessage **response, status *st);

/* Publishes the events in the stored record's account outbox (each carrying the account as
 * of its newest change) and takes them out of the stored record. record is the user's record
 * as the caller last wrote or read it. */
status_code account_publish(loan_store *store, nats_connection *connection, arena *a, const char *user_id,
                            const user_record *record, status *st);

/* The reconciler's visit: the fines brought to now_ms, the retention's work done
 * (account_refresh), and every event in the outbox published. Errors are logged; the next
 * round tries again. */
void account_reconcile(loan_store *store, nats_connection *connection, arena *a, const char *user_id,
                       int64_t now_ms, int64_t retention_ms);

#endif
