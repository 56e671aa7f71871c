/* redis_pipe.c - pipelined Redis commands on one connection: senders write under a lock and
 * queue their callback; one reader thread parses replies (hiredis's reader) and answers the
 * queue in order. Redis answers commands on a connection in the order they came, so the
 * queue's head is always the command the next reply belongs to. */
#include "redis_pipe.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "timestamp.h"

enum { READ_CHUNK = 16384, POLL_MS = 100, RECONNECT_PAUSE_MS = 200 };

typedef struct pending {
    redis_pipe_callback callback;
    void *arg;
    int64_t deadline_ms;
} pending;

struct redis_pipe {
    char host[256];
    int port, database;
    char user[128], password[512];
    int64_t timeout_ms;
    int capacity;
    pthread_mutex_t lock; /* fd and the queue; held while a command is written */
    int fd;               /* -1 while not connected */
    pending *queue;       /* a ring of capacity entries: head, then count after it */
    int head, count;
    redisReader *reader;  /* the reader thread's only */
    pthread_t thread;
    atomic_bool stopping;
};

static void pause_ms(int64_t ms) {
    struct timespec pause = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    nanosleep(&pause, NULL);
}

/* Runs one setup command; false (and why in error) when it is refused. */
static bool setup_command(redisContext *c, const char *what, int argc, const char **argv, char *error,
                          size_t error_size) {
    redisReply *reply = redisCommandArgv(c, argc, argv, NULL);
    bool ok = reply != NULL && reply->type != REDIS_REPLY_ERROR;
    if (!ok)
        snprintf(error, error_size, "Redis refused %s: %s", what,
                 reply != NULL ? reply->str : c->errstr);
    freeReplyObject(reply);
    return ok;
}

redisContext *redis_session_open(const char *host, int port, int database, const redis_login *login,
                                 struct timeval timeout, char *error, size_t error_size) {
    redisContext *c = redisConnectWithTimeout(host, port, timeout);
    if (c == NULL || c->err) {
        snprintf(error, error_size, "%s", c != NULL ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, timeout);
    bool has_user = login != NULL && login->user != NULL && login->user[0] != '\0';
    bool has_password = login != NULL && login->password != NULL && login->password[0] != '\0';
    char what[160], number[16];
    snprintf(what, sizeof what, "the password of user '%s'", has_user ? login->user : "default");
    snprintf(number, sizeof number, "%d", database);
    /* AUTH user password for an ACL user; AUTH password for requirepass */
    const char *auth[3] = {"AUTH"};
    int auth_count = 1;
    if (has_user)
        auth[auth_count++] = login->user;
    if (has_password)
        auth[auth_count++] = login->password;
    const char *select[] = {"SELECT", number};
    bool ok = !has_password || setup_command(c, what, auth_count, auth, error, error_size);
    if (ok && database != 0)
        ok = setup_command(c, "SELECT", 2, select, error, error_size);
    if (!ok) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* A session's socket, kept when hiredis lets go of the rest. */
static int connect_fd(redis_pipe *p) {
    struct timeval timeout = {.tv_sec = p->timeout_ms / 1000, .tv_usec = (p->timeout_ms % 1000) * 1000};
    char error[256];
    redis_login login = {.user = p->user, .password = p->password};
    redisContext *c = redis_session_open(p->host, p->port, p->database, &login, timeout, error, sizeof error);
    return c != NULL ? redisFreeKeepFd(c) : -1;
}

/* Drops the connection and fails every command waiting on it (callbacks outside the lock). */
static void fail_all(redis_pipe *p, const char *error) {
    pthread_mutex_lock(&p->lock);
    int count = p->count;
    pending *failed = count > 0 ? malloc((size_t)count * sizeof *failed) : NULL;
    for (int i = 0; i < count && failed; i++)
        failed[i] = p->queue[(p->head + i) % p->capacity];
    p->head = 0;
    p->count = 0;
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
    pthread_mutex_unlock(&p->lock);
    redisReaderFree(p->reader);
    p->reader = redisReaderCreate();
    if (count > 0 && failed == NULL) {
        LOG_ERROR("redis pipe: out of memory failing %d commands; their calls end at their deadline", count);
        return;
    }
    for (int i = 0; i < count; i++)
        failed[i].callback(failed[i].arg, NULL, error);
    free(failed);
}

/* Hands one reply to the command at the head of the queue. false: a reply nobody asked for. */
static bool deliver(redis_pipe *p, redisReply *reply) {
    pthread_mutex_lock(&p->lock);
    if (p->count == 0) {
        pthread_mutex_unlock(&p->lock);
        return false;
    }
    pending head = p->queue[p->head];
    p->head = (p->head + 1) % p->capacity;
    p->count--;
    pthread_mutex_unlock(&p->lock);
    head.callback(head.arg, reply, NULL);
    return true;
}

/* true when the oldest command has waited past its deadline. */
static bool overdue(redis_pipe *p) {
    pthread_mutex_lock(&p->lock);
    bool late = p->count > 0 && p->queue[p->head].deadline_ms < timestamp_now_ms();
    pthread_mutex_unlock(&p->lock);
    return late;
}

static void *reader_main(void *arg) {
    redis_pipe *p = arg;
    char buffer[READ_CHUNK];
    while (!atomic_load(&p->stopping)) {
        pthread_mutex_lock(&p->lock);
        int fd = p->fd;
        pthread_mutex_unlock(&p->lock);
        if (fd < 0) {
            fd = connect_fd(p);
            if (fd < 0) {
                pause_ms(RECONNECT_PAUSE_MS);
                continue;
            }
            pthread_mutex_lock(&p->lock);
            p->fd = fd;
            pthread_mutex_unlock(&p->lock);
        }
        struct pollfd waiting = {.fd = fd, .events = POLLIN};
        int ready = poll(&waiting, 1, POLL_MS);
        if (ready < 0 && errno != EINTR) {
            fail_all(p, strerror(errno));
            continue;
        }
        if (ready > 0) {
            ssize_t n = read(fd, buffer, sizeof buffer);
            if (n <= 0) {
                fail_all(p, n == 0 ? "Redis closed the connection" : strerror(errno));
                continue;
            }
            redisReaderFeed(p->reader, buffer, (size_t)n);
            void *reply = NULL;
            int result;
            while ((result = redisReaderGetReply(p->reader, &reply)) == REDIS_OK && reply != NULL) {
                bool expected = deliver(p, reply);
                freeReplyObject(reply);
                reply = NULL;
                if (!expected) {
                    result = REDIS_ERR;
                    break;
                }
            }
            if (result != REDIS_OK) {
                fail_all(p, "Redis sent a reply that does not parse");
                continue;
            }
        }
        if (overdue(p))
            fail_all(p, "Redis did not answer in time");
    }
    fail_all(p, "the service is stopping");
    return NULL;
}

redis_pipe *redis_pipe_open(const char *host, int port, int database, const redis_login *login,
                            int64_t timeout_ms, int max_pending) {
    redis_pipe *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    snprintf(p->host, sizeof p->host, "%s", host);
    snprintf(p->user, sizeof p->user, "%s", login && login->user ? login->user : "");
    snprintf(p->password, sizeof p->password, "%s", login && login->password ? login->password : "");
    p->port = port;
    p->database = database;
    p->timeout_ms = timeout_ms > 0 ? timeout_ms : 500;
    p->capacity = max_pending > 0 ? max_pending : 1024;
    p->fd = -1;
    p->queue = calloc((size_t)p->capacity, sizeof *p->queue);
    p->reader = redisReaderCreate();
    atomic_init(&p->stopping, false);
    pthread_mutex_init(&p->lock, NULL);
    if (p->queue == NULL || p->reader == NULL || pthread_create(&p->thread, NULL, reader_main, p) != 0) {
        redisReaderFree(p->reader);
        pthread_mutex_destroy(&p->lock);
        free(p->queue);
        free(p);
        return NULL;
    }
    return p;
}

void redis_pipe_close(redis_pipe *p) {
    if (p == NULL)
        return;
    atomic_store(&p->stopping, true);
    pthread_join(p->thread, NULL);
    redisReaderFree(p->reader);
    pthread_mutex_destroy(&p->lock);
    free(p->queue);
    free(p);
}

/* Writes all of it (the socket has a send timeout); false when the connection broke. */
static bool write_all(int fd, const char *bytes, size_t size) {
    while (size > 0) {
        ssize_t n = send(fd, bytes, size, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        bytes += n;
        size -= (size_t)n;
    }
    return true;
}

bool redis_pipe_send(redis_pipe *p, int argc, const char **argv, const size_t *lengths,
                     redis_pipe_callback callback, void *arg) {
    char *command = NULL;
    int size = redisFormatCommandArgv(&command, argc, argv, lengths);
    if (size < 0)
        return false;
    pthread_mutex_lock(&p->lock);
    bool sent = p->fd >= 0 && p->count < p->capacity && !atomic_load(&p->stopping);
    if (sent) {
        p->queue[(p->head + p->count) % p->capacity] =
            (pending){callback, arg, timestamp_now_ms() + p->timeout_ms};
        p->count++;
        /* A half-written command would leave the stream unusable: end the connection and let
         * the reader thread fail everything queued, this command included. */
        if (!write_all(p->fd, command, (size_t)size))
            shutdown(p->fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&p->lock);
    redisFreeCommand(command);
    return sent;
}
