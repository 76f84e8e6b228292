import type { Backend, BusState, SessionEvent } from './backend.js'
import type { Snapshot } from './engine/snapshot.js'
import { InvalidOptionError } from './errors.js'
import { debug } from './telemetry.js'

/** Options of the per-process near cache. Times in ms. */
export interface NearCacheOptions {
  /**
   * Most sessions kept.
   * @default 10_000
   */
  maxEntries?: number
  /**
   * Most bytes of encoded session data kept (keys and values, plus a fixed
   * overhead per entry).
   * @default 16_777_216 (16 MiB)
   */
  maxBytes?: number
  /**
   * Longest time an entry is served without the backend confirming it: a
   * backstop. The bus reports a dropped connection (the cache is cleared and
   * serves nothing until the bus is back), so with the bus working a session
   * changed or destroyed on another node stops being served here within the
   * bus's delivery time.
   * @default 60_000
   */
  maxAge?: number
}

/** What {@link NearCache.stats} reports. */
export interface NearCacheStats {
  entries: number
  bytes: number
  hits: number
  misses: number
  /** Entries dropped to stay within `maxEntries` / `maxBytes`. */
  evictions: number
  /** Entries dropped because the session changed or ended (the bus, an own destroy). */
  invalidations: number
  /** True once the invalidation bus is subscribed; before that nothing is served from memory. */
  ready: boolean
}

interface Entry {
  sid: string
  snapshot: Snapshot
  bytes: number
  /** When the backend last confirmed this entry (a read, a write or a touch). */
  confirmedAt: number
  /** Neighbours in recency order: `newer` towards the most recently used. */
  newer: Entry | undefined
  older: Entry | undefined
}

/** Own writes whose change events have not come back yet. */
interface Pending {
  count: number
  at: number
}

const ENTRY_OVERHEAD = 200
export const CHANGE_LOG_LIMIT = 50_000
/** An own write's echo that has not arrived by then is presumed lost. */
const ECHO_WAIT = 2_000

/**
 * A bounded LRU of recently used sessions, per process, kept honest two ways.
 *
 * 1. Invalidation: the backend's event bus evicts a session another process
 *    changed or destroyed. A bus is late by nature, so this alone would let node
 *    B serve the old copy just after node A wrote.
 * 2. Versions: every write stores a new random version with the session, and the
 *    middleware hands it to the client in a small cookie. An entry is served only
 *    to a client that presents a version the entry is known to contain; any other
 *    client goes to the backend. So the client that wrote on A and reads on B
 *    always sees its write, however late the bus is (read-your-writes).
 *
 * Filling the cache after a read, or after a write, is refused when a change to
 * that session was seen after the read began: a slow read must not put back
 * what an invalidation just removed.
 */
export class NearCache {
  // Recency is a linked list through the entries, the Map only finds them. The
  // usual Map-as-LRU idiom (delete and set again on every hit) costs time in
  // proportion to the Map's size in V8: 20 µs per hit at 10,000 entries.
  readonly #entries = new Map<string, Entry>()
  #newest: Entry | undefined
  #oldest: Entry | undefined
  /** The changes in sequence order, flat: session id, sequence, session id, … */
  #log: Array<string | number> = []
  #logHead = 0
  readonly #maxEntries: number
  readonly #maxBytes: number
  readonly #maxAge: number
  #bytes = 0
  #hits = 0
  #misses = 0
  #evictions = 0
  #invalidations = 0
  #ready = false
  #closed = false
  #unsubscribe: (() => Promise<void>) | undefined
  /** Counts every change seen; `#changed` says when each session last changed. */
  #seq = 0
  readonly #changed = new Map<string, number>()
  /** When each session was last dropped: changed or ended by anything but an own write. */
  readonly #dropped = new Map<string, number>()
  /** Changes older than this were dropped from `#changed`: assume any session changed then. */
  #floor = 0
  readonly #pending = new Map<string, Pending>()

  constructor(options: NearCacheOptions = {}) {
    this.#maxEntries = positiveInt('nearCache.maxEntries', options.maxEntries, 10_000)
    this.#maxBytes = positiveInt('nearCache.maxBytes', options.maxBytes, 16 * 1024 * 1024)
    this.#maxAge = positiveInt('nearCache.maxAge', options.maxAge, 60_000)
  }

  /** Subscribes to the backend's events; serves nothing until the subscription holds. */
  async start(backend: Backend): Promise<void> {
    if (!backend.subscribe) {
      throw new InvalidOptionError(
        `the near cache needs a backend with an event bus; ${backend.kind} has none`,
      )
    }
    const unsubscribe = await backend.subscribe(
      (event) => this.onEvent(event),
      (state) => this.onGap(state),
    )
    if (this.#closed) {
      await unsubscribe()
      return
    }
    this.#unsubscribe = unsubscribe
    this.#ready = true
  }

  /** Stops serving and unsubscribes. */
  async close(): Promise<void> {
    this.#closed = true
    this.#ready = false
    this.clear()
    await this.#unsubscribe?.()
  }

  /** The change counter: a load records it, a fill compares against it. */
  get seq(): number {
    return this.#seq
  }

  /** A copy of the cached snapshot, if it may answer a client presenting `version`. */
  lookup(sid: string, version: string, now: number): Snapshot | undefined {
    const entry = this.#ready ? this.#entries.get(sid) : undefined
    if (
      !entry ||
      now - entry.confirmedAt >= this.#maxAge ||
      entry.snapshot.meta.expiresAt <= now ||
      !entry.snapshot.versions.includes(version)
    ) {
      this.#misses++
      return undefined
    }
    this.#hits++
    this.#unlink(entry)
    this.#link(entry)
    return { ...entry.snapshot, loadSeq: this.#seq }
  }

  /** Caches what a backend read returned, unless the session changed since the read began. */
  fill(sid: string, snapshot: Snapshot, now: number): void {
    if (!this.#ready || this.#changedSince(sid, snapshot.loadSeq)) return
    this.#put(sid, snapshot, now)
  }

  /** Called before an own write, so that its echo on the bus does not evict its result. */
  expectOwnWrite(sid: string, now: number): void {
    const pending = this.#pending.get(sid)
    if (pending) {
      pending.count++
      pending.at = now
    } else this.#pending.set(sid, { count: 1, at: now })
  }

  /** An own write failed or found the session gone: it may or may not echo; drop the copy. */
  ownWriteFailed(sid: string): void {
    const pending = this.#pending.get(sid)
    if (pending && --pending.count <= 0) this.#pending.delete(sid)
    this.forget(sid)
  }

  /**
   * An own write succeeded: `next` is `base` plus the delta. It is cached only if
   * nothing changed the session since `base` was loaded (another node's write, or
   * a concurrent request here); otherwise the copy is dropped and the next request
   * reads the backend.
   */
  wrote(sid: string, next: Snapshot, base: Snapshot | undefined, now: number): void {
    const stale = base !== undefined && this.#changedSince(sid, base.loadSeq)
    this.#markChanged(sid, false)
    if (!this.#ready) return
    if (stale) this.#remove(sid)
    else this.#put(sid, next, now)
  }

  /**
   * An own write whose reply says what the session became: `next` is exact as of
   * that write (the backend applied it to the version it was based on, or read
   * the session back). Cached unless, since the write was sent (change counter
   * `sentSeq`), the session was dropped: an event from the bus, a destroy here,
   * a failed write. Other own writes do not count: the backend answers calls on
   * one session in the order they were made, so a later reply is a later state.
   */
  wroteFresh(sid: string, next: Snapshot, sentSeq: number, now: number): void {
    const dropped = (this.#dropped.get(sid) ?? this.#floor) > sentSeq
    this.#markChanged(sid, false)
    if (!this.#ready) return
    if (dropped) this.#remove(sid)
    else this.#put(sid, next, now)
  }

  /** The versions the cached copy of `sid` is known to contain, if that copy is at `version`. */
  versionsOf(sid: string, version: string): readonly string[] {
    const entry = this.#entries.get(sid)
    return entry?.snapshot.version === version ? entry.snapshot.versions : []
  }

  /** A touch reached the backend: the entry is confirmed and gets the new expiry. */
  touched(sid: string, snapshot: Snapshot, now: number): void {
    const entry = this.#entries.get(sid)
    if (entry && entry.snapshot.version === snapshot.version) {
      entry.snapshot = { ...entry.snapshot, meta: snapshot.meta }
      entry.confirmedAt = now
    }
  }

  /** Drops a session (destroyed, malformed, or changed elsewhere). */
  forget(sid: string): void {
    this.#markChanged(sid)
    if (this.#entries.has(sid)) this.#invalidations++
    this.#remove(sid)
  }

  /** Drops every entry. */
  clear(): void {
    this.#entries.clear()
    this.#newest = undefined
    this.#oldest = undefined
    this.#bytes = 0
    this.#floor = ++this.#seq
    this.#changed.clear()
    this.#dropped.clear()
    this.#log = []
    this.#logHead = 0
  }

  /** An event from the bus. */
  onEvent(event: SessionEvent): void {
    if (event.type === 'changed') {
      const pending = this.#pending.get(event.sid)
      if (pending) {
        if (--pending.count <= 0) this.#pending.delete(event.sid)
        // The echo of an own write, whose result is already cached. An echo that
        // took too long may be someone else's change: evict to be safe.
        if (Date.now() - pending.at < ECHO_WAIT) return
      }
    }
    this.forget(event.sid)
  }

  /**
   * The bus connection dropped (events may be missed: serve nothing from memory)
   * or came back (start afresh: what was cached may have changed meanwhile).
   */
  onGap(state: BusState): void {
    this.clear()
    if (!this.#closed) this.#ready = state === 'restored'
  }

  /** Size and hit counts, for metrics and the benchmark. */
  stats(): NearCacheStats {
    return {
      entries: this.#entries.size,
      bytes: this.#bytes,
      hits: this.#hits,
      misses: this.#misses,
      evictions: this.#evictions,
      invalidations: this.#invalidations,
      ready: this.#ready,
    }
  }

  #changedSince(sid: string, seq: number): boolean {
    return (this.#changed.get(sid) ?? this.#floor) > seq
  }

  /** Records a change of `sid`; `dropped` unless it is an own write the cache took in. */
  #markChanged(sid: string, dropped = true): void {
    const seq = ++this.#seq
    // The Map is updated in place (delete-then-set costs time in proportion to its
    // size in V8); the log keeps the changes in sequence order, so that trimming
    // drops the oldest changes and raises the floor only to their sequence.
    this.#changed.set(sid, seq)
    if (dropped) this.#dropped.set(sid, seq)
    this.#log.push(sid, seq)
    while (this.#changed.size > CHANGE_LOG_LIMIT) {
      const oldest = this.#log[this.#logHead] as string
      const at = this.#log[this.#logHead + 1] as number
      this.#logHead += 2
      // A later change of the same session is further on in the log: skip this one.
      if (this.#changed.get(oldest) === at) {
        // Its last drop is no later than its last change: below the floor too.
        this.#changed.delete(oldest)
        this.#dropped.delete(oldest)
        this.#floor = at
      }
    }
    if (this.#log.length - this.#logHead > 4 * CHANGE_LOG_LIMIT) this.#compactLog() // 2 slots per change
  }

  /** Rebuilds the log from the Map, once repeated changes of the same sessions have grown it. */
  #compactLog(): void {
    const live = [...this.#changed].sort((a, b) => a[1] - b[1])
    this.#log = live.flat()
    this.#logHead = 0
  }

  #put(sid: string, snapshot: Snapshot, now: number): void {
    let bytes = ENTRY_OVERHEAD + sid.length
    for (const key in snapshot.fields) {
      bytes += key.length + (snapshot.fields[key] as string).length
    }
    if (bytes > this.#maxBytes) {
      this.#remove(sid)
      return
    }
    const existing = this.#entries.get(sid)
    if (existing) {
      this.#bytes += bytes - existing.bytes
      existing.snapshot = snapshot
      existing.bytes = bytes
      existing.confirmedAt = now
      this.#unlink(existing)
      this.#link(existing)
    } else {
      const entry: Entry = {
        sid,
        snapshot,
        bytes,
        confirmedAt: now,
        newer: undefined,
        older: undefined,
      }
      this.#entries.set(sid, entry)
      this.#link(entry)
      this.#bytes += bytes
    }
    while (this.#entries.size > this.#maxEntries || this.#bytes > this.#maxBytes) {
      const oldest = this.#oldest
      if (!oldest) break
      this.#evictions++
      this.#remove(oldest.sid)
    }
  }

  /** Makes `entry` the most recently used. */
  #link(entry: Entry): void {
    entry.older = this.#newest
    entry.newer = undefined
    if (this.#newest) this.#newest.newer = entry
    this.#newest = entry
    this.#oldest ??= entry
  }

  #unlink(entry: Entry): void {
    if (entry.newer) entry.newer.older = entry.older
    else this.#newest = entry.older
    if (entry.older) entry.older.newer = entry.newer
    else this.#oldest = entry.newer
    entry.newer = undefined
    entry.older = undefined
  }

  #remove(sid: string): void {
    const entry = this.#entries.get(sid)
    if (!entry) return
    this.#unlink(entry)
    this.#entries.delete(sid)
    this.#bytes -= entry.bytes
  }
}

/** Starts a near cache over `backend`, reporting a failed subscription without throwing. */
export function startNearCache(cache: NearCache, backend: Backend): Promise<void> {
  return cache.start(backend).catch((error: unknown) => {
    debug('near cache disabled: subscribing to %s events failed: %s', backend.kind, error)
  })
}

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (!Number.isInteger(value) || value <= 0) {
    throw new InvalidOptionError(`${name} must be a positive integer, not ${value}`)
  }
  return value
}
