/* proxy.h - a TCP proxy on loopback that a test can cut: it forwards each connection to an
 * upstream port until cut, then closes every connection and refuses new ones (accepts and
 * closes them at once) until restored. One process's path to a server can be cut this way
 * while every other process keeps its own (a network partition of one replica). */
#ifndef TESTS_PROXY_H
#define TESTS_PROXY_H

#include <stdbool.h>

typedef struct test_proxy test_proxy;

/* Listens on a free loopback port and forwards to 127.0.0.1:upstream_port. NULL on failure. */
test_proxy *test_proxy_start(int upstream_port);
int test_proxy_port(const test_proxy *proxy);
/* cut true: close every connection now and refuse new ones; false: forward again. Returns
 * once the proxy has done it. */
void test_proxy_cut(test_proxy *proxy, bool cut);
void test_proxy_stop(test_proxy *proxy); /* closes everything; NULL is a no-op */

#endif
