/* events.h - domain events on the JetStream stream LIBRARY (subjects library.events.>):
 * publishing with a deterministic Nats-Msg-Id (a retried publish is deduplicated), and
 * durable pull consumers with explicit acks. Delivery is at least once: handlers must be
 * idempotent. */
#ifndef LIBSHARED_EVENTS_H
#define LIBSHARED_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "library/events/v1/events.pb-c.h"
#include "nats_connection.h"
#include "status.h"

typedef Library__Events__V1__Event event;

#define EVENTS_STREAM "LIBRARY"

/* Longest event id events_format_id makes, with its terminating zero. */
enum { EVENT_ID_MAX = 128 };

typedef Library__Events__V1__Event__BodyCase event_type;

/* The stream's subjects, one per event type (events_subject): lending's announcements are
 * under library.events.loan, the catalog's answers under library.events.copy. */
#define EVENTS_LOAN_SUBJECTS "library.events.loan.>"
#define EVENTS_COPY_SUBJECTS "library.events.copy.>"
#define EVENTS_ALL_SUBJECTS "library.events.>"
/* Lending's restatements of final loan events (EventsRestated), under neither filter above:
 * only mypage, which reads every subject, receives them. */
#define EVENTS_RESTATED_SUBJECT "library.events.restated"

/* The subject events of this type are published on ("library.events.loan.requested"), and
 * the kind their ids start with ("loan-requested"); NULL for a type the table lacks. */
const char *events_subject(event_type type);
const char *events_kind(event_type type);

/* The deterministic id of a saga step's announcement: "<kind>-<subject id>" for attempt 0,
 * "<kind>-<subject id>-r<attempt>" for a re-announcement. False when it does not fit or the
 * type has no kind. */
bool events_format_id(char *out, size_t size, event_type type, const char *subject_id, uint32_t attempt);

/* Which attempt a re-announcement of a step unanswered for age_ms is, when steps are redone
 * once they are after_ms old: 0 (the first announcement's id, so a publish that was stored
 * after all is deduplicated) until the step is twice after_ms old, then one more each time
 * its age doubles. Stateless and the same on every replica, so two replicas redoing a step
 * in the same round publish the same id; the doubling bounds the events a long outage adds. */
uint32_t events_attempt_for_age(int64_t age_ms, int64_t after_ms);

/* Creates the stream when it does not exist (file storage, limits retention, replayable). */
status_code events_ensure_stream(nats_connection *connection, int replicas, status *st);

/* Makes the stream keep each event for max_age_ms (0: for good), changing the stream's
 * MaxAge when it says otherwise. Lending calls it with RETENTION (docs/decisions.md,
 * "Retention"); the other services create the stream without a limit and leave it be. */
status_code events_keep_for(nats_connection *connection, int64_t max_age_ms, status *st);

/* Publishes the event on its type's subject and waits for the stream's acknowledgement. The
 * message id is event->event_id; traceparent travels in the envelope and as a header. */
status_code events_publish(nats_connection *connection, const event *e, status *st);

/* Publishes e, whose body the caller has set, in a saga step's envelope: the event id of its
 * type for subject_id and attempt (the same on every retry of one attempt, so JetStream drops
 * duplicates), the attempt, correlation_id, traceparent (may be NULL) and the time now. */
status_code events_publish_step(nats_connection *connection, event *e, const char *subject_id, uint32_t attempt,
                                const char *correlation_id, const char *traceparent, status *st);

/* The handler's answer decides the message's fate: STATUS_OK acks it; UNAVAILABLE, ABORTED,
 * DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED ask for redelivery after a pause; anything else is
 * a message that can never succeed: it is logged and terminated. */
typedef status_code (*event_handler)(void *arg, const event *e, uint64_t stream_sequence,
                                     status *st);

typedef struct event_consumer event_consumer;

typedef struct event_consumer_options {
    const char *durable;        /* consumer name shared by every replica of a service */
    const char *filter_subject; /* e.g. "library.events.loan.>" */
    event_handler handler;
    void *arg;
    int64_t ack_wait_ms;        /* 0: 30000 */
    int64_t retry_delay_ms;     /* pause before a redelivery; 0: 500 */
    /* Threads that handle the events of one fetched batch at once (0: 1). Handlers must then
     * tolerate any order within a batch; ours do (compare-and-set, idempotent merges). */
    int workers;
    /* A durable that exists with another filter subject (made by an older release) is
     * deleted and made anew, delivering from the start of the stream: updating its filter
     * (nats-server 2.9.10 accepts that) would go on from where it was, and skip every newly
     * wanted event the old filter passed over. Only for idempotent handlers, which then see
     * every event again. */
    bool restart_on_new_filter;
} event_consumer_options;

/* Creates (or binds to) the durable consumer and starts a thread that fetches and handles. */
status_code event_consumer_start(nats_connection *connection, const event_consumer_options *options,
                                 event_consumer **out, status *st);
void event_consumer_stop(event_consumer *consumer); /* NULL is a no-op; waits for the thread */

/* Replays every event on filter_subject from the start of the stream, in stream order, until
 * it has caught up with the end of the stream; then returns. Uses an ordered consumer that
 * leaves nothing behind on the server. A handler answering a retryable code (see
 * event_handler) is called again after a pause, for up to a minute; any other error ends the
 * replay with it. *count (may be NULL) is the number of events handled. */
status_code events_replay(nats_connection *connection, const char *filter_subject,
                          event_handler handler, void *arg, uint64_t *count, status *st);

#endif
