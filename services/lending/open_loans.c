/* open_loans.c - two chained hash tables keyed by string: loans and user records. */
#include "open_loans.h"

#include <stdlib.h>
#include <string.h>

#include "text.h"

typedef struct node {
    struct node *next;
    uint64_t hash;
    char *key; /* points into the node's own allocation */
} node;

typedef struct table {
    node **slots;
    size_t mask; /* slot count - 1, a power of two minus one; 0 with no slots yet */
    size_t count;
} table;

typedef struct loan_node {
    node base;
    open_loan_facts facts;
} loan_node;

typedef struct user_node {
    node base;
    size_t count;
    char **loan_ids;   /* one allocation: the pointers, stray_since, then the strings */
    int64_t *stray_since_ms; /* per loan id: first open_loans_users_due that found it stray; 0: not */
} user_node;

typedef struct account_node {
    node base;
    int64_t next_ms;
} account_node;

struct open_loans {
    table loans;
    table users;
    table accounts; /* user keys whose account needs a visit, and from when */
    int64_t announce_ms; /* an ACTIVE loan unchanged this long is due (0: never) */
};

static node **table_find(table *t, const char *key, uint64_t hash) {
    if (t->slots == NULL)
        return NULL;
    node **at = &t->slots[hash & t->mask];
    for (; *at; at = &(*at)->next)
        if ((*at)->hash == hash && strcmp((*at)->key, key) == 0)
            return at;
    return at; /* the empty link at the end of the chain: *at == NULL */
}

static const node *table_get(const table *t, const char *key) {
    node **at = table_find((table *)t, key, text_hash(key));
    return at ? *at : NULL;
}

/* Doubles the slots when the chains average more than one node. */
static bool table_grow(table *t) {
    if (t->slots != NULL && t->count < t->mask + 1)
        return true;
    size_t slots = t->slots ? (t->mask + 1) * 2 : 64;
    node **grown = calloc(slots, sizeof *grown);
    if (grown == NULL)
        return t->slots != NULL; /* longer chains, still correct */
    for (size_t i = 0; t->slots && i <= t->mask; i++) {
        for (node *n = t->slots[i], *next; n; n = next) {
            next = n->next;
            n->next = grown[n->hash & (slots - 1)];
            grown[n->hash & (slots - 1)] = n;
        }
    }
    free(t->slots);
    t->slots = grown;
    t->mask = slots - 1;
    return true;
}

/* The node for key, created with size bytes (zeroed, key copied) when missing; NULL when out
 * of memory. */
static node *table_upsert(table *t, const char *key, size_t size) {
    if (!table_grow(t))
        return NULL;
    uint64_t hash = text_hash(key);
    node **at = table_find(t, key, hash);
    if (*at)
        return *at;
    size_t length = strlen(key);
    node *n = calloc(1, size + length + 1);
    if (n == NULL)
        return NULL;
    n->hash = hash;
    n->key = (char *)n + size;
    memcpy(n->key, key, length + 1);
    *at = n;
    t->count++;
    return n;
}

static void free_node(node *n, bool user) {
    if (user)
        free(((user_node *)n)->loan_ids);
    free(n);
}

static void table_remove(table *t, const char *key, bool user) {
    node **at = table_find(t, key, text_hash(key));
    if (at == NULL || *at == NULL)
        return;
    node *gone = *at;
    *at = gone->next;
    t->count--;
    free_node(gone, user);
}

static void table_clear(table *t, bool user) {
    for (size_t i = 0; t->slots && i <= t->mask; i++) {
        for (node *n = t->slots[i], *next; n; n = next) {
            next = n->next;
            free_node(n, user);
        }
        t->slots[i] = NULL;
    }
    t->count = 0;
}

open_loans *open_loans_create(void) {
    return calloc(1, sizeof(open_loans));
}

void open_loans_destroy(open_loans *index) {
    if (index == NULL)
        return;
    open_loans_clear(index);
    free(index->loans.slots);
    free(index->users.slots);
    free(index->accounts.slots);
    free(index);
}

void open_loans_clear(open_loans *index) {
    table_clear(&index->loans, false);
    table_clear(&index->users, true);
    table_clear(&index->accounts, false);
}

static bool settled(const open_loan_facts *facts) {
    return facts->state == LOAN_CANCELED || (facts->state == LOAN_RETURNED && facts->release_confirmed);
}

bool open_loans_set_loan(open_loans *index, const char *loan_id, const open_loan_facts *facts) {
    if (facts == NULL || settled(facts)) {
        table_remove(&index->loans, loan_id, false);
        return true;
    }
    loan_node *n = (loan_node *)table_upsert(&index->loans, loan_id, sizeof(loan_node));
    if (n == NULL)
        return false;
    n->facts = *facts;
    return true;
}

bool open_loans_set_user(open_loans *index, const char *user_key, const char *const *loan_ids,
                         size_t count) {
    if (count == 0) {
        table_remove(&index->users, user_key, true);
        return true;
    }
    size_t size = count * (sizeof(char *) + sizeof(int64_t));
    for (size_t i = 0; i < count; i++)
        size += strlen(loan_ids[i]) + 1;
    char **ids = malloc(size);
    if (ids == NULL)
        return false;
    int64_t *since = (int64_t *)(ids + count);
    char *text = (char *)(since + count);
    for (size_t i = 0; i < count; i++) {
        size_t length = strlen(loan_ids[i]) + 1;
        ids[i] = memcpy(text, loan_ids[i], length);
        text += length;
    }
    user_node *n = (user_node *)table_upsert(&index->users, user_key, sizeof(user_node));
    if (n == NULL) {
        free(ids);
        return false;
    }
    for (size_t i = 0; i < count; i++) { /* a loan id still listed keeps how long it was stray */
        since[i] = 0;
        for (size_t j = 0; j < n->count; j++)
            if (strcmp(n->loan_ids[j], ids[i]) == 0)
                since[i] = n->stray_since_ms[j];
    }
    free(n->loan_ids);
    n->loan_ids = ids;
    n->stray_since_ms = since;
    n->count = count;
    return true;
}

size_t open_loans_loan_count(const open_loans *index) {
    return index->loans.count;
}

size_t open_loans_user_count(const open_loans *index) {
    return index->users.count;
}

void open_loans_announce_every(open_loans *index, int64_t ms) {
    index->announce_ms = ms;
}

static bool loan_due(const open_loan_facts *facts, int64_t now_ms, int64_t after_ms, int64_t announce_ms) {
    bool stale = now_ms - facts->update_time_ms >= after_ms;
    switch (facts->state) {
    case LOAN_PENDING:
    case LOAN_RETURNED: /* not settled, so the release is not confirmed yet */
        return stale;
    case LOAN_ACTIVE:
        return (facts->renewal_unpublished && stale) ||
               (announce_ms > 0 && now_ms - facts->update_time_ms >= announce_ms) ||
               (!facts->overdue_published && facts->due_seconds != 0 &&
                lending_is_overdue(LOAN_ACTIVE, facts->due_seconds, now_ms / 1000));
    case LOAN_CANCELED:
        break;
    }
    return false;
}

size_t open_loans_due(const open_loans *index, int64_t now_ms, int64_t after_ms,
                      open_loans_visit visit, void *arg) {
    size_t visited = 0;
    const table *t = &index->loans;
    for (size_t i = 0; t->slots && i <= t->mask; i++) {
        for (const node *n = t->slots[i]; n; n = n->next) {
            if (loan_due(&((const loan_node *)n)->facts, now_ms, after_ms, index->announce_ms)) {
                visit(arg, n->key);
                visited++;
            }
        }
    }
    return visited;
}

/* Is this loan id, listed by a user record, one the index does not hold as PENDING or ACTIVE? */
static bool stray(const open_loans *index, const char *loan_id) {
    const loan_node *loan = (const loan_node *)table_get(&index->loans, loan_id);
    return loan == NULL || (loan->facts.state != LOAN_PENDING && loan->facts.state != LOAN_ACTIVE);
}

size_t open_loans_users_due(open_loans *index, int64_t now_ms, int64_t after_ms,
                            open_loans_user_visit visit, void *arg) {
    size_t visited = 0;
    table *t = &index->users;
    const char *due[OPEN_LOANS_USER_MAX];
    for (size_t i = 0; t->slots && i <= t->mask; i++) {
        for (node *n = t->slots[i]; n; n = n->next) {
            user_node *user = (user_node *)n;
            size_t count = 0;
            for (size_t j = 0; j < user->count; j++) {
                if (!stray(index, user->loan_ids[j])) {
                    user->stray_since_ms[j] = 0;
                    continue;
                }
                if (user->stray_since_ms[j] == 0)
                    user->stray_since_ms[j] = now_ms;
                if (now_ms - user->stray_since_ms[j] >= after_ms && count < OPEN_LOANS_USER_MAX)
                    due[count++] = user->loan_ids[j];
            }
            if (count > 0) {
                visit(arg, n->key, due, count);
                visited++;
            }
        }
    }
    return visited;
}

bool open_loans_set_account(open_loans *index, const char *user_key, int64_t next_ms) {
    if (next_ms <= 0) {
        table_remove(&index->accounts, user_key, false);
        return true;
    }
    account_node *n = (account_node *)table_upsert(&index->accounts, user_key, sizeof(account_node));
    if (n == NULL)
        return false;
    n->next_ms = next_ms;
    return true;
}

size_t open_loans_accounts_due(const open_loans *index, int64_t now_ms, open_loans_visit visit, void *arg) {
    size_t visited = 0;
    const table *t = &index->accounts;
    for (size_t i = 0; t->slots && i <= t->mask; i++) {
        for (const node *n = t->slots[i]; n; n = n->next) {
            if (((const account_node *)n)->next_ms <= now_ms) {
                visit(arg, n->key);
                visited++;
            }
        }
    }
    return visited;
}
