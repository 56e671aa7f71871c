/* workloads.c - requests are packed once (or per call where they must be unique) and handed
 * to the load as slices; replies are decoded only where the next step needs them. */
#include "workloads.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "library/catalog/v1/catalog.pb-c.h"
#include "library/lending/v1/lending.pb-c.h"
#include "library/mypage/v1/mypage.pb-c.h"
#include "rpc_client.h"
#include "token.h"

/* One method table for every plan; a plan only calls what it needs. */
enum {
    METHOD_GET_BOOK,
    METHOD_SEARCH_BOOKS,
    METHOD_REGISTER_BOOK,
    METHOD_BORROW_BOOK,
    METHOD_RETURN_BOOK,
    METHOD_GET_LOAN,
    METHOD_GET_MYPAGE,
    METHOD_PLACE_HOLD,
    METHOD_COUNT,
};
enum { TARGET_CATALOG, TARGET_LENDING, TARGET_MYPAGE };

static const char *const methods[METHOD_COUNT] = {
    "/library.catalog.v1.CatalogService/GetBook",
    "/library.catalog.v1.CatalogService/SearchBooks",
    "/library.catalog.v1.CatalogService/RegisterBook",
    "/library.lending.v1.LendingService/BorrowBook",
    "/library.lending.v1.LendingService/ReturnBook",
    "/library.lending.v1.LendingService/GetLoan",
    "/library.mypage.v1.MypageService/GetMypage",
    "/library.lending.v1.LendingService/PlaceHold",
};
static const int method_targets[METHOD_COUNT] = {
    TARGET_CATALOG, TARGET_CATALOG, TARGET_CATALOG, TARGET_LENDING,
    TARGET_LENDING, TARGET_LENDING, TARGET_MYPAGE, TARGET_LENDING,
};

/* Titles are three words of this list, so a one-word query matches about 1 book in 20. */
static const char *const words[] = {
    "river",  "stone",   "garden", "winter", "silver", "shadow", "harbor", "forest",
    "empire", "lantern", "desert", "mirror", "thunder", "island", "crown",  "falcon",
    "ember",  "meadow",  "signal", "orchard", "glacier", "compass", "violet", "anchor",
    "quartz", "willow",  "lotus",  "canyon", "beacon", "cobalt",  "harvest", "marble",
    "nebula", "prairie", "raven",  "saffron", "tundra", "velvet", "zephyr", "atlas",
    "bramble", "citadel", "dune",  "echo",   "fjord",  "granite", "horizon", "ivory",
    "jasmine", "kestrel", "lagoon", "monsoon", "nomad", "obsidian", "pilgrim", "quill",
    "rune",   "summit",  "timber", "umber",  "vortex", "wander", "yonder", "zenith",
};
enum { WORD_COUNT = sizeof words / sizeof words[0] };

static uint64_t next_random(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 2685821657736338717ull;
}

static grpc_slice pack(const ProtobufCMessage *message) {
    size_t size = protobuf_c_message_get_packed_size(message);
    grpc_slice slice = grpc_slice_malloc(size);
    protobuf_c_message_pack(message, GRPC_SLICE_START_PTR(slice));
    return slice;
}

static grpc_slice bearer_slice(const char *bearer) {
    return grpc_slice_from_copied_string(bearer);
}

/* --- setup ----------------------------------------------------------------------------- */

bool fixture_init(fixture *f, const char *private_key_file, const char *catalog,
                  const char *lending, const char *mypage) {
    memset(f, 0, sizeof *f);
    f->catalog = catalog;
    f->lending = lending;
    f->mypage = mypage;
    snprintf(f->run_tag, sizeof f->run_tag, "r%ld", (long)time(NULL) % 100000000);
    atomic_init(&f->next_seed, 0);
    f->admin_bearer = token_bearer(private_key_file, "bench-admin", true);
    if (f->admin_bearer == NULL) {
        fprintf(stderr, "bench: cannot sign tokens with %s\n", private_key_file);
        return false;
    }
    f->admin = bearer_slice(f->admin_bearer);
    for (int i = 0; i < FIXTURE_MAX_SLOTS; i++) {
        char subject[32];
        snprintf(subject, sizeof subject, "bench-%d", i);
        char *bearer = token_bearer(private_key_file, subject, false);
        if (bearer == NULL)
            return false;
        f->readers[i] = bearer_slice(bearer);
        free(bearer);
        f->random[i] = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        Library__Mypage__V1__GetMypageRequest request = LIBRARY__MYPAGE__V1__GET_MYPAGE_REQUEST__INIT;
        request.user_id = subject;
        f->mypage_requests[i] = pack(&request.base);
    }
    for (int u = 0; u < FIXTURE_MYPAGE_USERS; u++) {
        char subject[32];
        snprintf(subject, sizeof subject, "bench-page-%d", u);
        f->mypage_bearers[u] = token_bearer(private_key_file, subject, false);
        if (f->mypage_bearers[u] == NULL)
            return false;
        f->mypage_readers[u] = bearer_slice(f->mypage_bearers[u]);
        Library__Mypage__V1__GetMypageRequest request = LIBRARY__MYPAGE__V1__GET_MYPAGE_REQUEST__INIT;
        request.user_id = subject;
        f->mypage_reader_requests[u] = pack(&request.base);
    }
    f->search_request_count = WORD_COUNT;
    f->search_requests = calloc(WORD_COUNT, sizeof *f->search_requests);
    if (f->search_requests == NULL)
        return false;
    for (int w = 0; w < WORD_COUNT; w++) {
        Library__Catalog__V1__SearchBooksRequest request =
            LIBRARY__CATALOG__V1__SEARCH_BOOKS_REQUEST__INIT;
        request.query = (char *)words[w];
        request.page_size = 20;
        f->search_requests[w] = pack(&request.base);
    }
    return true;
}

void fixture_destroy(fixture *f) {
    if (f->admin_bearer == NULL)
        return;
    grpc_slice_unref(f->admin);
    free(f->admin_bearer);
    for (int i = 0; i < FIXTURE_MAX_SLOTS; i++) {
        grpc_slice_unref(f->readers[i]);
        grpc_slice_unref(f->mypage_requests[i]);
    }
    for (int i = 0; i < f->get_loan_count; i++)
        grpc_slice_unref(f->get_loan_requests[i]);
    for (int u = 0; u < FIXTURE_MYPAGE_USERS; u++) {
        grpc_slice_unref(f->mypage_readers[u]);
        grpc_slice_unref(f->mypage_reader_requests[u]);
        free(f->mypage_bearers[u]);
    }
    for (int w = 0; f->search_requests && w < f->search_request_count; w++)
        grpc_slice_unref(f->search_requests[w]);
    free(f->search_requests);
    for (int b = 0; f->get_book_requests && b < f->book_count; b++)
        grpc_slice_unref(f->get_book_requests[b]);
    free(f->get_book_requests);
    free(f->book_ids);
    memset(f, 0, sizeof *f);
}

/* --- plans ------------------------------------------------------------------------------ */

static void make_title(int i, char *out, size_t size) {
    uint64_t state = 0x2545F4914F6CDD1Dull ^ (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
    const char *a = words[next_random(&state) % WORD_COUNT];
    const char *b = words[next_random(&state) % WORD_COUNT];
    const char *c = words[next_random(&state) % WORD_COUNT];
    snprintf(out, size, "The %s %s of %s %d", a, b, c, i);
}

static void make_isbn(const char *prefix, int i, char *out, size_t size) {
    snprintf(out, size, "978-%d-%08d", prefix[0] == 'c' ? 1 : 2, i);
}

static void register_begin(void *state, int slot, load_request *request) {
    fixture *f = state;
    int i = atomic_fetch_add(&f->next_seed, 1);
    f->seed_index[slot] = i;
    char title[96], isbn[32], author[32], request_id[64];
    if (f->seed_prefix[0] == 'c')
        make_title(i, title, sizeof title);
    else
        snprintf(title, sizeof title, "Saga book %d", i);
    make_isbn(f->seed_prefix, i, isbn, sizeof isbn);
    snprintf(author, sizeof author, "Author %d", i % 500);
    snprintf(request_id, sizeof request_id, "%s-%s-%d", f->run_tag, f->seed_prefix, i);
    Library__Catalog__V1__RegisterBookRequest message =
        LIBRARY__CATALOG__V1__REGISTER_BOOK_REQUEST__INIT;
    message.isbn = isbn;
    message.title = title;
    message.author = author;
    message.copies = f->seed_copies;
    message.request_id = request_id;
    request->method = METHOD_REGISTER_BOOK;
    request->message = pack(&message.base);
    request->authorization = &f->admin;
}

static void get_book_begin(void *state, int slot, load_request *request) {
    fixture *f = state;
    int book = (int)(next_random(&f->random[slot]) % (uint64_t)f->book_count);
    request->method = METHOD_GET_BOOK;
    request->message = grpc_slice_ref(f->get_book_requests[book]);
    request->authorization = &f->readers[slot];
}

static void search_begin(void *state, int slot, load_request *request) {
    fixture *f = state;
    int word = (int)(next_random(&f->random[slot]) % (uint64_t)f->search_request_count);
    request->method = METHOD_SEARCH_BOOKS;
    request->message = grpc_slice_ref(f->search_requests[word]);
    request->authorization = &f->readers[slot];
}

static void get_mypage_begin(void *state, int slot, load_request *request) {
    fixture *f = state;
    int user = slot % FIXTURE_MYPAGE_USERS;
    request->method = METHOD_GET_MYPAGE;
    request->message = grpc_slice_ref(f->mypage_reader_requests[user]);
    request->authorization = &f->mypage_readers[user];
}

static void borrow_begin(void *state, int slot, load_request *request) {
    fixture *f = state;
    char request_id[64];
    snprintf(request_id, sizeof request_id, "%s-c%d-%llu", f->run_tag, slot,
             (unsigned long long)f->cycles[slot]++);
    Library__Lending__V1__BorrowBookRequest message = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    message.book_id = f->saga_books[slot];
    message.request_id = request_id;
    request->method = METHOD_BORROW_BOOK;
    request->message = pack(&message.base);
    request->authorization = &f->readers[slot];
}

/* A hold on the slot's own book, which has a free copy: READY at once; the reply collects it
 * with BorrowBook and gives it back. */
static void hold_begin(void *state, int slot, load_request *request) {
    fixture *f = state;
    char request_id[64];
    snprintf(request_id, sizeof request_id, "%s-h%d-%llu", f->run_tag, slot,
             (unsigned long long)f->cycles[slot]++);
    Library__Lending__V1__PlaceHoldRequest message = LIBRARY__LENDING__V1__PLACE_HOLD_REQUEST__INIT;
    message.book_id = f->saga_books[slot];
    message.request_id = request_id;
    request->method = METHOD_PLACE_HOLD;
    request->message = pack(&message.base);
    request->authorization = &f->readers[slot];
}

static void get_loan_begin(void *state, int slot, load_request *request) {
    fixture *f = state;
    int loan = slot % f->get_loan_count;
    request->method = METHOD_GET_LOAN;
    request->message = grpc_slice_ref(f->get_loan_requests[loan]);
    request->authorization = &f->readers[f->get_loan_owners[loan]]; /* only they may read it */
}

/* 90% reads (GetBook, and GetMypage every other read when mypage runs), 10% a borrow and
 * its return. */
static void mixed_begin(void *state, int slot, load_request *request) {
    fixture *f = state;
    uint64_t dice = next_random(&f->random[slot]) % 20;
    if (dice < 2)
        borrow_begin(state, slot, request);
    else if (f->mypage != NULL && dice % 2 == 1)
        get_mypage_begin(state, slot, request);
    else
        get_book_begin(state, slot, request);
}

static load_step reply(void *state, int slot, int method, const uint8_t *bytes, size_t size,
                       load_request *next) {
    fixture *f = state;
    switch (method) {
    case METHOD_REGISTER_BOOK: {
        Library__Catalog__V1__Book *book = library__catalog__v1__book__unpack(NULL, size, bytes);
        if (book == NULL)
            return LOAD_FAILED;
        snprintf(f->seed_into[f->seed_index[slot]], FIXTURE_ID_MAX, "%s", book->book_id);
        library__catalog__v1__book__free_unpacked(book, NULL);
        return LOAD_DONE;
    }
    case METHOD_PLACE_HOLD: {
        Library__Lending__V1__Hold *hold = library__lending__v1__hold__unpack(NULL, size, bytes);
        bool ready = hold != NULL && hold->status == LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_READY;
        if (hold)
            library__lending__v1__hold__free_unpacked(hold, NULL);
        if (!ready)
            return LOAD_FAILED;
        char request_id[64];
        snprintf(request_id, sizeof request_id, "%s-hc%d-%llu", f->run_tag, slot,
                 (unsigned long long)f->cycles[slot]);
        Library__Lending__V1__BorrowBookRequest message = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
        message.book_id = f->saga_books[slot];
        message.request_id = request_id;
        next->method = METHOD_BORROW_BOOK;
        next->message = pack(&message.base);
        next->authorization = &f->readers[slot];
        return LOAD_CONTINUE;
    }
    case METHOD_BORROW_BOOK: {
        Library__Lending__V1__Loan *loan = library__lending__v1__loan__unpack(NULL, size, bytes);
        if (loan == NULL)
            return LOAD_FAILED;
        bool active = loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE;
        if (active) {
            snprintf(f->last_loan[slot], FIXTURE_ID_MAX, "%s", loan->loan_id);
            Library__Lending__V1__ReturnBookRequest message =
                LIBRARY__LENDING__V1__RETURN_BOOK_REQUEST__INIT;
            message.loan_id = loan->loan_id;
            next->method = METHOD_RETURN_BOOK;
            next->message = pack(&message.base);
            next->authorization = &f->readers[slot];
        }
        library__lending__v1__loan__free_unpacked(loan, NULL);
        return active ? LOAD_CONTINUE : LOAD_FAILED;
    }
    case METHOD_RETURN_BOOK: {
        Library__Lending__V1__Loan *loan = library__lending__v1__loan__unpack(NULL, size, bytes);
        bool returned =
            loan != NULL && loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED;
        if (loan)
            library__lending__v1__loan__free_unpacked(loan, NULL);
        return returned ? LOAD_DONE : LOAD_FAILED;
    }
    default:
        /* Reads: an OK status with a message is success; the content is not checked on the
         * hot path, the smoke run checks a sample before it starts. */
        (void)bytes;
        return LOAD_DONE;
    }
}

const char *workload_name(workload_kind kind) {
    switch (kind) {
    case WORKLOAD_GET_BOOK: return "GetBook";
    case WORKLOAD_SEARCH_BOOKS: return "SearchBooks";
    case WORKLOAD_GET_MYPAGE: return "GetMypage";
    case WORKLOAD_BORROW_RETURN: return "BorrowBook+ReturnBook";
    case WORKLOAD_MIXED: return "Mixed 90/10";
    case WORKLOAD_GET_LOAN: return "GetLoan";
    case WORKLOAD_HOLD_CYCLE: return "PlaceHold+BorrowBook+ReturnBook";
    }
    return "?";
}

void workload_plan(fixture *f, workload_kind kind, load_plan *plan, const char **targets,
                   size_t *target_count) {
    memset(plan, 0, sizeof *plan);
    plan->methods = methods;
    plan->method_targets = method_targets;
    plan->method_count = METHOD_COUNT;
    plan->state = f;
    plan->reply = reply;
    targets[TARGET_CATALOG] = f->catalog;
    targets[TARGET_LENDING] = f->lending;
    /* Channels connect on first use: a mypage that is not running is never dialled. */
    targets[TARGET_MYPAGE] = f->mypage ? f->mypage : f->catalog;
    *target_count = 3;
    switch (kind) {
    case WORKLOAD_GET_BOOK: plan->begin = get_book_begin; break;
    case WORKLOAD_SEARCH_BOOKS: plan->begin = search_begin; break;
    case WORKLOAD_GET_MYPAGE: plan->begin = get_mypage_begin; break;
    case WORKLOAD_BORROW_RETURN: plan->begin = borrow_begin; break;
    case WORKLOAD_MIXED: plan->begin = mixed_begin; break;
    case WORKLOAD_GET_LOAN: plan->begin = get_loan_begin; break;
    case WORKLOAD_HOLD_CYCLE: plan->begin = hold_begin; break;
    }
}

/* --- seeding ---------------------------------------------------------------------------- */

static bool seed(fixture *f, const char *prefix, int count, int copies, char (*into)[FIXTURE_ID_MAX],
                 int connections, int streams, bench_result *result) {
    load_plan plan;
    const char *targets[3];
    size_t target_count = 0;
    workload_plan(f, WORKLOAD_GET_BOOK, &plan, targets, &target_count);
    plan.begin = register_begin;
    atomic_store(&f->next_seed, 0);
    f->seed_prefix = prefix;
    f->seed_copies = copies;
    f->seed_into = into;
    load_options options = {.targets = targets, .target_count = target_count,
                            .connections = connections, .streams = streams,
                            .max_operations = (uint64_t)count};
    char name[48];
    snprintf(name, sizeof name, "RegisterBook (%s)", prefix);
    if (load_run(name, &options, &plan, result) != 0 || result->errors > 0) {
        fprintf(stderr, "bench: registering books failed: %s\n", result->first_error);
        return false;
    }
    for (int i = 0; i < count; i++)
        if (into[i][0] == '\0') {
            fprintf(stderr, "bench: book %d of %d was not registered\n", i, count);
            return false;
        }
    return true;
}

static bool search_finds(rpc_client *client, const char *bearer, const char *query) {
    arena *a = arena_create(0);
    Library__Catalog__V1__SearchBooksRequest request = LIBRARY__CATALOG__V1__SEARCH_BOOKS_REQUEST__INIT;
    request.query = (char *)query;
    ProtobufCMessage *response = NULL;
    status st;
    rpc_call_options options = {.timeout_ms = 5000, .authorization = bearer};
    bool found = rpc_client_call(client, methods[METHOD_SEARCH_BOOKS], &request.base,
                                 &library__catalog__v1__search_books_response__descriptor, a,
                                 &response, &options, &st) == STATUS_OK &&
                 ((Library__Catalog__V1__SearchBooksResponse *)response)->n_books > 0;
    arena_destroy(a);
    return found;
}

bool fixture_seed_books(fixture *f, int book_count, int connections, int streams,
                        bench_result *result) {
    f->book_ids = calloc((size_t)book_count, sizeof *f->book_ids);
    f->get_book_requests = calloc((size_t)book_count, sizeof *f->get_book_requests);
    if (f->book_ids == NULL || f->get_book_requests == NULL)
        return false;
    if (!seed(f, "corpus", book_count, 3, f->book_ids, connections, streams, result))
        return false;
    f->book_count = book_count;
    for (int i = 0; i < book_count; i++) {
        Library__Catalog__V1__GetBookRequest request = LIBRARY__CATALOG__V1__GET_BOOK_REQUEST__INIT;
        request.book_id = f->book_ids[i];
        f->get_book_requests[i] = pack(&request.base);
    }
    bench_result saga;
    if (!seed(f, "saga", FIXTURE_MAX_SLOTS, 20, f->saga_books, connections, streams, &saga))
        return false;

    /* The search index follows the bucket through a watcher: wait until it has the last
     * book of each set. */
    rpc_client *client = NULL;
    if (rpc_client_create(f->catalog, 5000, &client, NULL) != STATUS_OK)
        return false;
    char last_corpus[32], last_saga[32];
    make_isbn("corpus", book_count - 1, last_corpus, sizeof last_corpus);
    make_isbn("saga", FIXTURE_MAX_SLOTS - 1, last_saga, sizeof last_saga);
    bool found = false;
    for (int attempt = 0; attempt < 600 && !found; attempt++) {
        found = search_finds(client, f->admin_bearer, last_corpus) &&
                search_finds(client, f->admin_bearer, last_saga);
        if (!found)
            usleep(100000);
    }
    rpc_client_destroy(client);
    if (!found)
        fprintf(stderr, "bench: SearchBooks did not find the registered books within 60 s\n");
    return found;
}

bool fixture_fill_mypages(fixture *f, int64_t wait_ms) {
    if (f->mypage == NULL)
        return false;
    rpc_client *lending = NULL, *mypage = NULL;
    bool ok = rpc_client_create(f->lending, 10000, &lending, NULL) == STATUS_OK &&
              rpc_client_create(f->mypage, 5000, &mypage, NULL) == STATUS_OK;
    arena *a = arena_create(0);
    for (int u = 0; ok && u < FIXTURE_MYPAGE_USERS; u++) {
        for (int k = 0; ok && k < FIXTURE_MYPAGE_LOANS; k++) {
            int book = (u * FIXTURE_MYPAGE_LOANS + k) % f->book_count;
            char request_id[64];
            snprintf(request_id, sizeof request_id, "%s-page-%d-%d", f->run_tag, u, k);
            Library__Lending__V1__BorrowBookRequest request =
                LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
            request.book_id = f->book_ids[book];
            request.request_id = request_id;
            ProtobufCMessage *response = NULL;
            status st;
            rpc_call_options options = {.timeout_ms = 10000, .authorization = f->mypage_bearers[u]};
            if (rpc_client_call(lending, methods[METHOD_BORROW_BOOK], &request.base,
                                &library__lending__v1__loan__descriptor, a, &response, &options,
                                &st) != STATUS_OK) {
                fprintf(stderr, "bench: BorrowBook for a mypage reader failed: %s\n", st.message);
                ok = false;
            }
            arena_reset(a);
        }
    }
    /* The page follows the loan events: wait until every reader sees their loans. */
    int64_t waited = 0;
    for (int u = 0; ok && u < FIXTURE_MYPAGE_USERS;) {
        Library__Mypage__V1__GetMypageRequest request = LIBRARY__MYPAGE__V1__GET_MYPAGE_REQUEST__INIT;
        char subject[32];
        snprintf(subject, sizeof subject, "bench-page-%d", u);
        request.user_id = subject;
        ProtobufCMessage *response = NULL;
        status st;
        rpc_call_options options = {.timeout_ms = 5000, .authorization = f->mypage_bearers[u]};
        bool shown = rpc_client_call(mypage, methods[METHOD_GET_MYPAGE], &request.base,
                                     &library__mypage__v1__mypage__descriptor, a, &response,
                                     &options, &st) == STATUS_OK &&
                     ((Library__Mypage__V1__Mypage *)response)->borrowed_count >=
                         FIXTURE_MYPAGE_LOANS;
        arena_reset(a);
        if (shown) {
            u++;
            continue;
        }
        if (waited >= wait_ms) {
            fprintf(stderr, "bench: mypage of %s does not show its %d loans after %lld ms (%s)\n",
                    subject, FIXTURE_MYPAGE_LOANS, (long long)wait_ms, st.message);
            ok = false;
            break;
        }
        usleep(100000);
        waited += 100;
    }
    arena_destroy(a);
    rpc_client_destroy(lending);
    rpc_client_destroy(mypage);
    return ok;
}

bool fixture_prepare_get_loan(fixture *f, int slots) {
    for (int i = 0; i < f->get_loan_count; i++)
        grpc_slice_unref(f->get_loan_requests[i]);
    f->get_loan_count = 0;
    for (int i = 0; i < slots && i < FIXTURE_MAX_SLOTS; i++) {
        if (f->last_loan[i][0] == '\0')
            continue;
        Library__Lending__V1__GetLoanRequest request = LIBRARY__LENDING__V1__GET_LOAN_REQUEST__INIT;
        request.loan_id = f->last_loan[i];
        f->get_loan_owners[f->get_loan_count] = i;
        f->get_loan_requests[f->get_loan_count++] = pack(&request.base);
    }
    return f->get_loan_count > 0;
}
