import { debuglog } from 'node:util'
import {
  type Backend,
  type BusState,
  type CallOptions,
  type IndexedSession,
  MalformedRecordError,
  type SessionEvent,
  type SessionTouch,
  type SessionWrite,
  type StoredSession,
  type WriteResult,
} from '../../core/backend.js'
import { InvalidOptionError, NotSupportedError } from '../../core/errors.js'
import { refill } from './refill.js'

const debug = debuglog('sessionmesh:tiered')

/** Options of {@link tieredBackend}. */
export interface TieredBackendOptions {
  /**
   * The fast tier, usually `redisBackend(…)`. Give its client no offline queue
   * (ioredis `enableOfflineQueue: false`, node-redis `disableOfflineQueue: true`):
   * a call queued during an outage could land after newer writes.
   */
  cache: Backend
  /** The tier of record, usually `postgresBackend(…)` or `mysqlBackend(…)`. */
  durable: Backend
  /**
   * Longest wait for one cache call; past it the call counts as a cache failure and
   * the request is served by the durable tier.
   * @default 50
   */
  cacheTimeout?: number
  /**
   * After a cache failure, reads bypass the cache for this long before it is tried
   * again. Writes still go to it: another process may be reading it.
   * @default 1000
   */
  retryAfter?: number
  /**
   * Sessions whose cache write failed are re-synchronised in it when it
   * returns. Past this many, the whole cache is cleared instead (it refills on demand).
   * @default 10_000
   */
  maxDirty?: number
}

/** What the tiered backend counted since it was made. */
export interface TieredStats {
  /** Reads the cache answered. */
  cacheHits: number
  /** Reads the cache did not have, answered by the durable tier and refilled. */
  cacheMisses: number
  /** Reads answered by the durable tier because the cache was failing or bypassed. */
  durableFallbacks: number
  /** Cache calls that failed or timed out. */
  cacheErrors: number
}

/** The tiered backend: the {@link Backend} contract plus its counters. */
export interface TieredBackend extends Backend {
  /** A copy of the counters. */
  stats(): TieredStats
}

/**
 * A cache tier over a durable tier: as fast as the cache to read, as safe as the
 * database to keep. Every write reaches the durable tier before it is
 * acknowledged, then the cache. Reads come from the cache; a miss reads the durable
 * tier and refills the cache with the session's exact expiry. With the cache failing,
 * reads are served by the durable tier (counted, and logged to
 * `NODE_DEBUG=sessionmesh:tiered`) and writes still try the cache, which other
 * processes may be reading; a cache restarted empty logs nobody out. The
 * user index, counts and revocations are the durable tier's.
 *
 * @example
 * const backend = tieredBackend({
 *   cache: redisBackend({ client: redis }),
 *   durable: postgresBackend({ pool }),
 * })
 */
export function tieredBackend(options: TieredBackendOptions): TieredBackend {
  return new Tiered(options)
}

class Tiered implements TieredBackend {
  readonly kind: string
  readonly #cache: Backend
  readonly #durable: Backend
  readonly #timeout: number
  readonly #retryAfter: number
  readonly #maxDirty: number
  readonly #stats: TieredStats = {
    cacheHits: 0,
    cacheMisses: 0,
    durableFallbacks: 0,
    cacheErrors: 0,
  }
  /** Until when reads bypass the cache after a failure (epoch ms). */
  #downUntil = 0
  /** Sessions whose cached copy may be out of date: written while the cache failed. */
  readonly #dirty = new Set<string>()
  #overflow = false
  #recovering: Promise<void> | undefined
  #repairTimer: NodeJS.Timeout | undefined

  constructor(options: TieredBackendOptions) {
    if (!options.cache || !options.durable) {
      throw new InvalidOptionError('tieredBackend needs `cache` and `durable` backends')
    }
    this.#cache = options.cache
    this.#durable = options.durable
    this.kind = `tiered(${options.cache.kind}/${options.durable.kind})`
    this.#timeout = options.cacheTimeout ?? 50
    this.#retryAfter = options.retryAfter ?? 1000
    this.#maxDirty = options.maxDirty ?? 10_000
  }

  stats(): TieredStats {
    return { ...this.#stats }
  }

  async get(sid: string): Promise<StoredSession | null> {
    if (this.#usable()) {
      try {
        const hit = await this.#withTimeout(this.#cache.get(sid))
        if (hit) {
          this.#stats.cacheHits++
          return hit
        }
        this.#stats.cacheMisses++
      } catch (error) {
        // A cached record the cache cannot read is a miss; the refill overwrites it.
        if (error instanceof MalformedRecordError) this.#stats.cacheMisses++
        else return this.#fallback(sid, error)
      }
      const stored = await this.#durable.get(sid)
      if (stored) {
        await this.#refill(sid, stored).catch((error: unknown) => {
          this.#failed(error)
          this.#markDirty(sid)
        })
      }
      return stored
    }
    this.#stats.durableFallbacks++
    return this.#durable.get(sid)
  }

  async write(sid: string, write: SessionWrite): Promise<WriteResult> {
    const result = await this.#durable.write(sid, this.#durableDeadline(write))
    if (result === 'gone') {
      // The durable tier says the session is dead: no cached copy may outlive it.
      await this.#onCache(sid, (cache) => cache.destroy(sid))
      return result
    }
    // A new session goes into the cache at once when its expiry cannot depend on its
    // creation time; otherwise the cache takes only changes to a session it holds,
    // and a miss refills it with the durable tier's exact creation time and expiry.
    // No deadline for the cache: once the durable tier has the write, a late cache
    // write is still better than a stale cached copy.
    const { deadline: _, ...undated } = write
    const cacheWrite: SessionWrite =
      write.mode === 'create' && write.maxLifetime === 0 ? undated : { ...undated, mode: 'update' }
    await this.#onCache(sid, (cache) => cache.write(sid, cacheWrite))
    return result
  }

  async touch(sid: string, touch: SessionTouch): Promise<WriteResult> {
    const result = await this.#durable.touch(sid, touch)
    await this.#onCache(sid, (cache) =>
      result === 'ok' ? cache.touch(sid, touch) : cache.destroy(sid),
    )
    return result
  }

  async destroy(sid: string, options: CallOptions = {}): Promise<void> {
    await this.#durable.destroy(sid, this.#durableDeadline(options))
    // No deadline for the cache: once the durable tier has destroyed the session, a
    // late cache destroy must still happen, or the cached copy would outlive it.
    const said = { reason: options.reason, by: options.by }
    await this.#onCache(sid, (cache) => cache.destroy(sid, said))
  }

  listUser(userId: string, now: number): Promise<IndexedSession[]> {
    return this.#durable.listUser(userId, now)
  }

  async destroyUser(userId: string, except?: string, options: CallOptions = {}): Promise<string[]> {
    const destroyed = await this.#durable.destroyUser(
      userId,
      except,
      this.#durableDeadline(options),
    )
    const said = { reason: options.reason, by: options.by }
    await Promise.all(
      destroyed.map((sid) => this.#onCache(sid, (cache) => cache.destroy(sid, said))),
    )
    return destroyed
  }

  count(): Promise<number> {
    return this.#durable.count()
  }

  async ids(): Promise<string[]> {
    // The durable tier holds every session; the cache may have dropped some.
    if (!this.#durable.ids)
      throw new NotSupportedError(`${this.#durable.kind} cannot list session ids`)
    return this.#durable.ids()
  }

  async clear(): Promise<void> {
    await this.#durable.clear()
    await this.#cache.clear().catch((error: unknown) => {
      this.#failed(error)
      this.#overflow = true
    })
  }

  /**
   * Events come from the durable tier when it has a feed (it sees every write, even
   * with the cache down), otherwise from the cache.
   */
  async subscribe(
    listener: (event: SessionEvent) => void,
    onGap?: (state: BusState) => void,
  ): Promise<() => Promise<void>> {
    const source = this.#durable.subscribe ? this.#durable : this.#cache
    if (!source.subscribe) throw new InvalidOptionError('neither tier publishes session events')
    return source.subscribe(listener, onGap)
  }

  isOutage(error: unknown): boolean {
    // Only the durable tier's errors reach the caller; the cache's are absorbed.
    return this.#durable.isOutage?.(error) ?? true
  }

  async close(): Promise<void> {
    clearTimeout(this.#repairTimer)
    await Promise.all([this.#cache.close(), this.#durable.close()])
  }

  /**
   * The durable tier must be done before the cache call that follows it (at most
   * `cacheTimeout`) would take the whole call past the caller's deadline.
   */
  #durableDeadline<T extends CallOptions>(options: T): T {
    return options.deadline === undefined
      ? options
      : { ...options, deadline: options.deadline - this.#timeout }
  }

  /** Puts the durable tier's copy of `sid` into the cache (see refill.ts). Throws when a cache call fails. */
  #refill(sid: string, stored: StoredSession): Promise<void> {
    return refill(sid, stored, {
      cache: (write) => this.#withTimeout(this.#cache.write(sid, write)),
      durable: () => this.#durable.get(sid),
      evict: () => this.#withTimeout(this.#evict(sid)),
    })
  }

  /**
   * Drops the cached copy of a session that may be alive: the cache's `evict` (no
   * tombstone, no event), else its `destroy`, which leaves a tombstone (the session
   * is then read from the durable tier until it expires) and tells every process
   * listening to the cache's events that the session was destroyed.
   */
  #evict(sid: string): Promise<void> {
    return this.#cache.evict ? this.#cache.evict(sid) : this.#cache.destroy(sid)
  }

  async #fallback(sid: string, error: unknown): Promise<StoredSession | null> {
    this.#failed(error)
    this.#stats.durableFallbacks++
    return this.#durable.get(sid)
  }

  /**
   * Runs a write's cache call, even while reads bypass the cache: other processes
   * may still read it, and a change it never received would stay stale there (a
   * call that merely timed out has usually landed). On failure, bypasses the cache
   * for reads a while and remembers the session, so that its cached copy is
   * re-synchronised before this process reads the cache again.
   */
  async #onCache(sid: string, call: (cache: Backend) => Promise<unknown>): Promise<void> {
    try {
      await this.#withTimeout(call(this.#cache))
    } catch (error) {
      this.#failed(error)
      this.#markDirty(sid)
    }
  }

  /**
   * Whether the cache may be used now. After an outage it is not, until what it
   * missed has been repaired, in the background: requests meanwhile are served by
   * the durable tier rather than wait for the repair.
   */
  #usable(): boolean {
    if (Date.now() < this.#downUntil) return false
    if (this.#dirty.size === 0 && !this.#overflow) return true
    this.#recovering ??= this.#recover().finally(() => {
      this.#recovering = undefined
    })
    return false
  }

  async #recover(): Promise<void> {
    try {
      if (this.#overflow) {
        await this.#withTimeout(this.#cache.clear(), 10 * this.#timeout)
        this.#overflow = false
        this.#dirty.clear()
        debug('cache back: cleared it (too many sessions changed while it was away)')
        return
      }
      const sids = [...this.#dirty]
      debug('cache back: re-synchronising %d sessions', sids.length)
      for (const sid of sids) {
        // Unmarked before the repair, so that a write failing meanwhile marks it again.
        this.#dirty.delete(sid)
        try {
          // A session the durable tier cannot give back must not be served from the cache:
          // gone there, it is destroyed in the cache; unreadable, its copy is dropped.
          const stored = await this.#durable.get(sid).then(
            (session) => ({ session }),
            () => undefined,
          )
          if (stored?.session) await this.#refill(sid, stored.session)
          else if (stored) await this.#withTimeout(this.#cache.destroy(sid))
          else await this.#withTimeout(this.#evict(sid))
        } catch (error) {
          this.#markDirty(sid)
          throw error
        }
      }
    } catch (error) {
      this.#failed(error)
    }
  }

  #markDirty(sid: string): void {
    if (this.#overflow) return
    this.#dirty.add(sid)
    if (this.#dirty.size > this.#maxDirty) {
      this.#overflow = true
      this.#dirty.clear()
    }
  }

  #failed(error: unknown): void {
    this.#stats.cacheErrors++
    if (Date.now() >= this.#downUntil) {
      debug(
        'cache failed, serving from %s for %d ms: %s',
        this.#durable.kind,
        this.#retryAfter,
        error,
      )
    }
    this.#downUntil = Date.now() + this.#retryAfter
    // Repair the cache as soon as it may answer, not at the next request of this
    // process: other processes read it meanwhile. The repair re-arms this on failure.
    clearTimeout(this.#repairTimer)
    this.#repairTimer = setTimeout(() => this.#usable(), this.#retryAfter + 10)
    this.#repairTimer.unref()
  }

  #withTimeout<T>(promise: Promise<T>, ms = this.#timeout): Promise<T> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`cache call timed out after ${ms} ms`)), ms)
    })
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
  }
}
