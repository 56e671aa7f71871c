/* workloads.h - the services' workloads as load plans, and the data they need: books
 * registered through the API, one reader (and token) per load slot, mypage pages filled by
 * real borrows. Slot i always acts as reader bench-<i> and borrows its own book, so
 * concurrent cycles never contend for one record. */
#ifndef BENCH_WORKLOADS_H
#define BENCH_WORKLOADS_H

#include <grpc/slice.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "load.h"

enum {
    FIXTURE_MAX_SLOTS = 256,
    FIXTURE_MYPAGE_USERS = 16,  /* readers whose pages GetMypage reads */
    FIXTURE_MYPAGE_LOANS = 2,   /* books each of them holds */
    FIXTURE_ID_MAX = 80,
};

typedef struct fixture {
    const char *catalog; /* "127.0.0.1:port" */
    const char *lending;
    const char *mypage; /* NULL: not running */
    char run_tag[16];   /* makes request ids unique per run */

    char *admin_bearer; /* "Bearer ..." */
    char *mypage_bearers[FIXTURE_MYPAGE_USERS];
    grpc_slice admin;
    grpc_slice readers[FIXTURE_MAX_SLOTS]; /* bench-<i> */
    grpc_slice mypage_readers[FIXTURE_MYPAGE_USERS];

    int book_count;
    char (*book_ids)[FIXTURE_ID_MAX];
    grpc_slice *get_book_requests;
    char saga_books[FIXTURE_MAX_SLOTS][FIXTURE_ID_MAX];
    grpc_slice *search_requests;
    int search_request_count;
    grpc_slice mypage_requests[FIXTURE_MAX_SLOTS];        /* slot i: its own page */
    grpc_slice mypage_reader_requests[FIXTURE_MYPAGE_USERS];

    /* per slot, touched only by the thread running the slot */
    uint64_t random[FIXTURE_MAX_SLOTS];
    uint64_t cycles[FIXTURE_MAX_SLOTS];
    char last_loan[FIXTURE_MAX_SLOTS][FIXTURE_ID_MAX];
    grpc_slice get_loan_requests[FIXTURE_MAX_SLOTS];
    int get_loan_owners[FIXTURE_MAX_SLOTS];
    int get_loan_count;

    /* seeding */
    int seed_index[FIXTURE_MAX_SLOTS];
    atomic_int next_seed;
    const char *seed_prefix;
    int seed_copies;
    char (*seed_into)[FIXTURE_ID_MAX];
} fixture;

/* Mints the tokens (private_key_file signs them). Returns false with a message on stderr. */
bool fixture_init(fixture *f, const char *private_key_file, const char *catalog,
                  const char *lending, const char *mypage);
void fixture_destroy(fixture *f);

/* Registers book_count books (the search corpus) and one book per slot for the borrow
 * cycles, with the load client at the given shape; waits until search sees the last one. */
bool fixture_seed_books(fixture *f, int book_count, int connections, int streams,
                        bench_result *result);
/* Each mypage reader borrows FIXTURE_MYPAGE_LOANS books; waits (up to wait_ms) until
 * GetMypage shows them. */
bool fixture_fill_mypages(fixture *f, int64_t wait_ms);
/* GetLoan requests for the loans the borrow cycles made (false if no slot has one). */
bool fixture_prepare_get_loan(fixture *f, int slots);

typedef enum workload_kind {
    WORKLOAD_GET_BOOK,
    WORKLOAD_SEARCH_BOOKS,
    WORKLOAD_GET_MYPAGE,
    WORKLOAD_BORROW_RETURN,
    WORKLOAD_MIXED,
    WORKLOAD_GET_LOAN,
    WORKLOAD_HOLD_CYCLE, /* PlaceHold on a free copy (READY), BorrowBook collects it, ReturnBook */
} workload_kind;

/* The plan and the targets of a workload; targets has room for 3. */
void workload_plan(fixture *f, workload_kind kind, load_plan *plan, const char **targets,
                   size_t *target_count);
const char *workload_name(workload_kind kind);

#endif
