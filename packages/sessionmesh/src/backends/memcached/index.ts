/**
 * Sessions in Memcached. Memcached is a cache: no scripts, no transactions, no
 * pub/sub, and it may evict any item when memory runs short. Of the store's
 * promises (DESIGN.md) this backend keeps:
 *
 * 1. No lost updates: every write is `gets`, the delta applied, then `cas`, retried
 *    when another process's write got in between (within a process, the writes
 *    of one session take turns).
 * 2. Destroy is final: a destroy overwrites the session's item with a tombstone,
 *    and a new session is created only with `add`, which refuses any existing item,
 *    tombstone included; a `cas` that races the destroy finds its unique changed.
 * 3. A user index, as one item per user updated by `cas`: ids and join times. It
 *    is not atomic with the session write, so it is ordered: a login joins the
 *    index before the session says so, a logout or user change leaves it after;
 *    readers check each member against its session, and members found dead are
 *    pruned once they are older than a write can take.
 * 5. The outage policy: every command has a timeout, a dead server fails at once
 *    (no offline queue, no failover that would move keys), and `isOutage` tells
 *    the store's breaker so.
 * 7. Lazy touch: the store touches at most once per `touchAfter`. A touch is a
 *    `cas` of the record, not Memcached's `touch`, because the record carries the
 *    exact expiry and last-seen time that the store and the devices list read.
 *
 * And cannot keep:
 *
 * 4. No push: Memcached has no pub/sub, so `subscribe` is absent. The socket.io
 *    binding then re-reads every session with live sockets each
 *    `revocationCheckInterval` (a bounded delay instead of a push).
 * 6. No near cache: without invalidations, no process may trust a copy.
 * - Eviction: under memory pressure Memcached evicts least recently used items,
 *   sessions included (those users are logged out), and may evict a user index
 *   (listing and revoking that user's sessions then misses the older ones) or a
 *   tombstone before `tombstoneTtl`. Give Memcached memory to spare (`-m`) and
 *   watch `evictions` in `stats`.
 * - `destroyUser` destroys one session after another, not atomically: a login of
 *   that user finishing meanwhile may survive it.
 * - `count` and `clear` walk every key with `lru_crawler metadump` (Memcached
 *   1.4.31+): for tools, not for requests, and best effort (a crawl can miss
 *   an item the LRU maintainer moves meanwhile; they take the union of three).
 */
import {
  type Backend,
  cappedExpiry,
  type IndexedSession,
  type SessionTouch,
  type SessionWrite,
  type StoredSession,
  type WriteResult,
} from '../../core/backend.js'
import { InvalidOptionError, StoreUnavailableError } from '../../core/errors.js'
import { MemcachedClient, type MemcachedItem } from './client.js'
import {
  applied,
  created,
  decodeRecord,
  exptime,
  metaOf,
  readable,
  type SessionRecord,
  safeKey,
  storedOf,
  TOMBSTONE,
} from './records.js'

export {
  MemcachedClient,
  type MemcachedClientOptions,
  type MemcachedItem,
  type StoreReply,
} from './client.js'

/** Options of {@link memcachedBackend}: `servers` or `client`. */
export interface MemcachedBackendOptions {
  /** `host:port` of each server, comma-separated, e.g. `'127.0.0.1:11211'`. The backend closes the client it opens for them. */
  servers?: string
  /** A client to use instead of `servers`; the backend never closes it. */
  client?: MemcachedClient
  /**
   * Longest wait for one reply, in ms (with `servers`; a `client` has its own).
   * @default 1000
   */
  timeout?: number
  /**
   * Prefix of every key. Sessions and their tombstones live at `<prefix>s:<id>`,
   * user indexes at `<prefix>u:<user>`.
   * @default 'sm:'
   */
  prefix?: string
  /**
   * How long a destroyed session's id stays refused, in ms (unless evicted).
   * @default 3_600_000 (one hour)
   */
  tombstoneTtl?: number
}

/** Attempts of one `cas` loop before giving up (only under extreme contention on one session). */
const MAX_ATTEMPTS = 500
/**
 * A user index member whose session is not there yet may be a login between its
 * two steps (index, then session): it is pruned only once older than this.
 */
const PRUNE_GRACE_MS = 60_000

/**
 * Sessions in Memcached, shared by every process that uses the same servers and
 * prefix. See this file's header for what Memcached lets it promise.
 *
 * @example
 * const store = new SessionStore({ backend: memcachedBackend({ servers: '127.0.0.1:11211' }) })
 */
export function memcachedBackend(options: MemcachedBackendOptions): Backend {
  return new MemcachedBackend(options)
}

class MemcachedBackend implements Backend {
  readonly kind = 'memcached'
  readonly #client: MemcachedClient
  readonly #owned: boolean
  readonly #prefix: string
  readonly #tombstoneTtl: number
  /** The last queued write of each session being written by this process. */
  readonly #turns = new Map<string, Promise<void>>()

  constructor(options: MemcachedBackendOptions) {
    if (options.client && options.servers !== undefined)
      throw new InvalidOptionError('memcachedBackend takes `servers` or `client`, not both')
    if (options.client) {
      this.#client = options.client
      this.#owned = false
    } else if (options.servers) {
      this.#client = new MemcachedClient({
        servers: options.servers,
        ...(options.timeout === undefined ? {} : { timeout: options.timeout }),
      })
      this.#owned = true
    } else {
      throw new InvalidOptionError(
        "memcachedBackend needs `servers` ('host:port,…') or a `client` (MemcachedClient)",
      )
    }
    this.#prefix = options.prefix ?? 'sm:'
    this.#tombstoneTtl = options.tombstoneTtl ?? 3_600_000
  }

  async get(sid: string): Promise<StoredSession | null> {
    const item = await this.#item(this.#key(sid))
    if (!item) return null
    const decoded = decodeRecord(item.value)
    if (decoded.kind !== 'live' || decoded.record.e <= Date.now()) return null
    return storedOf(decoded.record)
  }

  write(sid: string, write: SessionWrite): Promise<WriteResult> {
    return this.#inTurn(sid, () => this.#write(sid, write))
  }

  async #write(sid: string, write: SessionWrite): Promise<WriteResult> {
    const key = this.#key(sid)
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (attempt > 0) await backoff(attempt)
      const item = await this.#item(key)
      const decoded = item ? readable(item.value) : undefined
      if (decoded?.kind === 'tombstone') return 'gone'
      const stored = decoded?.kind === 'live' ? decoded.record : undefined
      const current = stored && stored.e > write.now ? stored : undefined
      if (!current && write.mode === 'update') return 'gone'
      const next = current ? applied(current, write) : created(write)
      if (write.userId !== undefined && write.userId !== current?.u)
        await this.#join(write.userId, sid, write.now)
      const value = JSON.stringify(next)
      const reply = item
        ? await this.#client.cas(key, value, exptime(next.e), item.cas)
        : await this.#client.add(key, value, exptime(next.e))
      if (reply !== 'STORED') continue
      if (stored?.u !== undefined && stored.u !== write.userId) await this.#leave(stored.u, [sid])
      return 'ok'
    }
    throw new Error(`memcached: session write lost ${MAX_ATTEMPTS} cas races in a row`)
  }

  touch(sid: string, touch: SessionTouch): Promise<WriteResult> {
    return this.#inTurn(sid, () => this.#touch(sid, touch))
  }

  async #touch(sid: string, touch: SessionTouch): Promise<WriteResult> {
    const key = this.#key(sid)
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (attempt > 0) await backoff(attempt)
      const item = await this.#item(key)
      const decoded = item ? readable(item.value) : undefined
      if (!item || decoded?.kind !== 'live' || decoded.record.e <= touch.now) return 'gone'
      const record = decoded.record
      const expiresAt = cappedExpiry(touch.expiresAt, record.c, touch.maxLifetime)
      const next: SessionRecord = { ...record, l: touch.now, e: expiresAt }
      const reply = await this.#client.cas(key, JSON.stringify(next), exptime(expiresAt), item.cas)
      if (reply === 'STORED') return 'ok'
    }
    throw new Error(`memcached: session touch lost ${MAX_ATTEMPTS} cas races in a row`)
  }

  async destroy(sid: string): Promise<void> {
    await this.#destroy([sid])
  }

  async listUser(userId: string, now: number): Promise<IndexedSession[]> {
    const { members } = await this.#members(userId)
    const records = await this.#records(Object.keys(members))
    const list: IndexedSession[] = []
    const dead: string[] = []
    for (const [sid, joined] of Object.entries(members)) {
      const record = records.get(sid)
      if (record && record.u === userId && record.e > now)
        list.push({ id: sid, meta: metaOf(record) })
      else if (now - joined > PRUNE_GRACE_MS) dead.push(sid)
    }
    if (dead.length > 0) await this.#leave(userId, dead)
    return list
  }

  async destroyUser(userId: string, except?: string): Promise<string[]> {
    const { members } = await this.#members(userId)
    const records = await this.#records(Object.keys(members).filter((sid) => sid !== except))
    const now = Date.now()
    const doomed = [...records]
      .filter(([, record]) => record.u === userId && record.e > now)
      .map(([sid]) => sid)
    return this.#destroy(doomed)
  }

  async count(): Promise<number> {
    const keys = (await this.#keys()).filter((key) => key.startsWith(`${this.#prefix}s`))
    const now = Date.now()
    let live = 0
    for (let i = 0; i < keys.length; i += 100) {
      for (const item of (await this.#client.gets(keys.slice(i, i + 100))).values()) {
        const decoded = readable(item.value)
        if (decoded?.kind === 'live' && decoded.record.e > now) live++
      }
    }
    return live
  }

  async clear(): Promise<void> {
    for (let round = 0; round < 10; round++) {
      const keys = await this.#keys()
      if (keys.length === 0) return
      for (let i = 0; i < keys.length; i += 100)
        await Promise.all(keys.slice(i, i + 100).map((key) => this.#client.delete(key)))
    }
  }

  /**
   * The keys under this prefix. A crawl can miss an item that Memcached's LRU
   * maintainer moves between segments meanwhile (a recently read one): the union
   * of three crawls, a moment apart.
   */
  async #keys(): Promise<string[]> {
    const keys = new Set<string>()
    for (let pass = 0; pass < 3; pass++) {
      if (pass > 0) await new Promise((resolve) => setTimeout(resolve, 50))
      for (const key of await this.#client.keys()) if (key.startsWith(this.#prefix)) keys.add(key)
    }
    return [...keys]
  }

  isOutage(error: unknown): boolean {
    return error instanceof StoreUnavailableError
  }

  async close(): Promise<void> {
    if (this.#owned) await this.#client.close()
  }

  /**
   * Runs the writes of one session from this process one after another: they
   * would only make each other's `cas` fail. Other processes still race by `cas`.
   */
  #inTurn<T>(sid: string, step: () => Promise<T>): Promise<T> {
    const run = (this.#turns.get(sid) ?? Promise.resolve()).then(step, step)
    const settled = run.then(
      () => undefined,
      () => undefined,
    )
    this.#turns.set(sid, settled)
    void settled.then(() => {
      if (this.#turns.get(sid) === settled) this.#turns.delete(sid)
    })
    return run
  }

  #key(sid: string): string {
    return safeKey(this.#prefix, 's', sid)
  }

  #indexKey(userId: string): string {
    return safeKey(this.#prefix, 'u', userId)
  }

  async #item(key: string): Promise<MemcachedItem | undefined> {
    return (await this.#client.gets([key])).get(key)
  }

  /** The live-or-expired records of `sids` (tombstones and missing ones left out), by id. */
  async #records(sids: string[]): Promise<Map<string, SessionRecord>> {
    const keys = new Map(sids.map((sid) => [this.#key(sid), sid]))
    const items = await this.#client.gets([...keys.keys()])
    const records = new Map<string, SessionRecord>()
    for (const [key, item] of items) {
      const decoded = readable(item.value)
      const sid = keys.get(key)
      if (sid !== undefined && decoded?.kind === 'live') records.set(sid, decoded.record)
    }
    return records
  }

  /** Tombstones each session; returns those that were live. Each is left out of its user's index after. */
  async #destroy(sids: string[]): Promise<string[]> {
    if (sids.length === 0) return []
    const records = await this.#records(sids)
    const until = exptime(Date.now() + this.#tombstoneTtl)
    await Promise.all(sids.map((sid) => this.#client.set(this.#key(sid), TOMBSTONE, until)))
    const now = Date.now()
    const byUser = new Map<string, string[]>()
    const destroyed: string[] = []
    for (const [sid, record] of records) {
      if (record.e > now) destroyed.push(sid)
      if (record.u !== undefined) byUser.set(record.u, [...(byUser.get(record.u) ?? []), sid])
    }
    for (const [userId, list] of byUser) await this.#leave(userId, list)
    return destroyed
  }

  /** The user's index item: members (id → when it joined) and its CAS unique. */
  async #members(userId: string): Promise<{ members: Record<string, number>; cas?: string }> {
    const item = await this.#item(this.#indexKey(userId))
    if (!item) return { members: {} }
    try {
      const parsed = JSON.parse(item.value) as { u?: unknown; s?: unknown }
      if (parsed.u === userId && typeof parsed.s === 'object' && parsed.s !== null)
        return { members: parsed.s as Record<string, number>, cas: item.cas }
    } catch {
      // An unreadable index is rewritten by the next change.
    }
    return { members: {}, cas: item.cas }
  }

  /** Applies `change` to the user's index with `cas` (`add` when missing); deletes it when empty. */
  async #updateIndex(userId: string, change: (members: Record<string, number>) => boolean) {
    const key = this.#indexKey(userId)
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (attempt > 0) await backoff(attempt)
      const { members, cas } = await this.#members(userId)
      if (!change(members)) return
      // No expiry: members expire with their sessions, and an index nobody reads is
      // left to Memcached's LRU.
      const value = JSON.stringify({ u: userId, s: members })
      const reply =
        cas === undefined
          ? await this.#client.add(key, value, 0)
          : await this.#client.cas(key, value, 0, cas)
      if (reply === 'STORED') return
    }
    throw new Error(`memcached: user index update lost ${MAX_ATTEMPTS} cas races in a row`)
  }

  #join(userId: string, sid: string, now: number): Promise<void> {
    return this.#updateIndex(userId, (members) => {
      if (members[sid] !== undefined) return false
      members[sid] = now
      return true
    })
  }

  #leave(userId: string, sids: string[]): Promise<void> {
    return this.#updateIndex(userId, (members) => {
      let changed = false
      for (const sid of sids) {
        if (members[sid] === undefined) continue
        delete members[sid]
        changed = true
      }
      return changed
    })
  }
}

/** A short, growing, jittered pause after a lost `cas`, so that racing writers spread out. */
function backoff(attempt: number): Promise<void> {
  const ms = Math.random() * Math.min(attempt, 20)
  return new Promise((resolve) => setTimeout(resolve, ms))
}
