/* policy.c - the patron groups' loan policies, read from a JSON file with jansson. */
#include "policy.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "config.h"

enum {
    GROUPS_MAX = 256,
    LIMIT_MAX = 1000,              /* counts: as MAX_ACTIVE_LOANS, MAX_HOLDS, MAX_RENEWALS */
};
/* Minor units, as lending's settings bound them: far beyond any fine, far from overflow. */
#define FINE_PER_INTERVAL_MAX 1000000000LL
#define MONEY_MAX 1000000000000LL
#define DURATION_MAX_MS (3650LL * 24 * 3600 * 1000) /* ten years */

typedef struct policy_row {
    char group[AUTH_GROUP_MAX];
    loan_policy policy;
} policy_row;

struct policy_table {
    loan_policy defaults;
    int count;
    policy_row *rows;
};

typedef enum field_kind {
    FIELD_DURATION, /* int64_t milliseconds, from a duration string */
    FIELD_COUNT,    /* int, from a JSON integer */
    FIELD_MONEY,    /* int64_t minor units, from a JSON integer */
} field_kind;

typedef struct policy_field {
    const char *name;
    field_kind kind;
    size_t offset; /* in loan_policy */
    int64_t min;   /* milliseconds for a duration */
    int64_t max;
    bool whole_seconds;
} policy_field;

static const policy_field fields[] = {
    {"loan_period", FIELD_DURATION, offsetof(loan_policy, loan_period_ms), 1000, DURATION_MAX_MS, false},
    {"max_active_loans", FIELD_COUNT, offsetof(loan_policy, max_active_loans), 1, LIMIT_MAX, false},
    {"max_renewals", FIELD_COUNT, offsetof(loan_policy, max_renewals), 0, LIMIT_MAX, false},
    {"max_holds", FIELD_COUNT, offsetof(loan_policy, max_holds), 0, LIMIT_MAX, false},
    {"hold_pickup", FIELD_DURATION, offsetof(loan_policy, hold_pickup_ms), 1000, DURATION_MAX_MS, false},
    {"fine_per_interval", FIELD_MONEY, offsetof(loan_policy, fine_per_interval), 0, FINE_PER_INTERVAL_MAX, false},
    {"fine_interval", FIELD_DURATION, offsetof(loan_policy, fine_interval_ms), 1000, DURATION_MAX_MS, true},
    {"fine_max_per_loan", FIELD_MONEY, offsetof(loan_policy, fine_max_per_loan), 0, MONEY_MAX, false},
    {"fine_block_at", FIELD_MONEY, offsetof(loan_policy, fine_block_at), 0, MONEY_MAX, false}, /* 0: never */
};
enum { FIELD_COUNT_ALL = sizeof fields / sizeof fields[0] };

/* "<path>: <where>: <what>"; where "" is the file as a whole. */
static status_code bad_file(status *st, const char *path, const char *where, const char *what) {
    if (where[0] == '\0')
        return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_POLICY_FILE", "%s: %s", path, what);
    return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_POLICY_FILE", "%s: %s: %s", path, where, what);
}

static status_code bad_field(status *st, const char *path, const char *group, const char *field,
                             const char *what) {
    return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_POLICY_FILE", "%s: groups.%s.%s: %s", path, group,
                      field, what);
}

static const policy_field *field_named(const char *name) {
    for (int i = 0; i < FIELD_COUNT_ALL; i++)
        if (strcmp(fields[i].name, name) == 0)
            return &fields[i];
    return NULL;
}

static void field_names(char *out, size_t size) {
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < FIELD_COUNT_ALL && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s", i ? ", " : "", fields[i].name);
}

/* "72h" for 259200000 ms: the largest unit that divides it. */
static void duration_text(int64_t ms, char *out, size_t size) {
    static const struct { const char *unit; int64_t ms; } units[] = {
        {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (ms % units[i].ms == 0) {
            snprintf(out, size, "%lld%s", (long long)(ms / units[i].ms), units[i].unit);
            return;
        }
}

/* Sets one field of policy from its JSON value, checked against the field's rule. */
static status_code field_set(const char *path, const char *group, const policy_field *field,
                             const json_t *value, loan_policy *policy, status *st) {
    char *target = (char *)policy + field->offset;
    if (field->kind == FIELD_DURATION) {
        int64_t ms = 0;
        char low[32], high[32], what[160];
        if (!json_is_string(value) || !config_parse_duration_ms(json_string_value(value), &ms))
            return bad_field(st, path, group, field->name,
                             "must be a duration string such as \"30s\", \"72h\" or \"14d\"");
        duration_text(field->min, low, sizeof low);
        duration_text(field->max, high, sizeof high);
        if (ms < field->min || ms > field->max) {
            snprintf(what, sizeof what, "must be from %s to %s (got \"%s\")", low, high, json_string_value(value));
            return bad_field(st, path, group, field->name, what);
        }
        if (field->whole_seconds && ms % 1000 != 0)
            return bad_field(st, path, group, field->name, "must be whole seconds");
        *(int64_t *)target = ms;
        return STATUS_OK;
    }
    char what[160];
    if (!json_is_integer(value) || json_integer_value(value) < field->min ||
        json_integer_value(value) > field->max) {
        snprintf(what, sizeof what, "must be an integer from %lld to %lld", (long long)field->min,
                 (long long)field->max);
        return bad_field(st, path, group, field->name, what);
    }
    if (field->kind == FIELD_COUNT)
        *(int *)target = (int)json_integer_value(value);
    else
        *(int64_t *)target = (int64_t)json_integer_value(value);
    return STATUS_OK;
}

static status_code row_read(const char *path, const char *group, const json_t *object, policy_row *row,
                            status *st) {
    char where[AUTH_GROUP_MAX + 80];
    snprintf(where, sizeof where, "groups.%.100s", group);
    if (!auth_group_valid(group))
        return bad_file(st, path, where,
                        "a group name is 1 to 63 letters, digits and ._-, as in the token's group claim");
    if (!json_is_object(object))
        return bad_file(st, path, where, "must be an object of policy fields");
    snprintf(row->group, sizeof row->group, "%s", group);
    const char *name;
    const json_t *value;
    json_object_foreach((json_t *)object, name, value) {
        const policy_field *field = field_named(name);
        if (field == NULL) {
            char known[300], what[400];
            field_names(known, sizeof known);
            snprintf(what, sizeof what, "unknown field; the fields are %s", known);
            return bad_field(st, path, group, name, what);
        }
        if (field_set(path, group, field, value, &row->policy, st) != STATUS_OK)
            return st->code;
    }
    return STATUS_OK;
}

static status_code table_read(const char *path, const json_t *root, policy_table *t, status *st) {
    if (!json_is_object(root))
        return bad_file(st, path, "", "the file must hold one JSON object: {\"groups\": {...}}");
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)root, key, value) {
        if (strcmp(key, "groups") != 0)
            return bad_file(st, path, key, "unknown key; the file has only \"groups\"");
    }
    const json_t *groups = json_object_get(root, "groups");
    if (groups == NULL)
        return STATUS_OK; /* no rows: every group lends by the defaults */
    if (!json_is_object(groups))
        return bad_file(st, path, "groups", "must be an object, one member per patron group");
    size_t count = json_object_size(groups);
    if (count > GROUPS_MAX)
        return bad_file(st, path, "groups", "more groups than a library has (at most 256)");
    t->rows = calloc(count ? count : 1, sizeof *t->rows);
    if (t->rows == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    json_object_foreach((json_t *)groups, key, value) {
        policy_row *row = &t->rows[t->count];
        row->policy = t->defaults;
        if (row_read(path, key, value, row, st) != STATUS_OK)
            return st->code;
        t->count++;
    }
    return STATUS_OK;
}

status_code policy_table_load(const char *path, const loan_policy *defaults, policy_table **out, status *st) {
    policy_table *t = calloc(1, sizeof *t);
    if (t == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    t->defaults = *defaults;
    if (path == NULL || path[0] == '\0') {
        *out = t;
        return STATUS_OK;
    }
    json_error_t error;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &error);
    status_code code = STATUS_OK;
    if (root == NULL && error.line > 0)
        code = status_set(st, STATUS_INVALID_ARGUMENT, "BAD_POLICY_FILE", "%s: line %d, column %d: %s", path,
                          error.line, error.column, error.text);
    else if (root == NULL)
        code = status_set(st, STATUS_INVALID_ARGUMENT, "BAD_POLICY_FILE", "%s: %s", path, error.text);
    else
        code = table_read(path, root, t, st);
    json_decref(root);
    if (code != STATUS_OK) {
        policy_table_destroy(t);
        return code;
    }
    *out = t;
    return STATUS_OK;
}

void policy_table_destroy(policy_table *t) {
    if (t == NULL)
        return;
    free(t->rows);
    free(t);
}

const loan_policy *policy_for(const policy_table *t, const char *group) {
    for (int i = 0; group != NULL && i < t->count; i++)
        if (strcmp(t->rows[i].group, group) == 0)
            return &t->rows[i].policy;
    return &t->defaults;
}

int policy_table_group_count(const policy_table *t) {
    return t->count;
}
