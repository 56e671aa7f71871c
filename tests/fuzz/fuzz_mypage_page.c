/* fuzz_mypage_page.c - building a Mypage from a user's Redis hash (page_build): the hash is
 * written by our Lua scripts, but a page must never crash the service whatever the hash holds
 * (an old format, a hand edit, a bug elsewhere): loans, their renewals ("r:"), holds ("h:"),
 * the queue snapshots the load script adds ("q:"), the account ("a") and the loans' fines
 * ("f:").
 *
 * Input: lines; the first is the user id, then field and value lines alternate (HGETALL
 * order). */
#include <stdbool.h>

#include "../../services/mypage/page.h"
#include "arena.h"
#include "fuzz.h"

enum { FIELDS_MAX = 64, NOW_SECONDS = 1700000000 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *lines[2 * FIELDS_MAX + 1];
    size_t count = 0;
    const uint8_t *rest = data;
    size_t rest_size = size;
    do {
        lines[count++] = fuzz_split(rest, rest_size, '\n', &rest, &rest_size);
    } while (rest_size > 0 && count < 2 * FIELDS_MAX + 1);
    size_t pairs = (count - 1) / 2;
    const char *fields[FIELDS_MAX], *values[FIELDS_MAX];
    for (size_t i = 0; i < pairs; i++) {
        fields[i] = lines[1 + 2 * i];
        values[i] = lines[2 + 2 * i];
    }

    arena *a = arena_create(0);
    FUZZ_CHECK(a != NULL);
    Library__Mypage__V1__Mypage *page = page_build(a, lines[0], fields, values, pairs, NOW_SECONDS);
    FUZZ_CHECK(page != NULL);
    FUZZ_CHECK(strcmp(page->user_id, lines[0]) == 0);
    FUZZ_CHECK(page->n_loans <= pairs);
    FUZZ_CHECK(page->overdue_count <= page->borrowed_count);
    FUZZ_CHECK((size_t)page->borrowed_count <= page->n_loans);
    for (size_t i = 0; i < page->n_loans; i++)
        FUZZ_CHECK(page->loans[i] != NULL && page->loans[i]->loan_id != NULL && page->loans[i]->fine >= 0);
    FUZZ_CHECK(page->balance >= 0);
    for (size_t i = 0; i < page->n_fines; i++)
        FUZZ_CHECK(page->fines[i] != NULL);
    FUZZ_CHECK(page->n_holds <= pairs);
    for (size_t i = 0; i < page->n_holds; i++) {
        const Library__Mypage__V1__MypageHold *hold = page->holds[i];
        FUZZ_CHECK(hold != NULL && hold->hold_id != NULL && hold->book_id != NULL && hold->book_title != NULL);
        FUZZ_CHECK(hold->status == LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_WAITING ||
                   hold->status == LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_READY);
        FUZZ_CHECK(hold->position >= 0 && (size_t)hold->position <= size);
        FUZZ_CHECK(hold->status == LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_WAITING || hold->position == 0);
    }
    /* What GetMypage sends: the page must serialize. */
    size_t packed_size = 0;
    FUZZ_CHECK(arena_pack(a, &page->base, &packed_size) != NULL || packed_size == 0);
    arena_destroy(a);
    for (size_t i = 0; i < count; i++)
        free(lines[i]);
    return 0;
}
