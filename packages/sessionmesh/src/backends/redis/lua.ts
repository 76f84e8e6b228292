// The Lua the Redis backend runs. Two sets over one key layout:
//
//   <prefix>s:<id>    the session: a hash, data keys as '.' + key (but the
//                     cookie, packed, in k and the version in v: fields.ts),
//                     meta fields c created, l last seen, e expires, u user,
//                     i ip, and A the agent, packed (agent.ts); a packed agent
//                     over 64 bytes goes on in A1, A2, … (see pieces). The
//                     previous release stored it unpacked, in a (read, and
//                     deleted when this release writes the agent). The scripts
//                     take data fields by the names they are stored under.
//   <prefix>t:<id>    its tombstone, on one server (the previous release's layout)
//   <prefix>ix:<n>    user index buckets: one field per user
//   <prefix>events    the event channel
//
// On one server (or a Sentinel-managed primary) a write is one script that also
// keeps the user index. On a cluster every script touches exactly one key, so that
// a slot migration can always redirect it (a script whose keys are split between
// two nodes mid-migration is answered TRYAGAIN): the tombstone is the session key
// itself, a hash holding only 't', and the session and its user's index are
// written by separate scripts, in the order the cluster backend explains. Every script checks its arguments and what it reads before it
// writes anything: Redis does not roll back a script that fails half-way.

/** Lua shared by every script. */
const COMMON = `
local function late(deadline)
  local d = tonumber(deadline)
  if not d or d == 0 then return false end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > d
end
local LATE = 'LATE sessionmesh: the call reached Redis after its deadline; nothing was done'
local MAX_TIME = 8640000000000000
local function time(value)
  local n = tonumber(value)
  if n and n >= 0 and n <= MAX_TIME and n == math.floor(n) then return n end
  return nil
end
local function members(idx, uid)
  local stored = redis.call('HGET', idx, uid)
  if not stored then return {} end
  local ok, list = pcall(cjson.decode, stored)
  local out = {}
  if ok and type(list) == 'table' then
    for _, sid in ipairs(list) do
      if type(sid) == 'string' then out[#out + 1] = sid end
    end
  end
  return out
end
local function put(idx, uid, list)
  if #list == 0 then redis.call('HDEL', idx, uid) else redis.call('HSET', idx, uid, cjson.encode(list)) end
end
local function without(list, sid)
  local out = {}
  for _, member in ipairs(list) do
    if member ~= sid then out[#out + 1] = member end
  end
  return out
end
local function usable(idx)
  local t = redis.call('TYPE', idx).ok
  return t == 'hash' or t == 'none'
end
-- A destroy says why and who asked ('' for not said): every process can report
-- it, and the one that asked can tell its own destroy from others'.
local function publish(channel, kind, sid, reason, by)
  local message = '{"v":1,"type":"' .. kind .. '","sid":' .. cjson.encode(sid)
  if reason and reason ~= '' then message = message .. ',"reason":' .. cjson.encode(reason) end
  if by and by ~= '' then message = message .. ',"by":' .. cjson.encode(by) end
  redis.call('PUBLISH', channel, message .. '}')
end
-- Redis keeps a hash compact (a listpack, about half the memory of a hashtable)
-- only while every value is at most hash-max-listpack-value bytes, 64 by default.
-- A browser's User-Agent packs to less (agent.ts); one that does not is stored in
-- pieces of at most 64 bytes, 'A' then 'A1', 'A2', …, each cut between two UTF-8
-- characters (clients decode each field as text on its own).
local PIECE = 64
local function pieces(value)
  local out, from, n = {}, 1, #value
  while from <= n do
    local to = math.min(from + PIECE - 1, n)
    while to < n and to > from do
      local b = string.byte(value, to + 1)
      if b < 128 or b >= 192 then break end
      to = to - 1
    end
    out[#out + 1] = string.sub(value, from, to)
    from = to + 1
  end
  return out
end
-- The agent as stored: the field called name and its pieces name1, name2, …, joined
-- (nil for none).
local function agentOf(key, name, first)
  if not first then return nil end
  local parts, k = {first}, 1
  while true do
    local part = redis.call('HGET', key, name .. k)
    if not part then return table.concat(parts) end
    parts[#parts + 1] = part
    k = k + 1
  end
end
-- Deletes the pieces of the field called name from the one numbered from on (0: the
-- field itself, then its pieces).
local function dropPieces(key, name, from)
  local k = from
  if k == 0 then
    if redis.call('HDEL', key, name) == 0 then return end
    k = 1
  end
  while redis.call('HDEL', key, name .. k) == 1 do k = k + 1 end
end
-- HSET and HDEL in chunks: unpack() of thousands of arguments overflows Lua's stack.
local function chunked(command, key, list, from, to)
  local i = from
  while i <= to do
    local last = math.min(i + 999, to)
    redis.call(command, key, unpack(list, i, last))
    i = last + 1
  end
end
-- Extends an existing session's expiry (ARGV: _, now, expiresAt, maxLifetime).
-- Returns the new expiry and the session's user; nil when there is no session (a
-- tombstone has no 'c'); nil and a message when a time is not valid.
local function extend(key)
  local meta = redis.call('HMGET', key, 'c', 'u')
  if not meta[1] then return nil end
  local created, now, expiresAt, maxLifetime = time(meta[1]), time(ARGV[2]), time(ARGV[3]), time(ARGV[4])
  if not (created and now and expiresAt and maxLifetime) then
    return nil, 'ERR sessionmesh: a stored or given time is not a valid epoch in ms'
  end
  if maxLifetime > 0 then expiresAt = math.min(expiresAt, created + maxLifetime) end
  redis.call('HSET', key, 'l', now, 'e', expiresAt)
  redis.call('PEXPIREAT', key, expiresAt)
  return expiresAt, meta[2]
end
-- Reads and checks what a session write needs. ARGV as the write scripts below.
-- A tombstone is a key of its own (one server) or the field 't' of the session key.
local function prepare(key, tombstones)
  local meta = redis.call('HMGET', key, 'c', 'u', 't')
  local created, old = meta[1], meta[2]
  if meta[3] and not created then return 'gone' end
  local now, expiresAt, maxLifetime = time(ARGV[5]), time(ARGV[6]), time(ARGV[7])
  if not (now and expiresAt and maxLifetime) then
    return nil, 'ERR sessionmesh: a time argument is not a valid epoch in ms'
  end
  if created then
    created = time(created)
    if not created then return nil, 'ERR sessionmesh: the stored session has a corrupt creation time' end
  else
    if ARGV[3] == 'update' then return 'gone' end
    for _, tombstone in ipairs(tombstones) do
      if redis.call('EXISTS', tombstone) == 1 then return 'gone' end
    end
  end
  local n = tonumber(ARGV[11])
  if not n or n < 0 or 12 + 2 * n > #ARGV + 1 then return nil, 'ERR sessionmesh: bad field count' end
  if maxLifetime > 0 then expiresAt = math.min(expiresAt, (created or now) + maxLifetime) end
  return { created = created, old = old, now = now, expiresAt = expiresAt, n = n }
end
-- With a basis (writeAndRead): what its field held before the write, read before apply().
local function basisBefore(key, basisKey)
  if basisKey == '' then return false end
  return redis.call('HGET', key, basisKey)
end
-- The reply's tail for writeAndRead: the basis field's value before the write
-- ('' for none) and, when that was not the basis value, the session as written.
local function basisReply(reply, key, before, basisValue)
  reply[#reply + 1] = before or ''
  if before ~= basisValue then reply[#reply + 1] = redis.call('HGETALL', key) end
  return reply
end
-- The write's reseal (JSON { field: [from, to] } or ''), taken out of ARGV by the script.
local RESEAL = ''
-- Applies a prepared write to the session hash; returns nothing, fails on nothing.
local function apply(key, w)
  local args = {'l', w.now, 'e', w.expiresAt}
  if not w.created then
    args[#args + 1] = 'c'
    args[#args + 1] = w.now
  elseif ARGV[4] == '1' then
    local stale = {}
    for _, name in ipairs(redis.call('HKEYS', key)) do
      if string.byte(name, 1) == 46 then stale[#stale + 1] = name end
    end
    chunked('HDEL', key, stale, 1, #stale)
  end
  -- The device: recorded when the session is created; an update writes the fields
  -- it carries (sealed again after a key rotation).
  if (not w.created or ARGV[3] == 'update') and ARGV[9] ~= '' then
    local parts = pieces(ARGV[9])
    -- What an agent this one replaces (a reseal) leaves: its pieces past the new
    -- ones, or the previous release's unpacked agent.
    if w.created then
      dropPieces(key, 'A', #parts)
      dropPieces(key, 'a', 0)
    end
    for k, part in ipairs(parts) do
      args[#args + 1] = k == 1 and 'A' or 'A' .. (k - 1)
      args[#args + 1] = part
    end
  end
  if (not w.created or ARGV[3] == 'update') and ARGV[10] ~= '' then args[#args + 1] = 'i'; args[#args + 1] = ARGV[10] end
  local uid = ARGV[8]
  if uid ~= '' and w.old ~= uid then args[#args + 1] = 'u'; args[#args + 1] = uid end
  if uid == '' and w.old then redis.call('HDEL', key, 'u') end
  for i = 12, 11 + 2 * w.n do args[#args + 1] = ARGV[i] end
  chunked('HSET', key, args, 1, #args)
  if #ARGV > 11 + 2 * w.n then chunked('HDEL', key, ARGV, 12 + 2 * w.n, #ARGV) end
  -- A key is sealed again only where it still holds what the request loaded.
  if RESEAL ~= '' and ARGV[3] == 'update' then
    local ok, again = pcall(cjson.decode, RESEAL)
    if ok and type(again) == 'table' then
      for name, pair in pairs(again) do
        if type(pair) == 'table' and type(pair[1]) == 'string' and type(pair[2]) == 'string'
          and redis.call('HGET', key, name) == pair[1] then
          redis.call('HSET', key, name, pair[2])
        end
      end
    end
  end
  redis.call('PEXPIREAT', key, w.expiresAt)
end
`

/** One server or a Sentinel-managed primary: every call is one atomic script. */
export function standaloneScripts(buckets: number) {
  const index = `${COMMON}
local function bucket(prefix, uid)
  return prefix .. 'ix:' .. (tonumber(string.sub(redis.sha1hex(uid), 1, 8), 16) % ${buckets})
end
-- pcall: a member's key may hold another type (a corrupt record): not a live session.
local function live(prefix, sid)
  return redis.pcall('HEXISTS', prefix .. 's:' .. sid, 'c') == 1
end
local function alive(prefix, list)
  local out = {}
  for _, sid in ipairs(list) do
    if live(prefix, sid) then out[#out + 1] = sid end
  end
  return out
end
local function tombstone(prefix, sid)
  return prefix .. 't:' .. sid
end
`
  return {
    // KEYS: session, tombstone. ARGV: prefix, sid, mode, replace, now, expiresAt, maxLifetime, userId,
    // userAgent, ip, reseal, deadline, session limit (0 for none), its policy,
    // tombstone ttl, the caller's name, the basis field and value ('' for none), #set
    // fields, then field/value pairs, then fields to delete. The eight after ip are
    // taken out first, so that the rest is laid out as prepare() and apply() read
    // it. Returns 1 when written, 0 when gone, 2 when a login was refused by the
    // limit (nothing written), or the ids the limit revoked to make room; with a
    // basis (and no limit), {1, the basis field before, [the session's hash]}.
    write: `${index}
RESEAL = table.remove(ARGV, 11)
local deadline = table.remove(ARGV, 11)
local limit = tonumber(table.remove(ARGV, 11)) or 0
local policy = table.remove(ARGV, 11)
local tombstoneTtl = table.remove(ARGV, 11)
local by = table.remove(ARGV, 11)
local basisKey = table.remove(ARGV, 11)
local basisValue = table.remove(ARGV, 11)
if late(deadline) then return redis.error_reply(LATE) end
local key, prefix, sid = KEYS[1], ARGV[1], ARGV[2]
local w, problem = prepare(key, {KEYS[2]})
if not w then return redis.error_reply(problem) end
if w == 'gone' then return 0 end
local uid = ARGV[8]
local joining = uid ~= '' and w.old ~= uid
local leaving = w.old and w.old ~= uid
if (joining and not usable(bucket(prefix, uid))) or (leaving and not usable(bucket(prefix, w.old))) then
  return redis.error_reply('ERR sessionmesh: a user index bucket holds another data type')
end
-- A login under the limit: the user's live sessions in login order, oldest first.
local list, revoked = nil, {}
if joining then
  list = alive(prefix, without(members(bucket(prefix, uid), uid), sid))
  local excess = #list - (limit - 1)
  if limit > 0 and excess > 0 then
    if policy == 'refuse' then return 2 end
    local kept = {}
    for i, member in ipairs(list) do
      if i <= excess then revoked[#revoked + 1] = member else kept[#kept + 1] = member end
    end
    list = kept
  end
end
local before = basisBefore(key, basisKey)
apply(key, w)
if leaving then
  local idx = bucket(prefix, w.old)
  put(idx, w.old, without(members(idx, w.old), sid))
end
if joining then
  local idx = bucket(prefix, uid)
  for _, victim in ipairs(revoked) do
    redis.call('DEL', prefix .. 's:' .. victim)
    redis.call('SET', tombstone(prefix, victim), '1', 'PX', tombstoneTtl)
    publish(prefix .. 'events', 'destroyed', victim, 'limit', by)
  end
  list[#list + 1] = sid
  put(idx, uid, list)
  -- Users who never come back: sweep two other users of this bucket on each login.
  for _, other in ipairs(redis.call('HRANDFIELD', idx, 2)) do
    if other ~= uid then put(idx, other, alive(prefix, members(idx, other))) end
  end
  redis.call('PEXPIREAT', idx, w.expiresAt, 'NX')
  redis.call('PEXPIREAT', idx, w.expiresAt, 'GT')
elseif uid ~= '' then
  redis.call('PEXPIREAT', bucket(prefix, uid), w.expiresAt, 'GT')
end
publish(prefix .. 'events', 'changed', sid)
if #revoked > 0 then return revoked end
if basisKey ~= '' then return basisReply({1}, key, before, basisValue) end
return 1
`,
    // KEYS: session. ARGV: prefix, now, expiresAt, maxLifetime, deadline.
    touch: `${index}
if late(ARGV[5]) then return redis.error_reply(LATE) end
local expiresAt, uid = extend(KEYS[1])
if not expiresAt then
  if uid then return redis.error_reply(uid) end
  return 0
end
if uid then
  local idx = bucket(ARGV[1], uid)
  if usable(idx) then redis.call('PEXPIREAT', idx, expiresAt, 'GT') end
end
return 1
`,
    // ARGV: prefix, tombstone ttl, deadline, reason, caller, then session ids. Destroys
    // each and leaves a tombstone; a corrupt index never keeps a session from being destroyed.
    destroy: `${index}
if late(ARGV[3]) then return redis.error_reply(LATE) end
local prefix, reason, by = ARGV[1], ARGV[4], ARGV[5]
local destroyed = {}
for i = 6, #ARGV do
  local sid = ARGV[i]
  local key = prefix .. 's:' .. sid
  local uid = redis.pcall('HGET', key, 'u')
  if type(uid) == 'string' then
    local idx = bucket(prefix, uid)
    if usable(idx) then put(idx, uid, without(members(idx, uid), sid)) end
  end
  if redis.call('DEL', key) == 1 then destroyed[#destroyed + 1] = sid end
  redis.call('SET', tombstone(prefix, sid), '1', 'PX', ARGV[2])
  publish(prefix .. 'events', 'destroyed', sid, reason, by)
end
return destroyed
`,
    // ARGV: prefix, tombstone ttl, except, user id, deadline, reason, caller.
    destroyUser: `${index}
if late(ARGV[5]) then return redis.error_reply(LATE) end
local prefix, except, uid = ARGV[1], ARGV[3], ARGV[4]
local idx = bucket(prefix, uid)
if not usable(idx) then return redis.error_reply('ERR sessionmesh: a user index bucket holds another data type') end
local destroyed, kept = {}, {}
for _, sid in ipairs(members(idx, uid)) do
  if sid == except then
    kept[#kept + 1] = sid
  else
    if redis.call('DEL', prefix .. 's:' .. sid) == 1 then destroyed[#destroyed + 1] = sid end
    redis.call('SET', tombstone(prefix, sid), '1', 'PX', ARGV[2])
    publish(prefix .. 'events', 'destroyed', sid, ARGV[6], ARGV[7])
  end
end
put(idx, uid, alive(prefix, kept))
return destroyed
`,
    // ARGV: prefix, user id. Members whose session is gone are dropped.
    listUser: `${index}
local prefix, uid = ARGV[1], ARGV[2]
local idx = bucket(prefix, uid)
if not usable(idx) then return {} end
local listed = members(idx, uid)
local out, kept = {}, {}
for _, sid in ipairs(listed) do
  local key = prefix .. 's:' .. sid
  local m = redis.pcall('HMGET', key, 'c', 'l', 'e', 'a', 'i', 'A')
  if type(m) == 'table' and not m.err and m[1] then
    out[#out + 1] = {sid, m[1], m[2], m[3], agentOf(key, 'a', m[4]) or '', m[5] or '', agentOf(key, 'A', m[6]) or ''}
    kept[#kept + 1] = sid
  end
end
if #kept ~= #listed then put(idx, uid, kept) end
return out
`,
  }
}

/**
 * A cluster: each script touches one hash slot, every key in KEYS. The session
 * scripts touch the session and its tombstone; the index scripts one bucket.
 * Here a user's field maps each session id to when it joined (epoch ms), so that
 * upkeep can tell a login still on its way (joined, session not written yet) from
 * a session that is gone: only entries older than a grace period are pruned.
 */
const CLUSTER_INDEX = `${COMMON}
local function entries(idx, uid)
  local stored = redis.call('HGET', idx, uid)
  local out = {}
  if not stored then return out end
  local ok, value = pcall(cjson.decode, stored)
  if ok and type(value) == 'table' then
    for k, v in pairs(value) do
      if type(k) == 'string' and type(v) == 'number' then out[k] = v
      elseif type(k) == 'number' and type(v) == 'string' then out[v] = 0 end
    end
  end
  return out
end
local function save(idx, uid, map)
  if next(map) == nil then redis.call('HDEL', idx, uid) else redis.call('HSET', idx, uid, cjson.encode(map)) end
end
local function encode(map)
  if next(map) == nil then return '{}' end
  return cjson.encode(map)
end
`

/**
 * KEYS: session. Deletes the session's hash unless it is a tombstone (on a cluster,
 * the session key holding only 't'; on one server the tombstone is a key of its
 * own, which this leaves alone). Publishes nothing.
 */
export const evictScript = `
if redis.call('HEXISTS', KEYS[1], 't') == 1 then return 0 end
return redis.call('DEL', KEYS[1])
`

export const clusterScripts = {
  // KEYS: session. ARGV as the standalone write, with the user whose
  // index the caller has already joined ('' for none) after the deadline, then the
  // basis field and value ('' for none). Returns {1, previous user} when written
  // (with a basis: then the basis field before, and the session's hash when it was
  // not the basis value), {0} when gone, and {2, previous user} when the write
  // would move the session to a user whose index was not joined: a live session
  // must never be missing from its user's index.
  write: `${COMMON}
RESEAL = table.remove(ARGV, 11)
local deadline = table.remove(ARGV, 11)
local joined = table.remove(ARGV, 11)
local basisKey = table.remove(ARGV, 11)
local basisValue = table.remove(ARGV, 11)
if late(deadline) then return redis.error_reply(LATE) end
local key = KEYS[1]
local w, problem = prepare(key, {})
if not w then return redis.error_reply(problem) end
if w == 'gone' then return {0} end
local uid = ARGV[8]
if uid ~= '' and w.old ~= uid and joined ~= uid then return {2, w.old or ''} end
local before = basisBefore(key, basisKey)
apply(key, w)
publish(ARGV[1] .. 'events', 'changed', ARGV[2])
if basisKey ~= '' then return basisReply({1, w.old or ''}, key, before, basisValue) end
return {1, w.old or ''}
`,
  // KEYS: session. ARGV: unused, now, expiresAt, maxLifetime, deadline.
  touch: `${COMMON}
if late(ARGV[5]) then return redis.error_reply(LATE) end
local expiresAt, problem = extend(KEYS[1])
if not expiresAt then
  if problem then return redis.error_reply(problem) end
  return 0
end
return 1
`,
  // KEYS: session. ARGV: channel, sid, tombstone ttl, deadline, expected user (''
  // for any), reason, caller. Replaces the session with its tombstone. Returns {destroyed 0/1,
  // user}; a session that now belongs to another user than expected is left alone
  // ({-1, user}).
  destroy: `${COMMON}
if late(ARGV[4]) then return redis.error_reply(LATE) end
local key = KEYS[1]
local uid = redis.pcall('HGET', key, 'u')
if type(uid) ~= 'string' then uid = '' end
local live = redis.pcall('HEXISTS', key, 'c') == 1
if ARGV[5] ~= '' and live and uid ~= ARGV[5] then return {-1, uid} end
local destroyed = live and 1 or 0
redis.call('DEL', key)
redis.call('HSET', key, 't', '1')
redis.call('PEXPIRE', key, ARGV[3])
publish(ARGV[1], 'destroyed', ARGV[2], ARGV[6], ARGV[7])
return {destroyed, uid}
`,
  // KEYS: bucket. ARGV: user, sid, deadline, now. Adds the session to the user's
  // entries and answers them, with two other users' entries of the bucket to sweep.
  join: `${CLUSTER_INDEX}
if late(ARGV[3]) then return redis.error_reply(LATE) end
local idx, uid, sid = KEYS[1], ARGV[1], ARGV[2]
local now = time(ARGV[4])
if not now then return redis.error_reply('ERR sessionmesh: a time argument is not a valid epoch in ms') end
if not usable(idx) then return redis.error_reply('ERR sessionmesh: a user index bucket holds another data type') end
local map = entries(idx, uid)
map[sid] = now
save(idx, uid, map)
local others = {}
for _, other in ipairs(redis.call('HRANDFIELD', idx, 2)) do
  if other ~= uid then others[#others + 1] = {other, encode(entries(idx, other))} end
end
return {encode(map), others}
`,
  // KEYS: bucket. ARGV: user, then id/joined pairs: each id is dropped, when its
  // joined time is '' at once, otherwise only if it still joined at that time (a
  // sweep must not drop a session that logged in again since it looked).
  leave: `${CLUSTER_INDEX}
local idx, uid = KEYS[1], ARGV[1]
if not usable(idx) then return 0 end
local map = entries(idx, uid)
local dropped = 0
for i = 2, #ARGV - 1, 2 do
  local sid, joined = ARGV[i], ARGV[i + 1]
  if map[sid] and (joined == '' or tostring(map[sid]) == joined) then
    map[sid] = nil
    dropped = dropped + 1
  end
end
if dropped > 0 then save(idx, uid, map) end
return dropped
`,
  // KEYS: bucket. ARGV: user. The user's entries, as stored.
  members: `${CLUSTER_INDEX}
if not usable(KEYS[1]) then return '{}' end
return encode(entries(KEYS[1], ARGV[1]))
`,
}
