/* mypage_service.h - MypageService's method table (names, message types, who may call each), without
 * state: what mypage_handlers_init serves, and what the authorization test checks every method
 * against. */
#ifndef MYPAGE_SERVICE_H
#define MYPAGE_SERVICE_H

#include "rpc_server.h"

extern const rpc_service mypage_rpc_service;

#endif
