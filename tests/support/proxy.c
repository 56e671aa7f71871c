/* proxy.c - the cuttable TCP proxy: one thread polls the listening socket, a wake-up pipe
 * and both ends of every connection. */
#include "proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { MAX_LINKS = 64 };

typedef struct proxy_link {
    int client, upstream;
} proxy_link;

struct test_proxy {
    int listener, port, upstream_port;
    int wake[2]; /* commands: 'c' cut, 'r' restore, 's' stop; the thread answers on done[1] */
    int done[2];
    pthread_t thread;
    proxy_link links[MAX_LINKS];
    int link_count;
    bool cut;
};

static int connect_upstream(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd >= 0 && connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void link_close(test_proxy *p, int i) {
    close(p->links[i].client);
    close(p->links[i].upstream);
    p->links[i] = p->links[--p->link_count];
}

/* Copies what `from` has to `to`; false when either end is done. */
static bool forward(int from, int to) {
    char buffer[65536];
    ssize_t n = read(from, buffer, sizeof buffer);
    for (ssize_t sent = 0; n > 0 && sent < n;) {
        ssize_t w = write(to, buffer + sent, (size_t)(n - sent));
        if (w <= 0)
            return false;
        sent += w;
    }
    return n > 0;
}

static void *proxy_main(void *arg) {
    test_proxy *p = arg;
    for (;;) {
        struct pollfd fds[2 + 2 * MAX_LINKS];
        fds[0] = (struct pollfd){.fd = p->wake[0], .events = POLLIN};
        fds[1] = (struct pollfd){.fd = p->listener, .events = POLLIN};
        for (int i = 0; i < p->link_count; i++) {
            fds[2 + 2 * i] = (struct pollfd){.fd = p->links[i].client, .events = POLLIN};
            fds[3 + 2 * i] = (struct pollfd){.fd = p->links[i].upstream, .events = POLLIN};
        }
        int count = p->link_count;
        if (poll(fds, (nfds_t)(2 + 2 * count), -1) < 0)
            continue;
        if (fds[0].revents & POLLIN) {
            char command = 0;
            if (read(p->wake[0], &command, 1) == 1) {
                if (command == 'c' || command == 's')
                    while (p->link_count > 0)
                        link_close(p, 0);
                p->cut = command == 'c';
                if (write(p->done[1], &command, 1) != 1 || command == 's')
                    return NULL;
            }
            continue; /* the links changed under the poll set */
        }
        if (fds[1].revents & POLLIN) {
            int client = accept(p->listener, NULL, NULL);
            int upstream = client >= 0 && !p->cut && p->link_count < MAX_LINKS
                               ? connect_upstream(p->upstream_port)
                               : -1;
            if (upstream >= 0)
                p->links[p->link_count++] = (proxy_link){client, upstream};
            else if (client >= 0)
                close(client);
        }
        for (int i = count - 1; i >= 0; i--) {
            bool alive = true;
            if (fds[2 + 2 * i].revents)
                alive = forward(p->links[i].client, p->links[i].upstream);
            if (alive && fds[3 + 2 * i].revents)
                alive = forward(p->links[i].upstream, p->links[i].client);
            if (!alive)
                link_close(p, i);
        }
    }
}

test_proxy *test_proxy_start(int upstream_port) {
    test_proxy *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->upstream_port = upstream_port;
    p->listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t length = sizeof address;
    if (p->listener < 0 || bind(p->listener, (struct sockaddr *)&address, sizeof address) != 0 ||
        listen(p->listener, 64) != 0 ||
        getsockname(p->listener, (struct sockaddr *)&address, &length) != 0 || pipe(p->wake) != 0) {
        if (p->listener >= 0)
            close(p->listener);
        free(p);
        return NULL;
    }
    if (pipe(p->done) != 0 || pthread_create(&p->thread, NULL, proxy_main, p) != 0) {
        close(p->listener);
        free(p);
        return NULL;
    }
    p->port = ntohs(address.sin_port);
    return p;
}

int test_proxy_port(const test_proxy *p) {
    return p->port;
}

static void command(test_proxy *p, char c) {
    char answer = 0;
    if (write(p->wake[1], &c, 1) == 1 && read(p->done[0], &answer, 1) != 1)
        answer = 0;
}

void test_proxy_cut(test_proxy *p, bool cut) {
    command(p, cut ? 'c' : 'r');
}

void test_proxy_stop(test_proxy *p) {
    if (p == NULL)
        return;
    command(p, 's');
    pthread_join(p->thread, NULL);
    close(p->listener);
    close(p->wake[0]);
    close(p->wake[1]);
    close(p->done[0]);
    close(p->done[1]);
    free(p);
}
