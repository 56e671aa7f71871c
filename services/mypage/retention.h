/* retention.h - the sweeper that takes settled loans and closed holds off the pages once
 * RETENTION has passed (page_store_sweep), and tells the watchers of each page that lost a
 * loan.
 *
 * One thread per mypage process. It sweeps every min(retention / 10, 1 min), at least every
 * 1 s, in bounded steps until nothing more is due. Replicas may sweep at the same time: the
 * steps are atomic in Redis, and a loan leaves once. */
#ifndef MYPAGE_RETENTION_H
#define MYPAGE_RETENTION_H

#include <stdint.h>

#include "nats_connection.h"
#include "page_store.h"
#include "status.h"

typedef struct retention_sweeper retention_sweeper;

/* retention_ms 0 keeps every loan: no thread starts and *out is NULL. The store's retention
 * is set to retention_ms. *out is the caller's (retention_stop). */
status_code retention_start(nats_connection *connection, page_store *store, int64_t retention_ms,
                            retention_sweeper **out, status *st);
void retention_stop(retention_sweeper *sweeper); /* NULL is a no-op */

/* How often a sweep runs for a retention: min(retention / 10, 60 s), at least 1 s. */
int64_t retention_sweep_interval_ms(int64_t retention_ms);

#endif
