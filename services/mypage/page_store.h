/* page_store.h - the mypage projection in Redis (hiredis). Each change is applied by one Lua
 * script, atomically and idempotently (see page.h for the ordering rule). Pages live under a
 * generation, "mypage:<generation>:<base64url user id>", so a rebuild fills a fresh
 * generation while the old one keeps answering, then switches over in one step.
 *
 * The scripts derive page keys from the generation they read, so the store needs a
 * standalone Redis (or a primary with replicas), not Redis Cluster.
 *
 * Redis is reached through a small pool of connections with short timeouts: a Redis outage
 * gives UNAVAILABLE fast and marks the dependency "redis" down in health. Thread-safe. */
#ifndef MYPAGE_PAGE_STORE_H
#define MYPAGE_PAGE_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "health.h"
#include "page.h"
#include "redis_pipe.h"
#include "status.h"

typedef struct page_store page_store;

/* url: redis://host[:port][/db]; login (may be NULL) is copied. Connects lazily. health_report
 * (may be NULL) hears "redis" up or down. *out is the caller's (page_store_close). A call
 * whose connection Redis refuses (credentials) fails UNAVAILABLE with reason REDIS_AUTH. */
status_code page_store_open(const char *url, const redis_login *login, int64_t timeout_ms,
                            health *health_report, page_store **out, status *st);
void page_store_close(page_store *store); /* NULL is a no-op */

/* Applies the change of the event at stream sequence `sequence` to the pages in use, and to
 * the generation a rebuild is filling. *changed tells whether the page in use changed. */
status_code page_store_apply(page_store *store, const loan_change *change, uint64_t sequence,
                             bool *changed, status *st);
/* The same for a hold event: the user's hold, and the book's queue snapshot when the event
 * carries a newer one. *changed: the page in use or the snapshot changed. moved (may be NULL)
 * is called with each other user whose hold the new snapshot moved to another position. */
typedef void (*page_user_moved)(void *arg, const char *user_id);
status_code page_store_apply_hold(page_store *store, const hold_change *change, uint64_t sequence,
                                  bool *changed, page_user_moved moved, void *moved_arg, status *st);
/* The same for an account event: the account, and the fines of the loans it lists, when its
 * snapshot is newer than the page's. *changed: the page in use changed. */
status_code page_store_apply_account(page_store *store, const account_change *change, bool *changed,
                                     status *st);
/* Reads a user's page (an empty page when the user has none). */
status_code page_store_load(page_store *store, arena *a, const char *user_id,
                            Library__Mypage__V1__Mypage **out, status *st);
status_code page_store_ping(page_store *store, status *st);

/* The same read without waiting for Redis: the command is pipelined on one shared connection
 * and done(arg, ...) runs later on the pipe's thread with the page (in a) or the error
 * (UNAVAILABLE when Redis is down or slow). a must outlive the call to done. false when it
 * was not started (that connection is not up, or 1,024 reads wait already), and done will
 * not run: use page_store_load. */
typedef void (*page_loaded)(void *arg, status_code code, const status *st,
                            Library__Mypage__V1__Mypage *page);
bool page_store_load_async(page_store *store, arena *a, const char *user_id, page_loaded done,
                           void *arg);

/* Retention: a settled loan (RETURNED or CANCELED) leaves its page retention_ms after its final
 * event's occur time, with its renewals and fine, and a closed hold (FULFILLED, CANCELED,
 * EXPIRED) with its place time; open loans and holds never leave by age. The loan and hold
 * scripts keep each generation's settled items in one set ordered by that time, remove at once
 * an item whose final event is already older than the retention (a rebuild's replay, a late
 * delivery), and keep a mark "x:<loan id>" or "x:h:<hold id>" of each removed item so no later
 * event of it puts it back; page_store_sweep removes what came due since. 0 (the default)
 * keeps everything; the settled items are recorded anyway, so a retention set later applies
 * to them. */
void page_store_set_retention(page_store *store, int64_t retention_ms);
/* One bounded step of removal in the generation in use: at most limit loans and closed holds
 * leave, at most limit marks of items removed two retentions ago go, and a pass over the
 * pages goes one SCAN step (COUNT limit) further, entering settled items that pages stored by
 * an older release hold without an entry, as of the page's newest event (once per generation).
 * *more: a batch was full or the pass is not over, call again. removed (may be NULL) is called
 * with each user whose page lost a loan (a closed hold is not shown). Safe to run from several
 * replicas at once. A no-op while the retention is 0. */
status_code page_store_sweep(page_store *store, int64_t now_ms, int limit, bool *more, page_user_moved removed,
                             void *removed_arg, status *st);

/* Rebuild, in three steps: begin reserves a fresh generation that page_store_apply also
 * writes to from then on; the caller replays the event stream into it with
 * page_store_apply_to; switch makes it the generation in use and deletes the old pages.
 * A rebuild that fails calls abort, which deletes the pages of its generation unless that
 * is in use after all (a switch that went through though its reply was lost). A newer begin
 * takes over from an unfinished rebuild: the older one's switch then fails with ABORTED. */
status_code page_store_rebuild_begin(page_store *store, uint64_t *generation, status *st);
status_code page_store_apply_to(page_store *store, uint64_t generation, const loan_change *change,
                                uint64_t sequence, status *st);
status_code page_store_apply_hold_to(page_store *store, uint64_t generation, const hold_change *change,
                                     uint64_t sequence, status *st);
status_code page_store_apply_account_to(page_store *store, uint64_t generation, const account_change *change,
                                        status *st);
status_code page_store_rebuild_switch(page_store *store, uint64_t generation, status *st);
void page_store_rebuild_abort(page_store *store, uint64_t generation);

#endif
