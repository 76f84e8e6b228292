import { createHash } from 'node:crypto'
import { debuglog } from 'node:util'
import {
  type Backend,
  type BusState,
  type IndexedSession,
  MalformedRecordError,
  parseEvent,
  type SessionEvent,
  type SessionMeta,
  type SessionTouch,
  type SessionWrite,
  type StoredSession,
  type WriteResult,
} from '../core/backend.js'
import { InvalidOptionError } from '../core/errors.js'

const debug = debuglog('sessionmesh:redis')

/** The part of a node-redis (v5+) client this backend uses. */
export interface NodeRedisLike {
  sendCommand(args: string[]): Promise<unknown>
  duplicate(): unknown
}

/** The part of an ioredis client this backend uses. */
export interface IoredisLike {
  call(command: string, ...args: string[]): Promise<unknown>
  duplicate(): unknown
}

/** A connected node-redis (v5+) or ioredis client. */
export type RedisLike = NodeRedisLike | IoredisLike

/** Options of {@link redisBackend}. */
export interface RedisBackendOptions {
  /** A connected node-redis (v5+) or ioredis client. The backend never closes it. */
  client: RedisLike
  /**
   * Prefix of every key and of the event channel. Sessions live at `<prefix>s:<id>`,
   * user indexes at `<prefix>u:<user>`, tombstones at `<prefix>t:<id>`.
   * @default 'sm:'
   */
  prefix?: string
  /**
   * How long a destroyed session's id stays refused, in ms.
   * @default 3_600_000 (one hour)
   */
  tombstoneTtl?: number
  /**
   * Number of hashes the user index is spread over. Each stays compact while it
   * holds up to 128 users (Redis's `hash-max-listpack-entries`), so a good value
   * is your number of users / 100; more buckets than users wastes a key each.
   * Changing it orphans the index: choose it once per prefix.
   * @default 1024
   */
  indexBuckets?: number
}

// Layout of a session hash: data keys are stored as '.' + key, so that they can
// never collide with the one-letter meta fields: c created, l last seen,
// e expires, u user id, a user agent, i ip. No keyspace notifications are needed:
// the user index is checked against the sessions themselves (below).

/**
 * The scripts, for an index of `buckets` buckets. The user index lives in hashes
 * `<prefix>ix:<n>`, n from the user id's SHA-1: one field per user, holding the
 * JSON list of that user's session ids. A key per user would cost ~220 bytes per
 * user in Redis; a field in a shared, small (listpack) hash costs about 60.
 * Members whose session is gone are dropped when the user's field is read for a
 * list, a revocation or a login; a login into a bucket also sweeps two other
 * users' fields there (HRANDFIELD), for users who never come back; and a bucket
 * lives as long as its longest-lived session (PEXPIREAT ... GT, Redis 7).
 */
function scripts(buckets: number) {
  const index = `
local function bucket(prefix, uid)
  return prefix .. 'ix:' .. (tonumber(string.sub(redis.sha1hex(uid), 1, 8), 16) % ${buckets})
end
local function members(idx, uid)
  local stored = redis.call('HGET', idx, uid)
  if not stored then return {} end
  local ok, list = pcall(cjson.decode, stored)
  if ok and type(list) == 'table' then return list end
  return {}
end
local function put(idx, uid, list)
  if #list == 0 then redis.call('HDEL', idx, uid) else redis.call('HSET', idx, uid, cjson.encode(list)) end
end
local function alive(prefix, list)
  local out = {}
  for _, sid in ipairs(list) do
    if redis.call('EXISTS', prefix .. 's:' .. sid) == 1 then out[#out + 1] = sid end
  end
  return out
end
local function join(prefix, uid, sid, expiresAt)
  local idx = bucket(prefix, uid)
  local list = alive(prefix, members(idx, uid))
  list[#list + 1] = sid
  put(idx, uid, list)
  for _, other in ipairs(redis.call('HRANDFIELD', idx, 2)) do
    if other ~= uid then put(idx, other, alive(prefix, members(idx, other))) end
  end
  redis.call('PEXPIREAT', idx, expiresAt, 'NX')
  redis.call('PEXPIREAT', idx, expiresAt, 'GT')
end
local function leave(prefix, uid, sid)
  local idx = bucket(prefix, uid)
  local list = {}
  for _, member in ipairs(members(idx, uid)) do
    if member ~= sid then list[#list + 1] = member end
  end
  put(idx, uid, list)
end
local function stretch(prefix, uid, expiresAt)
  redis.call('PEXPIREAT', bucket(prefix, uid), expiresAt, 'GT')
end
local function publish(prefix, kind, sid)
  redis.call('PUBLISH', prefix .. 'events', '{"v":1,"type":"' .. kind .. '","sid":' .. cjson.encode(sid) .. '}')
end
`
  return {
    // KEYS: session, tombstone. ARGV: prefix, sid, mode, replace, now, expiresAt,
    // maxLifetime, userId, userAgent, ip, #set fields, then field/value pairs, then
    // fields to delete. An update needs no tombstone check: a destroy deletes the
    // key, and a create after a destroy is what the tombstone refuses.
    write: `${index}
local key, prefix, sid = KEYS[1], ARGV[1], ARGV[2]
local meta = redis.call('HMGET', key, 'c', 'u')
local created, old = meta[1], meta[2]
local args = {'l', ARGV[5]}
if not created then
  if ARGV[3] == 'update' or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
  created = ARGV[5]
  args[#args + 1] = 'c'
  args[#args + 1] = created
  if ARGV[9] ~= '' then args[#args + 1] = 'a'; args[#args + 1] = ARGV[9] end
  if ARGV[10] ~= '' then args[#args + 1] = 'i'; args[#args + 1] = ARGV[10] end
elseif ARGV[4] == '1' then
  for _, name in ipairs(redis.call('HKEYS', key)) do
    if string.byte(name, 1) == 46 then redis.call('HDEL', key, name) end
  end
end
local expiresAt = tonumber(ARGV[6])
local maxLifetime = tonumber(ARGV[7])
if maxLifetime > 0 then expiresAt = math.min(expiresAt, tonumber(created) + maxLifetime) end
args[#args + 1] = 'e'
args[#args + 1] = expiresAt
local uid = ARGV[8]
if uid ~= '' and old ~= uid then args[#args + 1] = 'u'; args[#args + 1] = uid end
local n = tonumber(ARGV[11])
for i = 12, 11 + 2 * n do args[#args + 1] = ARGV[i] end
redis.call('HSET', key, unpack(args))
if #ARGV > 11 + 2 * n then redis.call('HDEL', key, unpack(ARGV, 12 + 2 * n)) end
if old and old ~= uid then leave(prefix, old, sid) end
if uid == '' then
  if old then redis.call('HDEL', key, 'u') end
elseif old ~= uid then
  join(prefix, uid, sid, expiresAt)
else
  stretch(prefix, uid, expiresAt)
end
redis.call('PEXPIREAT', key, expiresAt)
publish(prefix, 'changed', sid)
return 1
`,
    // KEYS: session. ARGV: prefix, sid, now, expiresAt, maxLifetime.
    touch: `${index}
local key = KEYS[1]
local meta = redis.call('HMGET', key, 'c', 'u')
if not meta[1] then return 0 end
local expiresAt = tonumber(ARGV[4])
local maxLifetime = tonumber(ARGV[5])
if maxLifetime > 0 then expiresAt = math.min(expiresAt, tonumber(meta[1]) + maxLifetime) end
redis.call('HSET', key, 'l', ARGV[3], 'e', expiresAt)
redis.call('PEXPIREAT', key, expiresAt)
if meta[2] then stretch(ARGV[1], meta[2], expiresAt) end
return 1
`,
    // ARGV: prefix, tombstone ttl, then session ids. Destroys each and leaves a tombstone.
    destroy: `${index}
local prefix = ARGV[1]
local destroyed = {}
for i = 3, #ARGV do
  local sid = ARGV[i]
  local key = prefix .. 's:' .. sid
  local uid = redis.pcall('HGET', key, 'u')
  if type(uid) == 'string' then leave(prefix, uid, sid) end
  if redis.call('DEL', key) == 1 then destroyed[#destroyed + 1] = sid end
  redis.call('SET', prefix .. 't:' .. sid, '1', 'PX', ARGV[2])
  publish(prefix, 'destroyed', sid)
end
return destroyed
`,
    // ARGV: prefix, tombstone ttl, except, user id.
    destroyUser: `${index}
local prefix, except, uid = ARGV[1], ARGV[3], ARGV[4]
local idx = bucket(prefix, uid)
local destroyed, kept = {}, {}
for _, sid in ipairs(members(idx, uid)) do
  if sid == except then
    kept[#kept + 1] = sid
  else
    if redis.call('DEL', prefix .. 's:' .. sid) == 1 then destroyed[#destroyed + 1] = sid end
    redis.call('SET', prefix .. 't:' .. sid, '1', 'PX', ARGV[2])
    publish(prefix, 'destroyed', sid)
  end
end
put(idx, uid, alive(prefix, kept))
return destroyed
`,
    // ARGV: prefix, user id. Members whose session is gone are dropped.
    listUser: `${index}
local prefix, uid = ARGV[1], ARGV[2]
local idx = bucket(prefix, uid)
local listed = members(idx, uid)
local out, kept = {}, {}
for _, sid in ipairs(listed) do
  local m = redis.call('HMGET', prefix .. 's:' .. sid, 'c', 'l', 'e', 'a', 'i')
  if m[1] then
    out[#out + 1] = {sid, m[1], m[2], m[3], m[4] or '', m[5] or ''}
    kept[#kept + 1] = sid
  end
end
if #kept ~= #listed then put(idx, uid, kept) end
return out
`,
  }
}

/** After a reconnect, how long the subscriber gets to re-subscribe before events count as flowing again. */
const RESUBSCRIBE_GRACE_MS = 250

/** Replies that mean the server is there but cannot serve: treat as an outage. */
const UNAVAILABLE_REPLIES = /^(LOADING|BUSY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|READONLY)\b/

/**
 * Sessions in Redis, shared by every process that uses the same Redis and prefix.
 * Each write is one Lua script: the changed keys, the expiry, the user index and
 * the change event, atomically, in one round trip. Not for Redis Cluster: a
 * script touches the session, its tombstone and its user's index together.
 *
 * @example
 * const client = await createClient({ url }).connect()
 * const store = new SessionStore({ backend: redisBackend({ client }) })
 */
export function redisBackend(options: RedisBackendOptions): Backend {
  return new RedisBackend(options)
}

class RedisBackend implements Backend {
  readonly kind = 'redis'
  readonly #client: RedisLike
  readonly #prefix: string
  readonly #tombstoneTtl: string
  readonly #scripts: ReturnType<typeof scripts>
  readonly #shas = new Map<string, string>()

  constructor(options: RedisBackendOptions) {
    const client = options.client as Partial<NodeRedisLike & IoredisLike> | undefined
    if (typeof client?.call !== 'function' && typeof client?.sendCommand !== 'function') {
      throw new InvalidOptionError(
        'redisBackend needs `client`: a connected node-redis (v5+) or ioredis client',
      )
    }
    this.#client = options.client
    this.#prefix = options.prefix ?? 'sm:'
    this.#tombstoneTtl = String(options.tombstoneTtl ?? 3_600_000)
    const buckets = options.indexBuckets ?? 1024
    if (!Number.isInteger(buckets) || buckets < 1) {
      throw new InvalidOptionError(`indexBuckets must be a positive integer, not ${buckets}`)
    }
    this.#scripts = scripts(buckets)
  }

  async get(sid: string): Promise<StoredSession | null> {
    let reply: unknown
    try {
      reply = await this.#command('HGETALL', this.#key(sid))
    } catch (error) {
      if (isReply(error) && /^WRONGTYPE\b/.test(error.message)) {
        throw new MalformedRecordError(
          'the key holds another data type (another library’s format?)',
          {
            cause: error,
          },
        )
      }
      throw error
    }
    const pairs = toPairs(reply)
    if (pairs.length === 0) return null
    return decodeHash(pairs)
  }

  async write(sid: string, write: SessionWrite): Promise<WriteResult> {
    const set = Object.entries(write.set)
    const args = [
      this.#prefix,
      sid,
      write.mode,
      write.replace ? '1' : '0',
      String(write.now),
      String(Math.floor(write.expiresAt)),
      String(write.maxLifetime),
      write.userId ?? '',
      write.device.userAgent ?? '',
      write.device.ip ?? '',
      String(set.length),
    ]
    for (const [name, value] of set) args.push(`.${name}`, value)
    for (const name of write.unset) args.push(`.${name}`)
    const result = await this.#script(
      this.#scripts.write,
      [this.#key(sid), this.#tombstone(sid)],
      args,
    )
    return result === 1 ? 'ok' : 'gone'
  }

  async touch(sid: string, touch: SessionTouch): Promise<WriteResult> {
    const args = [
      this.#prefix,
      sid,
      String(touch.now),
      String(Math.floor(touch.expiresAt)),
      String(touch.maxLifetime),
    ]
    const result = await this.#script(this.#scripts.touch, [this.#key(sid)], args)
    return result === 1 ? 'ok' : 'gone'
  }

  async destroy(sid: string): Promise<void> {
    await this.#script(this.#scripts.destroy, [], [this.#prefix, this.#tombstoneTtl, sid])
  }

  async listUser(userId: string, _now: number): Promise<IndexedSession[]> {
    const rows = await this.#script(this.#scripts.listUser, [], [this.#prefix, userId])
    if (!Array.isArray(rows)) return []
    return rows.map((row: unknown) => {
      const [id, created, seen, expires, userAgent, ip] = (row as unknown[]).map(String)
      const meta: SessionMeta = {
        createdAt: Number(created),
        lastSeenAt: Number(seen),
        expiresAt: Number(expires),
        userId,
      }
      if (userAgent) meta.userAgent = userAgent
      if (ip) meta.ip = ip
      return { id: id ?? '', meta }
    })
  }

  async destroyUser(userId: string, except?: string): Promise<string[]> {
    const args = [this.#prefix, this.#tombstoneTtl, except ?? '', userId]
    const destroyed = await this.#script(this.#scripts.destroyUser, [], args)
    return Array.isArray(destroyed) ? destroyed.map(String) : []
  }

  async count(): Promise<number> {
    let count = 0
    await this.#scan(`${this.#prefix}s:*`, async (keys) => {
      count += keys.length
    })
    return count
  }

  async ids(): Promise<string[]> {
    const ids = new Set<string>()
    const start = this.#prefix.length + 2
    await this.#scan(`${this.#prefix}s:*`, async (keys) => {
      for (const key of keys) ids.add(key.slice(start))
    })
    return [...ids]
  }

  async clear(): Promise<void> {
    await this.#scan(`${this.#prefix}*`, async (keys) => {
      await this.#command('UNLINK', ...keys)
    })
  }

  async subscribe(
    listener: (event: SessionEvent) => void,
    onGap?: (state: BusState) => void,
  ): Promise<() => Promise<void>> {
    const channel = `${this.#prefix}events`
    const deliver = (message: string) => {
      const event = parseEvent(message)
      if (event) listener(event)
      else debug('ignoring a message on %s that is not a session event', channel)
    }
    const subscriber = this.#client.duplicate() as Subscriber
    // Pub/sub delivers at most once: a dropped connection loses what was published
    // meanwhile. Say so, and say when the subscription is back; the client
    // re-subscribes on reconnect, so allow it a moment before calling it restored.
    let gap = false
    let closing = false
    const lost = () => {
      if (gap || closing) return
      gap = true
      debug('subscriber connection lost: session events may be missed')
      onGap?.('lost')
    }
    const ready = () => {
      if (!gap || closing) return
      setTimeout(() => {
        if (!gap || closing) return
        gap = false
        debug('subscriber connection back')
        onGap?.('restored')
      }, RESUBSCRIBE_GRACE_MS).unref()
    }
    subscriber.on('error', (error: unknown) => {
      debug('subscriber error: %s', error)
      lost()
    })
    subscriber.on('end', lost)
    subscriber.on('close', lost)
    subscriber.on('ready', ready)
    if ('call' in this.#client) {
      subscriber.on('message', (_channel: string, message: string) => deliver(message))
      await subscriber.subscribe(channel)
    } else {
      await subscriber.connect?.()
      await subscriber.subscribe(channel, deliver)
    }
    return async () => {
      closing = true
      await (subscriber.quit?.() ?? subscriber.close?.())
    }
  }

  isOutage(error: unknown): boolean {
    return !isReply(error) || UNAVAILABLE_REPLIES.test(error.message)
  }

  async close(): Promise<void> {
    // The client belongs to the application; subscribers are closed by their own handles.
  }

  #key(sid: string): string {
    return `${this.#prefix}s:${sid}`
  }

  #tombstone(sid: string): string {
    return `${this.#prefix}t:${sid}`
  }

  #command(...args: string[]): Promise<unknown> {
    const client = this.#client
    if ('call' in client) {
      const [command = '', ...rest] = args
      return client.call(command, ...rest)
    }
    return client.sendCommand(args)
  }

  /** EVALSHA, falling back to EVAL once when the server does not have the script cached. */
  async #script(source: string, keys: string[], args: string[]): Promise<unknown> {
    let sha = this.#shas.get(source)
    if (!sha) {
      sha = createHash('sha1').update(source).digest('hex')
      this.#shas.set(source, sha)
    }
    const tail = [String(keys.length), ...keys, ...args]
    try {
      return await this.#command('EVALSHA', sha, ...tail)
    } catch (error) {
      if (!(isReply(error) && /^NOSCRIPT\b/.test(error.message))) throw error
      return this.#command('EVAL', source, ...tail)
    }
  }

  async #scan(pattern: string, each: (keys: string[]) => Promise<void>): Promise<void> {
    let cursor = '0'
    do {
      const reply = (await this.#command('SCAN', cursor, 'MATCH', pattern, 'COUNT', '500')) as [
        string,
        string[],
      ]
      cursor = String(reply[0])
      if (reply[1].length > 0) await each(reply[1].map(String))
    } while (cursor !== '0')
  }
}

interface Subscriber {
  on(event: string, listener: (...args: never[]) => void): void
  connect?(): Promise<unknown>
  subscribe(channel: string, listener?: (message: string) => void): Promise<unknown>
  quit?(): Promise<unknown>
  close?(): Promise<unknown>
}

/** An error reply from the server (ioredis's ReplyError, node-redis's ErrorReply): the server is up. */
function isReply(error: unknown): error is Error {
  if (!(error instanceof Error)) return false
  // node-redis leaves `name` as 'Error' on its subclasses, so look at the classes.
  for (let proto = Object.getPrototypeOf(error); proto && proto !== Error.prototype; ) {
    const name = (proto as { constructor?: { name?: string } }).constructor?.name
    if (name === 'ReplyError' || name === 'ErrorReply') return true
    proto = Object.getPrototypeOf(proto)
  }
  return false
}

/** HGETALL answers a flat array in RESP2 and a map in RESP3. */
function toPairs(reply: unknown): Array<[string, string]> {
  if (Array.isArray(reply)) {
    const pairs: Array<[string, string]> = []
    for (let i = 0; i + 1 < reply.length; i += 2)
      pairs.push([String(reply[i]), String(reply[i + 1])])
    return pairs
  }
  if (reply instanceof Map) return [...reply].map(([k, v]) => [String(k), String(v)])
  if (reply && typeof reply === 'object')
    return Object.entries(reply).map(([k, v]) => [k, String(v)])
  return []
}

function decodeHash(pairs: Array<[string, string]>): StoredSession {
  const fields: Record<string, string> = {}
  const raw: Record<string, string> = {}
  for (const [name, value] of pairs) {
    if (name.startsWith('.')) fields[name.slice(1)] = value
    else raw[name] = value
  }
  const createdAt = Number(raw.c)
  const lastSeenAt = Number(raw.l)
  const expiresAt = Number(raw.e)
  if (!Number.isFinite(createdAt) || !Number.isFinite(lastSeenAt) || !Number.isFinite(expiresAt)) {
    throw new MalformedRecordError('the hash lacks its created/last-seen/expiry fields')
  }
  const meta: SessionMeta = { createdAt, lastSeenAt, expiresAt }
  if (raw.u !== undefined) meta.userId = raw.u
  if (raw.a !== undefined) meta.userAgent = raw.a
  if (raw.i !== undefined) meta.ip = raw.i
  return { fields, meta }
}
