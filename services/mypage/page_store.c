/* page_store.c - a pool of hiredis connections and the Lua scripts of the projection. */
#include "page_store.h"

#include <hiredis.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "redis_pipe.h"
#include "text.h"
#include "timestamp.h"

enum { POOL_SIZE = 16, CLEANUP_BATCH = 500, MAX_ARGS = CLEANUP_BATCH + 16, PIPE_MAX_PENDING = 1024 };

/* The generation in use, the one a rebuild is filling, and the last one handed out. */
#define KEY_GENERATION "mypage:generation"
#define KEY_BUILDING "mypage:building"
#define KEY_NEXT "mypage:next"

/* The Lua the loan, hold and sweep scripts share. An item is a loan id, or "h:<hold id>" for
 * a hold (hold ids are a-z, 0-9 and '-', so no loan id made by lending looks like one).
 * "mypage:<generation>:retention:settled" holds "<user>|<item>" of each settled loan and
 * closed hold on a page of the generation, scored by its final event's time (ms);
 * "...:retention:removed" the same for the items retention removed, whose page keeps
 * "x:<item>" = that time so no later event brings the item back, until the sweep drops it
 * another retention later (page_store.h). remove() takes a loan, its renewals, its fine and
 * its borrow time off the page, or a hold and its place time, and answers whether the page
 * shown changed (it had the loan; a closed hold is not shown). earlier() keeps the earliest
 * order time (a loan's borrow time, a hold's place time) seen in a field and answers whether
 * the field changed. */
#define RETENTION_LUA                                                                           \
    "local function newer_time(key, time)\n"                                                   \
    "  if tonumber(time) > tonumber(redis.call('HGET', key, 't') or '0') then\n"               \
    "    redis.call('HSET', key, 't', time)\n"                                                 \
    "    return 1\n"                                                                           \
    "  end\n"                                                                                  \
    "  return 0\n"                                                                             \
    "end\n"                                                                                    \
    "local function earlier(key, field, time)\n"                                               \
    "  if tonumber(time) <= 0 then return false end\n"                                         \
    "  local current = tonumber(redis.call('HGET', key, field) or '')\n"                       \
    "  if current and current <= tonumber(time) then return false end\n"                       \
    "  redis.call('HSET', key, field, time)\n"                                                 \
    "  return true\n"                                                                          \
    "end\n"                                                                                    \
    "local function remove(generation, user, item, settled_at)\n"                              \
    "  local prefix = 'mypage:' .. generation .. ':'\n"                                        \
    "  local key, member = prefix .. user, user .. '|' .. item\n"                              \
    "  local hold, shown = string.match(item, '^h:(.+)$'), false\n"                            \
    "  if hold then\n"                                                                         \
    "    redis.call('HDEL', key, item, 'p:' .. hold)\n"                                        \
    "  else\n"                                                                                 \
    "    shown = redis.call('HDEL', key, 'l:' .. item, 'r:' .. item, 'f:' .. item, 'b:' .. item) > 0\n" \
    "  end\n"                                                                                  \
    "  redis.call('HSET', key, 'x:' .. item, settled_at)\n"                                    \
    "  redis.call('ZREM', prefix .. 'retention:settled', member)\n"                            \
    "  redis.call('ZADD', prefix .. 'retention:removed', settled_at, member)\n"                \
    "  return shown\n"                                                                         \
    "end\n"                                                                                    \
    "local function settle(generation, user, item, at, now, retention)\n"                      \
    "  if at <= 0 then return false end\n"                                                     \
    "  local settled, member = 'mypage:' .. generation .. ':retention:settled', user .. '|' .. item\n" \
    "  local before = tonumber(redis.call('ZSCORE', settled, member) or '0')\n"                \
    "  if at < before then at = before end\n"                                                  \
    "  if retention > 0 and at <= now - retention then\n"                                      \
    "    return remove(generation, user, item, string.format('%d', at))\n"                     \
    "  end\n"                                                                                  \
    "  if at > before then redis.call('ZADD', settled, at, member) end\n"                      \
    "  return false\n"                                                                         \
    "end\n"

/* KEYS: generation, building. ARGV: user (base64url), loan id, seq, rank, status, due,
 * overdue, book id, title, event time (ms), generation to write ("" = the one in use and the
 * one being built), renewal count, renewed due, overdue-for due, now (ms), retention (ms, 0 =
 * forever), borrow time (ms, 0 = not carried). Returns 1 when the page (in use, or the given
 * generation) changed.
 * The merge is idempotent and order-free (page.h), so the result depends only on the set of
 * events applied: the seq kept is the loan's earliest, which orders the page; "r:" keeps the
 * highest renewal count with its due time, and the latest due time announced overdue.
 * Retention (page_store.h): a final event enters the loan in the generation's "settled" set,
 * scored by the latest final event time seen; one older than the retention removes the loan
 * at once; and no event brings back a removed loan (its "x:" field). */
static const char apply_source[] =
    RETENTION_LUA
    "local function apply(generation)\n"
    "  local key = 'mypage:' .. generation .. ':' .. ARGV[1]\n"
    "  if redis.call('HEXISTS', key, 'x:' .. ARGV[2]) == 1 then return newer_time(key, ARGV[10]) end\n"
    "  local field = 'l:' .. ARGV[2]\n"
    "  local seq, rank = ARGV[3], ARGV[4]\n"
    "  local status, due, overdue, book, title = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]\n"
    "  local current = redis.call('HGET', key, field)\n"
    "  if current then\n"
    "    local cseq, crank, cstatus, cdue, cover, cbook, ctitle =\n"
    "      string.match(current, '^(%d+)|(%d+)|(%d+)|(%d+)|(%d)|([^|]*)|(.*)$')\n"
    "    if cseq then\n"
    "      if tonumber(cseq) < tonumber(seq) then seq = cseq end\n"
    "      if tonumber(rank) <= tonumber(crank) then\n"
    "        -- not ahead of the page: keep its state; an event of the same step adds its\n"
    "        -- overdue flag, and any event fills in what the page lacks\n"
    "        if rank == crank and overdue == '1' then cover = '1' end\n"
    "        rank, status, overdue = crank, cstatus, cover\n"
    "        if cdue ~= '0' then due = cdue end\n"
    "        if cbook ~= '' then book = cbook end\n"
    "        if ctitle ~= '' then title = ctitle end\n"
    "      else\n"
    "        if due == '0' then due = cdue end\n"
    "        if book == '' then book = cbook end\n"
    "        if title == '' then title = ctitle end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  local changed = 0\n"
    "  local value = seq .. '|' .. rank .. '|' .. status .. '|' .. due .. '|' .. overdue ..\n"
    "    '|' .. book .. '|' .. title\n"
    "  if value ~= current then\n"
    "    redis.call('HSET', key, field, value)\n"
    "    changed = 1\n"
    "  end\n"
    "  if earlier(key, 'b:' .. ARGV[2], ARGV[17]) then changed = 1 end\n"
    "  local count, renewed, overdue_for = tonumber(ARGV[12]), ARGV[13], tonumber(ARGV[14])\n"
    "  if count > 0 or overdue_for > 0 then\n"
    "    local rfield = 'r:' .. ARGV[2]\n"
    "    local rcurrent = redis.call('HGET', key, rfield)\n"
    "    local ccount, cdue, cfor = 0, '0', 0\n"
    "    if rcurrent then\n"
    "      local a, b, c = string.match(rcurrent, '^(%d+)|(%d+)|(%d+)$')\n"
    "      if a then ccount, cdue, cfor = tonumber(a), b, tonumber(c) end\n"
    "    end\n"
    "    if count > ccount then ccount, cdue = count, renewed end\n"
    "    if overdue_for > cfor then cfor = overdue_for end\n"
    "    local rvalue = string.format('%d|%s|%d', ccount, cdue, cfor)\n"
    "    if rvalue ~= rcurrent then\n"
    "      redis.call('HSET', key, rfield, rvalue)\n"
    "      changed = 1\n"
    "    end\n"
    "  end\n"
    "  if ARGV[4] == '3' and settle(generation, ARGV[1], ARGV[2], tonumber(ARGV[10]), tonumber(ARGV[15]),\n"
    "                             tonumber(ARGV[16])) then\n"
    "    changed = 1\n"
    "  end\n"
    "  if newer_time(key, ARGV[10]) == 1 then changed = 1 end\n"
    "  return changed\n"
    "end\n"
    "if ARGV[11] ~= '' then return apply(ARGV[11]) end\n"
    "local current = redis.call('GET', KEYS[1]) or '0'\n"
    "local changed = apply(current)\n"
    "local building = redis.call('GET', KEYS[2])\n"
    "if building and building ~= current then apply(building) end\n"
    "return changed\n";

/* KEYS: generation, building. ARGV: user (base64url), hold id, seq, rank, status, place,
 * expire, book id, title, event time (ms), generation to write ("" = in use and being built),
 * queue book id ("" = no snapshot), queue version, queued hold ids joined by '|', place time
 * (ms, 0 = not carried; "p:<hold id>" keeps the earliest), now (ms), retention (ms, 0 =
 * forever). Returns {1 when the page (in use, or the given generation) changed, or the book's
 * snapshot did (the holder's position may have), else 0; then, for the pages in use, the other
 * users (base64url) whose holds the new snapshot moved}. Idempotent and order-free, as the
 * loans' merge: a hold only moves forward in rank, fields the page lacks are filled in, the
 * earliest seq is kept; a snapshot replaces only an older version of the book's.
 * "mypage:<generation>:h:users" maps each open hold to its user, so the users a snapshot moves
 * can be told (the event names only its own holder). Retention, as for loans (RETENTION_LUA):
 * a closed hold's final event enters "h:<hold id>" in the settled set, one older than the
 * retention removes the hold at once, and a removed hold's mark "x:h:<hold id>" keeps every
 * later event of it off the page; the book's snapshot such an event carries still counts. */
static const char apply_hold_source[] =
    RETENTION_LUA
    "local function newer(a, b)\n"
    "  if #a ~= #b then return #a > #b end\n"
    "  return a > b\n"
    "end\n"
    "local function apply_hold(generation, key, holders)\n"
    "  local field = 'h:' .. ARGV[2]\n"
    "  local seq, rank, status = ARGV[3], ARGV[4], ARGV[5]\n"
    "  local place, expire, book, title = ARGV[6], ARGV[7], ARGV[8], ARGV[9]\n"
    "  local current = redis.call('HGET', key, field)\n"
    "  if current then\n"
    "    local cseq, crank, cstatus, cplace, cexpire, cbook, ctitle =\n"
    "      string.match(current, '^(%d+)|(%d+)|(%d+)|(%d+)|(%d+)|([^|]*)|(.*)$')\n"
    "    if cseq then\n"
    "      if tonumber(cseq) < tonumber(seq) then seq = cseq end\n"
    "      if tonumber(rank) <= tonumber(crank) then rank, status = crank, cstatus end\n"
    "      if cplace ~= '0' then place = cplace end\n"
    "      if cexpire ~= '0' then expire = cexpire end\n"
    "      if cbook ~= '' then book = cbook end\n"
    "      if ctitle ~= '' then title = ctitle end\n"
    "    end\n"
    "  end\n"
    "  local changed = 0\n"
    "  local value = seq .. '|' .. rank .. '|' .. status .. '|' .. place .. '|' .. expire ..\n"
    "    '|' .. book .. '|' .. title\n"
    "  if value ~= current then\n"
    "    redis.call('HSET', key, field, value)\n"
    "    changed = 1\n"
    "  end\n"
    "  if earlier(key, 'p:' .. ARGV[2], ARGV[15]) then changed = 1 end\n"
    "  if tonumber(rank) < 3 then\n"
    "    redis.call('HSET', holders, ARGV[2], ARGV[1])\n"
    "  else\n"
    "    redis.call('HDEL', holders, ARGV[2])\n"
    "  end\n"
    "  if ARGV[4] == '3' and settle(generation, ARGV[1], field, tonumber(ARGV[10]), tonumber(ARGV[16]),\n"
    "                             tonumber(ARGV[17])) then\n"
    "    changed = 1\n"
    "  end\n"
    "  return changed\n"
    "end\n"
    "local function apply(generation)\n"
    "  local key = 'mypage:' .. generation .. ':' .. ARGV[1]\n"
    "  local holders = 'mypage:' .. generation .. ':h:users'\n"
    "  local changed = 0\n"
    "  if redis.call('HEXISTS', key, 'x:h:' .. ARGV[2]) == 0 then changed = apply_hold(generation, key, holders) end\n"
    "  if newer_time(key, ARGV[10]) == 1 then changed = 1 end\n"
    "  local moved = {}\n"
    "  if ARGV[12] ~= '' then\n"
    "    local qkey = 'mypage:' .. generation .. ':q:' .. ARGV[12]\n"
    "    local snapshot = redis.call('GET', qkey)\n"
    "    local version = snapshot and string.match(snapshot, '^(%d+)|')\n"
    "    if not version or newer(ARGV[13], version) then\n"
    "      redis.call('SET', qkey, ARGV[13] .. '|' .. ARGV[14])\n"
    "      changed = 1\n"
    "      local before, position = {}, 0\n"
    "      for id in string.gmatch(snapshot and string.sub(snapshot, #version + 2) or '', '[^|]+') do\n"
    "        position = position + 1\n"
    "        before[id] = position\n"
    "      end\n"
    "      position = 0\n"
    "      for id in string.gmatch(ARGV[14], '[^|]+') do\n"
    "        position = position + 1\n"
    "        if before[id] ~= position and id ~= ARGV[2] then\n"
    "          local user = redis.call('HGET', holders, id)\n"
    "          if user and user ~= ARGV[1] then moved[user] = true end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  return changed, moved\n"
    "end\n"
    "if ARGV[11] ~= '' then return {(apply(ARGV[11]))} end\n"
    "local current = redis.call('GET', KEYS[1]) or '0'\n"
    "local changed, moved = apply(current)\n"
    "local building = redis.call('GET', KEYS[2])\n"
    "if building and building ~= current then apply(building) end\n"
    "local reply = {changed}\n"
    "for user in pairs(moved) do reply[#reply + 1] = user end\n"
    "return reply\n";

/* KEYS: generation, building. ARGV: user (base64url), snapshot version, account (base64url),
 * event time (ms), generation to write ("" = in use and being built), "loan id|amount|..."
 * of the loans' fines. Returns 1 when the page (in use, or the given generation) changed.
 * Idempotent and order-free (page.h): "a" and each "f:" keep the highest version seen, at an
 * equal version the greater value. A loan retention removed gets no "f:" again. */
static const char apply_account_source[] =
    "local function newer(a, b)\n"
    "  if #a ~= #b then return #a > #b end\n"
    "  return a > b\n"
    "end\n"
    "local function replaces(version, value, current, pattern)\n"
    "  local cversion, cvalue\n"
    "  if current then cversion, cvalue = string.match(current, pattern) end\n"
    "  if not cversion then return true end\n"
    "  if version ~= cversion then return newer(version, cversion) end\n"
    "  return value ~= cvalue and newer(value, cvalue)\n"
    "end\n"
    "local function apply(generation)\n"
    "  local key = 'mypage:' .. generation .. ':' .. ARGV[1]\n"
    "  local version, changed = ARGV[2], 0\n"
    "  if replaces(version, ARGV[3], redis.call('HGET', key, 'a'), '^(%d+)|(.*)$') then\n"
    "    redis.call('HSET', key, 'a', version .. '|' .. ARGV[3])\n"
    "    changed = 1\n"
    "  end\n"
    "  for loan, amount in string.gmatch(ARGV[6], '([^|]+)|(%d+)') do\n"
    "    local field = 'f:' .. loan\n"
    "    if redis.call('HEXISTS', key, 'x:' .. loan) == 0 and\n"
    "       replaces(version, amount, redis.call('HGET', key, field), '^(%d+)|(%d+)$') then\n"
    "      redis.call('HSET', key, field, version .. '|' .. amount)\n"
    "      changed = 1\n"
    "    end\n"
    "  end\n"
    "  local t = tonumber(redis.call('HGET', key, 't') or '0')\n"
    "  if tonumber(ARGV[4]) > t then\n"
    "    redis.call('HSET', key, 't', ARGV[4])\n"
    "    changed = 1\n"
    "  end\n"
    "  return changed\n"
    "end\n"
    "if ARGV[5] ~= '' then return apply(ARGV[5]) end\n"
    "local current = redis.call('GET', KEYS[1]) or '0'\n"
    "local changed = apply(current)\n"
    "local building = redis.call('GET', KEYS[2])\n"
    "if building and building ~= current then apply(building) end\n"
    "return changed\n";

/* KEYS: generation. ARGV: now (ms), retention (ms, > 0), at most how many items (loans and
 * closed holds) and how many "x:" marks to remove. Sweeps the generation in use: each item
 * settled at least a retention ago leaves its page (remove()), and each mark of an item
 * removed at least two retentions after it settled goes too: by then the stream (kept for a
 * retention) holds none of its events, so nothing is left that could bring it back. A
 * rebuild's generation is not swept: its replay may still meet an old event of an item whose
 * mark must stay; after the switch this sweep takes it over. Several replicas may run it at
 * once: each step is atomic and skips what another took. Pages stored by a release that did
 * not record settled items (closed holds at all, settled loans before retention) hold some
 * without an entry in the settled set: each step also goes on with one SCAN (COUNT = limit)
 * over the generation's pages, whose cursor "...:retention:scan" keeps until it says "done",
 * and enters each settled loan and closed hold it finds without an entry, scored by the page's
 * "t" (its newest event, so never before the item's own final event). A generation a rebuild
 * makes is "done" from the start (begin_source): its scripts record everything. Returns {1
 * when a batch was full or the pass is not over (more may be due) else 0, then the users
 * (base64url) whose page lost a loan: a closed hold is not shown, so its removal changes no
 * page anyone sees}. */
static const char sweep_source[] =
    RETENTION_LUA
    "local generation = redis.call('GET', KEYS[1]) or '0'\n"
    "local prefix = 'mypage:' .. generation .. ':'\n"
    "local now, retention, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local reply, users = {0}, {}\n"
    "local due = redis.call('ZRANGEBYSCORE', prefix .. 'retention:settled', '-inf',\n"
    "  string.format('%d', now - retention), 'WITHSCORES', 'LIMIT', 0, limit)\n"
    "for i = 1, #due - 1, 2 do\n"
    "  local user, item = string.match(due[i], '^([^|]+)|(.+)$')\n"
    "  if user and remove(generation, user, item, due[i + 1]) and not users[user] then\n"
    "    users[user] = true\n"
    "    reply[#reply + 1] = user\n"
    "  elseif not user then\n"
    "    redis.call('ZREM', prefix .. 'retention:settled', due[i])\n"
    "  end\n"
    "end\n"
    "local gone = redis.call('ZRANGEBYSCORE', prefix .. 'retention:removed', '-inf',\n"
    "  string.format('%d', now - 2 * retention), 'LIMIT', 0, limit)\n"
    "for _, member in ipairs(gone) do\n"
    "  local user, item = string.match(member, '^([^|]+)|(.+)$')\n"
    "  if user then redis.call('HDEL', prefix .. user, 'x:' .. item) end\n"
    "  redis.call('ZREM', prefix .. 'retention:removed', member)\n"
    "end\n"
    "if #due >= 2 * limit or #gone >= limit then reply[1] = 1 end\n"
    "local scan = prefix .. 'retention:scan'\n"
    "local cursor = redis.call('GET', scan) or '0'\n"
    "if cursor ~= 'done' then\n"
    "  local found = redis.call('SCAN', cursor, 'MATCH', prefix .. '*', 'COUNT', limit)\n"
    "  for _, key in ipairs(found[2]) do\n"
    "    local user = string.sub(key, #prefix + 1)\n"
    "    if not string.find(user, ':', 1, true) then\n"
    "      local page = redis.call('HGETALL', key)\n"
    "      local t = tonumber(redis.call('HGET', key, 't') or '') or now\n"
    "      for i = 1, #page - 1, 2 do\n"
    "        local kind, id = string.match(page[i], '^([lh]):(.+)$')\n"
    "        local item = kind == 'h' and page[i] or id\n"
    "        if kind and string.match(page[i + 1], '^%d+|3|') and\n"
    "           not redis.call('ZSCORE', prefix .. 'retention:settled', user .. '|' .. item) and\n"
    "           settle(generation, user, item, t, now, retention) and not users[user] then\n"
    "          users[user] = true\n"
    "          reply[#reply + 1] = user\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  redis.call('SET', scan, found[1] == '0' and 'done' or found[1])\n"
    "  if found[1] ~= '0' then reply[1] = 1 end\n"
    "end\n"
    "return reply\n";

/* KEYS: generation. ARGV: user. The page in use, as HGETALL pairs, then a pair
 * "q:<book id>", snapshot for each book a WAITING hold of the page waits for. */
static const char load_source[] =
    "local current = redis.call('GET', KEYS[1]) or '0'\n"
    "local page = redis.call('HGETALL', 'mypage:' .. current .. ':' .. ARGV[1])\n"
    "local seen = {}\n"
    "for i = 1, #page - 1, 2 do\n"
    "  if string.sub(page[i], 1, 2) == 'h:' then\n"
    "    local rank, book = string.match(page[i + 1], '^%d+|(%d+)|%d+|%d+|%d+|([^|]*)|')\n"
    "    if rank == '1' and book ~= '' and not seen[book] then\n"
    "      seen[book] = true\n"
    "      local snapshot = redis.call('GET', 'mypage:' .. current .. ':q:' .. book)\n"
    "      if snapshot then\n"
    "        page[#page + 1] = 'q:' .. book\n"
    "        page[#page + 1] = snapshot\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return page\n";

/* KEYS: generation, building, next. A generation newer than any used before; its pages need
 * no pass of the sweep for items settled before they were recorded (sweep_source). */
static const char begin_source[] =
    "local current = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local n = redis.call('INCR', KEYS[3])\n"
    "if n <= current then n = current + 1; redis.call('SET', KEYS[3], n) end\n"
    "redis.call('SET', KEYS[2], n)\n"
    "redis.call('SET', 'mypage:' .. n .. ':retention:scan', 'done')\n"
    "return n\n";

/* KEYS: generation, building. ARGV: the rebuilt generation. Returns the old one. */
static const char switch_source[] =
    "if redis.call('GET', KEYS[2]) ~= ARGV[1] then\n"
    "  return redis.error_reply('TAKEN_OVER a newer rebuild has started')\n"
    "end\n"
    "local old = redis.call('GET', KEYS[1]) or '0'\n"
    "redis.call('SET', KEYS[1], ARGV[1])\n"
    "redis.call('DEL', KEYS[2])\n"
    "return old\n";

/* KEYS: building, generation. ARGV: the abandoned generation. 1 when its pages may go; 0
 * when it is in use after all (a switch that went through but whose reply was lost). */
static const char abort_source[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end\n"
    "if (redis.call('GET', KEYS[2]) or '0') == ARGV[1] then return 0 end\n"
    "return 1\n";

typedef struct script {
    const char *source;
    char sha1[41]; /* EVALSHA first; EVAL loads it when the server does not know it yet */
} script;

struct page_store {
    char host[256];
    int port;
    int database;
    char user[128], password[512];
    atomic_bool refusal_logged; /* one log line per refusal, not one per retry */
    struct timeval timeout;
    health *health;
    script apply, apply_hold, apply_account, load, begin, switch_over, abort, sweep;
    atomic_llong retention_ms; /* 0: settled loans stay */
    pthread_mutex_t lock;
    pthread_cond_t returned;
    redisContext *idle[POOL_SIZE];
    int idle_count;
    int open_count;
    redis_pipe *pipe; /* for page_store_load_async, opened by its first call (under lock) */
    bool pipe_failed;
};

static void script_init(script *s, const char *source) {
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)source, strlen(source), digest);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(s->sha1 + 2 * i, 3, "%02x", digest[i]);
    s->source = source;
}

static status_code parse_url(const char *url, page_store *store, status *st) {
    const char *rest = strncmp(url, "redis://", 8) == 0 ? url + 8 : url;
    const char *slash = strchr(rest, '/');
    const char *end = slash ? slash : rest + strlen(rest);
    const char *colon = memchr(rest, ':', (size_t)(end - rest));
    size_t length = (size_t)((colon ? colon : end) - rest);
    if (length == 0 || length >= sizeof store->host)
        return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_REDIS_URL", "REDIS_URL %s has no host", url);
    memcpy(store->host, rest, length);
    store->host[length] = '\0';
    store->port = 6379;
    if (colon) {
        char *port_end = NULL;
        long port = strtol(colon + 1, &port_end, 10);
        if (port_end != end || port <= 0 || port > 65535)
            return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_REDIS_URL",
                              "REDIS_URL %s has a bad port", url);
        store->port = (int)port;
    }
    if (slash && slash[1] != '\0') {
        char *db_end = NULL;
        long database = strtol(slash + 1, &db_end, 10);
        if (*db_end != '\0' || database < 0 || database > 1000)
            return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_REDIS_URL",
                              "REDIS_URL %s has a bad database number", url);
        store->database = (int)database;
    }
    return STATUS_OK;
}

status_code page_store_open(const char *url, const redis_login *login, int64_t timeout_ms,
                            health *health_report, page_store **out, status *st) {
    page_store *store = calloc(1, sizeof *store);
    if (store == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    if (parse_url(url, store, st) != STATUS_OK) {
        free(store);
        return st->code;
    }
    snprintf(store->user, sizeof store->user, "%s", login && login->user ? login->user : "");
    snprintf(store->password, sizeof store->password, "%s", login && login->password ? login->password : "");
    store->timeout = (struct timeval){.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    store->health = health_report;
    script_init(&store->apply, apply_source);
    script_init(&store->apply_hold, apply_hold_source);
    script_init(&store->apply_account, apply_account_source);
    script_init(&store->load, load_source);
    script_init(&store->begin, begin_source);
    script_init(&store->switch_over, switch_source);
    script_init(&store->abort, abort_source);
    script_init(&store->sweep, sweep_source);
    atomic_init(&store->retention_ms, 0);
    pthread_mutex_init(&store->lock, NULL);
    pthread_cond_init(&store->returned, NULL);
    *out = store;
    return STATUS_OK;
}

void page_store_close(page_store *store) {
    if (store == NULL)
        return;
    redis_pipe_close(store->pipe); /* answers what still waits on it */
    for (int i = 0; i < store->idle_count; i++)
        redisFree(store->idle[i]);
    pthread_mutex_destroy(&store->lock);
    pthread_cond_destroy(&store->returned);
    free(store);
}

static void report_health(page_store *store, bool up) {
    if (store->health)
        health_set_dependency(store->health, "redis", up);
}

static redis_login login_of(const page_store *store) {
    return (redis_login){.user = store->user, .password = store->password};
}

/* A refusal (wrong password, unknown user) is REDIS_AUTH, and logged: health alone would
 * only say Redis is down. */
static redisContext *connect_redis(page_store *store, status *st) {
    char error[256];
    redis_login login = login_of(store);
    redisContext *c = redis_session_open(store->host, store->port, store->database, &login,
                                         store->timeout, error, sizeof error);
    if (c != NULL) {
        atomic_store(&store->refusal_logged, false);
        return c;
    }
    if (strncmp(error, "Redis refused", 13) == 0) {
        if (!atomic_exchange(&store->refusal_logged, true))
                LOG_ERROR("%s:%d: %s (check REDIS_USER and REDIS_PASSWORD or REDIS_PASSWORD_FILE)",
                      store->host, store->port, error);
        status_set(st, STATUS_UNAVAILABLE, "REDIS_AUTH", "Redis at %s:%d: %s", store->host, store->port, error);
    } else {
        status_set(st, STATUS_UNAVAILABLE, "REDIS_UNAVAILABLE", "Redis at %s:%d is unavailable: %s",
                   store->host, store->port, error);
    }
    return NULL;
}

/* Takes an idle connection, or opens one (at most POOL_SIZE at a time). NULL: Redis is down. */
static redisContext *acquire(page_store *store, status *st) {
    pthread_mutex_lock(&store->lock);
    while (store->idle_count == 0 && store->open_count >= POOL_SIZE)
        pthread_cond_wait(&store->returned, &store->lock);
    if (store->idle_count > 0) {
        redisContext *c = store->idle[--store->idle_count];
        pthread_mutex_unlock(&store->lock);
        return c;
    }
    store->open_count++;
    pthread_mutex_unlock(&store->lock);
    redisContext *c = connect_redis(store, st);
    if (c == NULL) {
        pthread_mutex_lock(&store->lock);
        store->open_count--;
        pthread_cond_signal(&store->returned);
        pthread_mutex_unlock(&store->lock);
        report_health(store, false);
    }
    return c;
}

/* Gives a connection back; a broken one is closed instead. */
static void release(page_store *store, redisContext *c, bool broken) {
    pthread_mutex_lock(&store->lock);
    if (broken) {
        redisFree(c);
        store->open_count--;
    } else {
        store->idle[store->idle_count++] = c;
    }
    pthread_cond_signal(&store->returned);
    pthread_mutex_unlock(&store->lock);
    report_health(store, !broken);
}

static bool starts_with_any(const char *text, const char *const *prefixes, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (strncmp(text, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

/* Error replies of a Redis that is up but cannot serve yet: loading its AOF after a restart
 * (LOADING), running a slow script (BUSY), a replica without its primary (MASTERDOWN), or a
 * retry hint (TRYAGAIN). */
static bool cannot_serve(const char *text) {
    static const char *const prefixes[] = {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN"};
    return starts_with_any(text, prefixes, sizeof prefixes / sizeof prefixes[0]);
}

/* Error replies of a Redis that serves reads but refuses writes for now: maxmemory reached
 * with noeviction (OOM), the AOF or snapshot cannot be written (MISCONF), a replica after a
 * failover (READONLY), too few replicas (NOREPLICAS). */
static bool cannot_write(const char *text) {
    static const char *const prefixes[] = {"OOM", "MISCONF", "READONLY", "NOREPLICAS"};
    return starts_with_any(text, prefixes, sizeof prefixes / sizeof prefixes[0]);
}

/* Runs one command; on success *reply is the caller's (freeReplyObject). A Redis error reply
 * becomes ABORTED when it starts with TAKEN_OVER, UNAVAILABLE when it passes without us
 * (cannot_serve, cannot_write), INTERNAL otherwise. The difference matters: the projection's
 * consumer retries an UNAVAILABLE event but terminates an INTERNAL one, so an event met by
 * a Redis that is loading its AOF, or full, would otherwise be lost to the page for good. */
static status_code command(page_store *store, int argc, const char **argv, redisReply **reply,
                           status *st) {
    size_t lengths[MAX_ARGS];
    if (argc > MAX_ARGS)
        return status_set(st, STATUS_INTERNAL, "TOO_MANY_ARGUMENTS", "a Redis command has too many arguments");
    for (int i = 0; i < argc; i++) {
        if (argv[i] == NULL)
            return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
        lengths[i] = strlen(argv[i]);
    }
    redisContext *c = acquire(store, st);
    if (c == NULL)
        return st->code;
    *reply = redisCommandArgv(c, argc, argv, lengths);
    if (*reply == NULL) {
        status_set(st, STATUS_UNAVAILABLE, "REDIS_UNAVAILABLE", "Redis did not answer: %s", c->errstr);
        release(store, c, true);
        return st->code;
    }
    release(store, c, false);
    if ((*reply)->type == REDIS_REPLY_ERROR) {
        if (strncmp((*reply)->str, "TAKEN_OVER", 10) == 0) {
            status_set(st, STATUS_ABORTED, "REBUILD_TAKEN_OVER", "%s", (*reply)->str + 11);
        } else if (cannot_serve((*reply)->str)) {
            status_set(st, STATUS_UNAVAILABLE, "REDIS_UNAVAILABLE", "Redis: %.200s", (*reply)->str);
            report_health(store, false); /* up but not serving: NOT_SERVING until a command works */
        } else if (cannot_write((*reply)->str)) {
            /* reads still work, so health stays as it is */
            status_set(st, STATUS_UNAVAILABLE, "REDIS_READ_ONLY", "Redis: %.200s", (*reply)->str);
        } else {
            status_set(st, STATUS_INTERNAL, "REDIS_ERROR", "Redis: %.200s", (*reply)->str);
        }
        freeReplyObject(*reply);
        *reply = NULL;
        return st->code;
    }
    return STATUS_OK;
}

/* EVALSHA, falling back to EVAL (which caches the script) after a restart or FLUSH. argv
 * starts with the key count, then keys and arguments. */
static status_code run_script(page_store *store, const script *s, int argc, const char **argv,
                              redisReply **reply, status *st) {
    const char *call[MAX_ARGS];
    if (argc + 2 > MAX_ARGS)
        return status_set(st, STATUS_INTERNAL, "TOO_MANY_ARGUMENTS", "a Redis command has too many arguments");
    call[0] = "EVALSHA";
    call[1] = s->sha1;
    memcpy(call + 2, argv, (size_t)argc * sizeof *argv);
    status_code code = command(store, argc + 2, call, reply, st);
    if (code == STATUS_INTERNAL && strstr(st->message, "NOSCRIPT") != NULL) {
        status_clear(st);
        call[0] = "EVAL";
        call[1] = s->source;
        code = command(store, argc + 2, call, reply, st);
    }
    return code;
}

/* Runs a script that answers 1 when it changed the page and 0 when it did not. */
static status_code run_change_script(page_store *store, const script *s, int argc, const char **argv, bool *changed,
                                     status *st) {
    redisReply *reply = NULL;
    status_code code = run_script(store, s, argc, argv, &reply, st);
    if (code == STATUS_OK) {
        if (changed)
            *changed = reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
        freeReplyObject(reply);
    }
    return code;
}

static status_code apply(page_store *store, const char *generation, const loan_change *change,
                         uint64_t sequence, bool *changed, status *st) {
    arena *a = arena_create(0);
    if (a == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    const char *argv[] = {
        "2", KEY_GENERATION, KEY_BUILDING,
        text_base64url_encode(a, (const uint8_t *)change->user_id, strlen(change->user_id)),
        change->loan_id,
        arena_sprintf(a, "%llu", (unsigned long long)sequence),
        arena_sprintf(a, "%d", change->rank),
        arena_sprintf(a, "%d", change->status),
        arena_sprintf(a, "%lld", (long long)(change->due_seconds > 0 ? change->due_seconds : 0)),
        change->overdue ? "1" : "0",
        change->book_id,
        change->book_title,
        arena_sprintf(a, "%lld", (long long)(change->event_time_ms > 0 ? change->event_time_ms : 0)),
        generation,
        arena_sprintf(a, "%d", (int)(change->renewal_count > 0 ? change->renewal_count : 0)),
        arena_sprintf(a, "%lld", (long long)(change->renewal_count > 0 && change->due_seconds > 0 ? change->due_seconds : 0)),
        arena_sprintf(a, "%lld", (long long)(change->overdue_for_seconds > 0 ? change->overdue_for_seconds : 0)),
        arena_sprintf(a, "%lld", (long long)timestamp_now_ms()),
        arena_sprintf(a, "%lld", (long long)atomic_load(&store->retention_ms)),
        arena_sprintf(a, "%lld", (long long)(change->order_ms > 0 ? change->order_ms : 0)),
    };
    status_code code = run_change_script(store, &store->apply, sizeof argv / sizeof argv[0], argv, changed, st);
    arena_destroy(a);
    return code;
}

/* Calls moved for each user (decoded) the reply names after its first element. */
static void tell_moved(const redisReply *reply, page_user_moved moved, void *arg) {
    arena *a = arena_create(0);
    for (size_t i = 1; a != NULL && moved != NULL && i < reply->elements; i++) {
        const redisReply *user = reply->element[i];
        uint8_t *decoded = NULL;
        size_t size = 0;
        if (user->type == REDIS_REPLY_STRING && text_base64url_decode(a, user->str, &decoded, &size)) {
            char *user_id = arena_strndup(a, (const char *)decoded, size);
            if (user_id)
                moved(arg, user_id);
        }
    }
    arena_destroy(a);
}

static status_code apply_hold(page_store *store, const char *generation, const hold_change *change,
                              uint64_t sequence, bool *changed, page_user_moved moved, void *moved_arg,
                              status *st) {
    arena *a = arena_create(0);
    if (a == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    const char *argv[] = {
        "2", KEY_GENERATION, KEY_BUILDING,
        text_base64url_encode(a, (const uint8_t *)change->user_id, strlen(change->user_id)),
        change->hold_id,
        arena_sprintf(a, "%llu", (unsigned long long)sequence),
        arena_sprintf(a, "%d", change->rank),
        arena_sprintf(a, "%d", change->status),
        arena_sprintf(a, "%lld", (long long)(change->place_seconds > 0 ? change->place_seconds : 0)),
        arena_sprintf(a, "%lld", (long long)(change->expire_seconds > 0 ? change->expire_seconds : 0)),
        change->book_id,
        change->book_title,
        arena_sprintf(a, "%lld", (long long)(change->event_time_ms > 0 ? change->event_time_ms : 0)),
        generation,
        change->queue_book_id ? change->queue_book_id : "",
        arena_sprintf(a, "%llu", (unsigned long long)change->queue_version),
        change->queue_hold_ids ? change->queue_hold_ids : "",
        arena_sprintf(a, "%lld", (long long)(change->order_ms > 0 ? change->order_ms : 0)),
        arena_sprintf(a, "%lld", (long long)timestamp_now_ms()),
        arena_sprintf(a, "%lld", (long long)atomic_load(&store->retention_ms)),
    };
    redisReply *reply = NULL;
    status_code code = run_script(store, &store->apply_hold, sizeof argv / sizeof argv[0], argv, &reply, st);
    if (code == STATUS_OK) {
        bool well_formed = reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
                           reply->element[0]->type == REDIS_REPLY_INTEGER;
        if (changed)
            *changed = well_formed && reply->element[0]->integer == 1;
        if (well_formed)
            tell_moved(reply, moved, moved_arg);
        freeReplyObject(reply);
    }
    arena_destroy(a);
    return code;
}

status_code page_store_apply_hold(page_store *store, const hold_change *change, uint64_t sequence,
                                  bool *changed, page_user_moved moved, void *moved_arg, status *st) {
    return apply_hold(store, "", change, sequence, changed, moved, moved_arg, st);
}

status_code page_store_apply_hold_to(page_store *store, uint64_t generation, const hold_change *change,
                                     uint64_t sequence, status *st) {
    char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)generation);
    return apply_hold(store, text, change, sequence, NULL, NULL, NULL, st);
}

status_code page_store_apply(page_store *store, const loan_change *change, uint64_t sequence,
                             bool *changed, status *st) {
    return apply(store, "", change, sequence, changed, st);
}

void page_store_set_retention(page_store *store, int64_t retention_ms) {
    atomic_store(&store->retention_ms, retention_ms > 0 ? retention_ms : 0);
}

status_code page_store_sweep(page_store *store, int64_t now_ms, int limit, bool *more, page_user_moved removed,
                             void *removed_arg, status *st) {
    *more = false;
    int64_t retention_ms = atomic_load(&store->retention_ms);
    if (retention_ms <= 0)
        return STATUS_OK;
    char now[24], retention[24], batch[24];
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    snprintf(retention, sizeof retention, "%lld", (long long)retention_ms);
    snprintf(batch, sizeof batch, "%d", limit > 0 ? limit : 1);
    const char *argv[] = {"1", KEY_GENERATION, now, retention, batch};
    redisReply *reply = NULL;
    status_code code = run_script(store, &store->sweep, sizeof argv / sizeof argv[0], argv, &reply, st);
    if (code != STATUS_OK)
        return code;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 && reply->element[0]->type == REDIS_REPLY_INTEGER) {
        *more = reply->element[0]->integer == 1;
        tell_moved(reply, removed, removed_arg);
    }
    freeReplyObject(reply);
    return STATUS_OK;
}

status_code page_store_apply_to(page_store *store, uint64_t generation, const loan_change *change,
                                uint64_t sequence, status *st) {
    char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)generation);
    return apply(store, text, change, sequence, NULL, st);
}

static status_code apply_account(page_store *store, const char *generation, const account_change *change,
                                 bool *changed, status *st) {
    arena *a = arena_create(0);
    if (a == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    const char *argv[] = {
        "2", KEY_GENERATION, KEY_BUILDING,
        text_base64url_encode(a, (const uint8_t *)change->user_id, strlen(change->user_id)),
        arena_sprintf(a, "%llu", (unsigned long long)change->version),
        change->account,
        arena_sprintf(a, "%lld", (long long)(change->event_time_ms > 0 ? change->event_time_ms : 0)),
        generation,
        change->loan_fines,
    };
    status_code code = run_change_script(store, &store->apply_account, sizeof argv / sizeof argv[0], argv, changed, st);
    arena_destroy(a);
    return code;
}

status_code page_store_apply_account(page_store *store, const account_change *change, bool *changed,
                                     status *st) {
    return apply_account(store, "", change, changed, st);
}

status_code page_store_apply_account_to(page_store *store, uint64_t generation, const account_change *change,
                                        status *st) {
    char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)generation);
    return apply_account(store, text, change, NULL, st);
}

/* The page from the load script's reply (HGETALL pairs); NULL when out of memory. */
static Library__Mypage__V1__Mypage *page_from_reply(arena *a, const char *user_id, const redisReply *reply) {
    size_t pairs = reply->type == REDIS_REPLY_ARRAY ? reply->elements / 2 : 0;
    const char **fields = arena_alloc(a, (pairs + 1) * sizeof *fields);
    const char **values = arena_alloc(a, (pairs + 1) * sizeof *values);
    if (fields == NULL || values == NULL)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < pairs; i++) {
        const redisReply *field = reply->element[2 * i], *value = reply->element[2 * i + 1];
        if (field->type != REDIS_REPLY_STRING || value->type != REDIS_REPLY_STRING)
            continue;
        fields[n] = arena_strndup(a, field->str, field->len);
        values[n] = arena_strndup(a, value->str, value->len);
        n += fields[n] && values[n];
    }
    return page_build(a, user_id, fields, values, n, timestamp_now_ms() / 1000);
}

status_code page_store_load(page_store *store, arena *a, const char *user_id,
                            Library__Mypage__V1__Mypage **out, status *st) {
    const char *argv[] = {"1", KEY_GENERATION,
                          text_base64url_encode(a, (const uint8_t *)user_id, strlen(user_id))};
    redisReply *reply = NULL;
    status_code code = run_script(store, &store->load, 3, argv, &reply, st);
    if (code != STATUS_OK)
        return code;
    Library__Mypage__V1__Mypage *page = page_from_reply(a, user_id, reply);
    freeReplyObject(reply);
    if (page == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    *out = page;
    return STATUS_OK;
}

/* --- loading without waiting ------------------------------------------------------------- */

typedef struct load_job {
    page_store *store;
    arena *a;
    const char *user_id;
    const char *argv[5]; /* EVALSHA|EVAL, sha1|source, "1", the generation key, the user */
    bool with_source;    /* sent with EVAL after a NOSCRIPT */
    page_loaded done;
    void *arg;
} load_job;

static bool load_send(load_job *job);

static void load_replied(void *arg, redisReply *reply, const char *error) {
    load_job *job = arg;
    status st;
    status_clear(&st);
    status_code code = STATUS_OK;
    Library__Mypage__V1__Mypage *page = NULL;
    if (reply == NULL) {
        code = status_set(&st, STATUS_UNAVAILABLE, "REDIS_UNAVAILABLE", "Redis did not answer: %s", error);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        if (!job->with_source && strncmp(reply->str, "NOSCRIPT", 8) == 0) {
            job->with_source = true; /* Redis restarted or was flushed: EVAL loads it again */
            if (load_send(job))
                return;
            code = status_set(&st, STATUS_UNAVAILABLE, "REDIS_UNAVAILABLE", "Redis is unavailable");
        } else if (cannot_serve(reply->str) || cannot_write(reply->str)) {
            code = status_set(&st, STATUS_UNAVAILABLE, "REDIS_UNAVAILABLE", "Redis: %.200s", reply->str);
        } else {
            code = status_set(&st, STATUS_INTERNAL, "REDIS_ERROR", "Redis: %.200s", reply->str);
        }
    } else {
        page = page_from_reply(job->a, job->user_id, reply);
        if (page == NULL)
            code = status_set(&st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    }
    job->done(job->arg, code, &st, page); /* the last use of job: its arena may go with it */
}

static bool load_send(load_job *job) {
    job->argv[0] = job->with_source ? "EVAL" : "EVALSHA";
    job->argv[1] = job->with_source ? job->store->load.source : job->store->load.sha1;
    size_t lengths[5];
    for (int i = 0; i < 5; i++)
        lengths[i] = strlen(job->argv[i]);
    return redis_pipe_send(job->store->pipe, 5, job->argv, lengths, load_replied, job);
}

bool page_store_load_async(page_store *store, arena *a, const char *user_id, page_loaded done, void *arg) {
    pthread_mutex_lock(&store->lock);
    if (store->pipe == NULL && !store->pipe_failed) {
        redis_login login = login_of(store);
        store->pipe = redis_pipe_open(store->host, store->port, store->database, &login,
                                      (int64_t)store->timeout.tv_sec * 1000 + store->timeout.tv_usec / 1000,
                                      PIPE_MAX_PENDING);
        store->pipe_failed = store->pipe == NULL;
    }
    pthread_mutex_unlock(&store->lock);
    if (store->pipe == NULL)
        return false;
    load_job *job = arena_alloc(a, sizeof *job);
    const char *user = arena_strdup(a, user_id);
    const char *encoded = text_base64url_encode(a, (const uint8_t *)user_id, strlen(user_id));
    if (job == NULL || user == NULL || encoded == NULL)
        return false;
    *job = (load_job){.store = store, .a = a, .user_id = user, .done = done, .arg = arg};
    job->argv[2] = "1";
    job->argv[3] = KEY_GENERATION;
    job->argv[4] = encoded;
    return load_send(job);
}

status_code page_store_ping(page_store *store, status *st) {
    const char *argv[] = {"PING"};
    redisReply *reply = NULL;
    status_code code = command(store, 1, argv, &reply, st);
    if (code == STATUS_OK)
        freeReplyObject(reply);
    return code;
}

status_code page_store_rebuild_begin(page_store *store, uint64_t *generation, status *st) {
    const char *argv[] = {"3", KEY_GENERATION, KEY_BUILDING, KEY_NEXT};
    redisReply *reply = NULL;
    status_code code = run_script(store, &store->begin, 4, argv, &reply, st);
    if (code != STATUS_OK)
        return code;
    bool ok = reply->type == REDIS_REPLY_INTEGER && reply->integer > 0;
    if (ok)
        *generation = (uint64_t)reply->integer;
    freeReplyObject(reply);
    return ok ? STATUS_OK
              : status_set(st, STATUS_INTERNAL, "REDIS_ERROR", "Redis gave no generation number");
}

/* Deletes every page of a generation, a batch at a time (UNLINK frees memory in the
 * background, SCAN never blocks Redis for long). */
static status_code delete_generation(page_store *store, const char *generation, status *st) {
    char pattern[64], cursor[32] = "0";
    snprintf(pattern, sizeof pattern, "mypage:%s:*", generation);
    size_t deleted = 0;
    do {
        const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "500"};
        redisReply *reply = NULL;
        if (command(store, 6, argv, &reply, st) != STATUS_OK)
            return st->code;
        bool well_formed = reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
                           reply->element[0]->type == REDIS_REPLY_STRING &&
                           reply->element[1]->type == REDIS_REPLY_ARRAY;
        if (!well_formed) {
            freeReplyObject(reply);
            return status_set(st, STATUS_INTERNAL, "REDIS_ERROR", "Redis answered SCAN strangely");
        }
        snprintf(cursor, sizeof cursor, "%s", reply->element[0]->str);
        /* COUNT is a hint: a SCAN may return more keys than one UNLINK takes */
        const redisReply *keys = reply->element[1];
        for (size_t next = 0; next < keys->elements && st->code == STATUS_OK;) {
            const char *unlink[CLEANUP_BATCH + 1];
            size_t n = 0;
            unlink[n++] = "UNLINK";
            for (; next < keys->elements && n <= CLEANUP_BATCH; next++)
                if (keys->element[next]->type == REDIS_REPLY_STRING)
                    unlink[n++] = keys->element[next]->str;
            redisReply *unlinked = NULL;
            if (n > 1 && command(store, (int)n, unlink, &unlinked, st) == STATUS_OK) {
                deleted += n - 1;
                freeReplyObject(unlinked);
            }
        }
        freeReplyObject(reply);
        if (st->code != STATUS_OK)
            return st->code;
    } while (strcmp(cursor, "0") != 0);
    LOG_INFO("deleted %zu pages of generation %s", deleted, generation);
    return STATUS_OK;
}

status_code page_store_rebuild_switch(page_store *store, uint64_t generation, status *st) {
    char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)generation);
    const char *argv[] = {"2", KEY_GENERATION, KEY_BUILDING, text};
    redisReply *reply = NULL;
    status_code code = run_script(store, &store->switch_over, 4, argv, &reply, st);
    if (code != STATUS_OK)
        return code;
    char old[24] = "";
    if (reply->type == REDIS_REPLY_STRING)
        snprintf(old, sizeof old, "%s", reply->str);
    freeReplyObject(reply);
    if (old[0] == '\0' || strcmp(old, text) == 0)
        return STATUS_OK;
    /* Pages are in use from the new generation already; a failed cleanup leaves garbage,
     * not wrong answers, so it is reported but does not fail the rebuild. */
    status cleanup;
    status_clear(&cleanup);
    if (delete_generation(store, old, &cleanup) != STATUS_OK)
        LOG_WARN("could not delete the pages of generation %s: %s", old, cleanup.message);
    return STATUS_OK;
}

void page_store_rebuild_abort(page_store *store, uint64_t generation) {
    char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)generation);
    const char *argv[] = {"2", KEY_BUILDING, KEY_GENERATION, text};
    redisReply *reply = NULL;
    status st;
    status_clear(&st);
    if (run_script(store, &store->abort, 4, argv, &reply, &st) != STATUS_OK) {
        /* its pages stay: garbage, never a hole in the pages in use */
        LOG_WARN("could not abandon rebuild generation %s: %s", text, st.message);
        return;
    }
    bool in_use = reply->type == REDIS_REPLY_INTEGER && reply->integer == 0;
    freeReplyObject(reply);
    if (in_use) {
        LOG_WARN("rebuild generation %s is in use after all: its switch went through", text);
        return;
    }
    status_clear(&st);
    if (delete_generation(store, text, &st) != STATUS_OK)
        LOG_WARN("could not delete the pages of generation %s: %s", text, st.message);
}
