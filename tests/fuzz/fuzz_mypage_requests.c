/* fuzz_mypage_requests.c - the MypageService requests (GetMypage, WatchMypage): protobuf-c
 * decoding into an arena as the rpc server does it, the user id checks every service applies
 * to a user id (length, UTF-8), and the empty page such a user gets, serialized.
 *
 * Input: one byte choosing the method, then the serialized request. */
#include <stdbool.h>

#include "../../services/mypage/page.h"
#include "arena.h"
#include "auth.h"
#include "fuzz.h"
#include "library/mypage/v1/mypage.pb-c.h"
#include "text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    const ProtobufCMessageDescriptor *type = data[0] % 2 == 0
                                                 ? &library__mypage__v1__get_mypage_request__descriptor
                                                 : &library__mypage__v1__watch_mypage_request__descriptor;
    arena *a = arena_create(0);
    FUZZ_CHECK(a != NULL);
    const ProtobufCMessage *request = arena_unpack(a, type, data + 1, size - 1);
    if (request != NULL) {
        /* Both requests are {string user_id = 1}. */
        const char *user_id = data[0] % 2 == 0
                                  ? ((const Library__Mypage__V1__GetMypageRequest *)(const void *)request)->user_id
                                  : ((const Library__Mypage__V1__WatchMypageRequest *)(const void *)request)->user_id;
        size_t length = strlen(user_id);
        if (length < AUTH_SUBJECT_MAX && text_is_valid_utf8(user_id, length, false)) {
            Library__Mypage__V1__Mypage *page = page_build(a, user_id, NULL, NULL, 0, 0);
            FUZZ_CHECK(page != NULL && page->n_loans == 0 && strcmp(page->user_id, user_id) == 0);
            size_t packed_size = 0;
            FUZZ_CHECK(arena_pack(a, &page->base, &packed_size) != NULL);
        }
    }
    arena_destroy(a);
    return 0;
}
