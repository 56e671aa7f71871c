/* redis_pipe.h - one Redis connection shared by many threads, with its commands pipelined:
 * a caller writes its command and returns at once; the pipe's reader thread matches the
 * replies to the commands in order and runs each command's callback. GetMypage answers
 * through it without holding a thread while Redis works; the projection and everything that
 * may block use page_store's pool of connections instead. */
#ifndef MYPAGE_REDIS_PIPE_H
#define MYPAGE_REDIS_PIPE_H

#include <hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct redis_pipe redis_pipe;

/* Who mypage is to Redis: an ACL user and its password (AUTH user password), a password
 * alone (requirepass, the "default" user), or neither. The strings are copied. */
typedef struct redis_login {
    const char *user;
    const char *password;
} redis_login;

/* A hiredis connection with timeouts, authenticated (AUTH) and on database (SELECT when not
 * 0). NULL with why in error: unreachable, or a refusal such as WRONGPASS, which then starts
 * with "Redis refused". */
redisContext *redis_session_open(const char *host, int port, int database, const redis_login *login,
                                 struct timeval timeout, char *error, size_t error_size);

/* reply is NULL when the command failed (the connection was lost, or Redis did not answer in
 * timeout_ms); error then says why. The pipe frees the reply after the callback returns.
 * Callbacks run on the pipe's thread, one at a time; they may send more commands. */
typedef void (*redis_pipe_callback)(void *arg, redisReply *reply, const char *error);

/* Starts the reader thread, which connects (redis_session_open) and reconnects after a failure. At most max_pending commands wait for their replies at once. NULL: no memory. */
redis_pipe *redis_pipe_open(const char *host, int port, int database, const redis_login *login,
                            int64_t timeout_ms, int max_pending);
/* Fails what is pending (their callbacks run), stops the thread, closes. NULL is a no-op. */
void redis_pipe_close(redis_pipe *pipe);

/* Writes the command; callback(arg, ...) runs once its reply (or failure) is in. false when
 * it was not sent, and the callback will not run: not connected, or max_pending wait. */
bool redis_pipe_send(redis_pipe *pipe, int argc, const char **argv, const size_t *lengths,
                     redis_pipe_callback callback, void *arg);

#endif
