/* proxy.c - the cuttable TCP proxy: one thread accepts, and every connection gets two pump
 * threads, one per direction, each a blocking read-then-write loop. (One thread polling both
 * directions of every connection deadlocks once both ends write more than a socket buffer
 * holds at the same moment: it blocks writing to A while A blocks writing to it. JetStream
 * routes catching up do exactly that.) Cutting shuts every socket down, which ends the pumps. */
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
    int pumps_running; /* 0..2; the sockets are closed when the last one ends */
    bool used;
} proxy_link;

typedef struct pump {
    struct test_proxy *proxy;
    int link, from, to;
} pump;

struct test_proxy {
    int listener, port, upstream_port;
    int wake[2]; /* stops the accepting thread */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t changed; /* a pump ended */
    proxy_link links[MAX_LINKS];
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

/* Copies from -> to until either end is done, then shuts both down so the other pump ends too. */
static void *pump_main(void *arg) {
    pump *job = arg;
    test_proxy *p = job->proxy;
    char buffer[65536];
    for (;;) {
        ssize_t n = read(job->from, buffer, sizeof buffer);
        if (n <= 0)
            break;
        ssize_t sent = 0;
        while (sent < n) {
            ssize_t w = write(job->to, buffer + sent, (size_t)(n - sent));
            if (w <= 0)
                break;
            sent += w;
        }
        if (sent < n)
            break;
    }
    shutdown(job->from, SHUT_RDWR);
    shutdown(job->to, SHUT_RDWR);
    pthread_mutex_lock(&p->lock);
    proxy_link *link = &p->links[job->link];
    if (--link->pumps_running == 0) {
        close(link->client);
        close(link->upstream);
        link->used = false;
    }
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
    free(job);
    return NULL;
}

static bool start_pump(test_proxy *p, int link, int from, int to) {
    pump *job = malloc(sizeof *job);
    pthread_t thread;
    if (job == NULL)
        return false;
    *job = (pump){.proxy = p, .link = link, .from = from, .to = to};
    if (pthread_create(&thread, NULL, pump_main, job) != 0) {
        free(job);
        return false;
    }
    pthread_detach(thread);
    return true;
}

/* Under lock: a free slot for a new link, or -1. */
static int free_link(test_proxy *p) {
    for (int i = 0; i < MAX_LINKS; i++)
        if (!p->links[i].used)
            return i;
    return -1;
}

static void link_open(test_proxy *p, int client) {
    pthread_mutex_lock(&p->lock);
    int i = p->cut ? -1 : free_link(p);
    int upstream = i >= 0 ? connect_upstream(p->upstream_port) : -1;
    if (upstream < 0) {
        pthread_mutex_unlock(&p->lock);
        close(client);
        return;
    }
    p->links[i] = (proxy_link){.client = client, .upstream = upstream, .pumps_running = 2, .used = true};
    /* the pumps wait for the lock before they touch the link, so counting down here is safe */
    for (int direction = 0; direction < 2; direction++) {
        if (!start_pump(p, i, direction ? upstream : client, direction ? client : upstream)) {
            p->links[i].pumps_running--;
            shutdown(client, SHUT_RDWR); /* a pump already running ends and closes the link */
            shutdown(upstream, SHUT_RDWR);
        }
    }
    if (p->links[i].pumps_running == 0) {
        close(client);
        close(upstream);
        p->links[i].used = false;
    }
    pthread_mutex_unlock(&p->lock);
}

static void *accept_main(void *arg) {
    test_proxy *p = arg;
    for (;;) {
        struct pollfd fds[2] = {{.fd = p->wake[0], .events = POLLIN}, {.fd = p->listener, .events = POLLIN}};
        if (poll(fds, 2, -1) < 0)
            continue;
        if (fds[0].revents)
            return NULL;
        if (fds[1].revents & POLLIN) {
            int client = accept(p->listener, NULL, NULL);
            if (client >= 0)
                link_open(p, client);
        }
    }
}

test_proxy *test_proxy_start(int upstream_port) {
    test_proxy *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->upstream_port = upstream_port;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->changed, NULL);
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
    if (pthread_create(&p->thread, NULL, accept_main, p) != 0) {
        close(p->listener);
        close(p->wake[0]);
        close(p->wake[1]);
        free(p);
        return NULL;
    }
    p->port = ntohs(address.sin_port);
    return p;
}

int test_proxy_port(const test_proxy *p) {
    return p->port;
}

/* Under lock: shuts every link down and waits until their pumps have closed them. */
static void close_links(test_proxy *p) {
    for (int i = 0; i < MAX_LINKS; i++)
        if (p->links[i].used) {
            shutdown(p->links[i].client, SHUT_RDWR);
            shutdown(p->links[i].upstream, SHUT_RDWR);
        }
    for (int i = 0; i < MAX_LINKS; i++)
        while (p->links[i].used)
            pthread_cond_wait(&p->changed, &p->lock);
}

void test_proxy_cut(test_proxy *p, bool cut) {
    pthread_mutex_lock(&p->lock);
    p->cut = cut;
    if (cut)
        close_links(p);
    pthread_mutex_unlock(&p->lock);
}

void test_proxy_stop(test_proxy *p) {
    if (p == NULL)
        return;
    if (write(p->wake[1], "s", 1) != 1)
        shutdown(p->listener, SHUT_RDWR);
    pthread_join(p->thread, NULL);
    pthread_mutex_lock(&p->lock);
    p->cut = true;
    close_links(p);
    pthread_mutex_unlock(&p->lock);
    close(p->listener);
    close(p->wake[0]);
    close(p->wake[1]);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->changed);
    free(p);
}
