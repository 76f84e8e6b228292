import {
  type Backend,
  type CallOptions,
  cappedExpiry,
  EVENT_PROTOCOL_VERSION,
  type IndexedSession,
  type LimitedWriteResult,
  type ReadWriteResult,
  type SessionEvent,
  type SessionLimitRule,
  type SessionMeta,
  type SessionTouch,
  type SessionWrite,
  type StoredSession,
  type WriteBasis,
  type WriteResult,
} from '../core/backend.js'
import { overLimit } from '../core/session-limit.js'

/** Options of {@link memoryBackend}. */
export interface MemoryBackendOptions {
  /**
   * How long a destroyed session's id stays refused, in ms.
   * @default 3_600_000 (one hour)
   */
  tombstoneTtl?: number
  /**
   * How often expired sessions and tombstones are swept, in ms. The timer does not
   * keep the process alive.
   * @default 60_000
   */
  sweepInterval?: number
}

interface Entry {
  fields: Map<string, string>
  meta: SessionMeta
}

/**
 * Sessions in this process's memory: the default backend, for development, single
 * process apps and tests of apps. It keeps every promise the Redis backend keeps
 * (deltas, tombstones, user index) but nothing survives a restart and nothing is
 * shared with other processes.
 *
 * @example
 * const store = new SessionStore({ backend: memoryBackend() })
 */
export function memoryBackend(options: MemoryBackendOptions = {}): Backend {
  return new MemoryBackend(options)
}

class MemoryBackend implements Backend {
  readonly kind = 'memory'
  readonly #sessions = new Map<string, Entry>()
  readonly #tombstones = new Map<string, number>()
  readonly #users = new Map<string, Set<string>>()
  readonly #listeners = new Set<(event: SessionEvent) => void>()
  readonly #tombstoneTtl: number
  readonly #sweeper: NodeJS.Timeout

  constructor(options: MemoryBackendOptions) {
    this.#tombstoneTtl = options.tombstoneTtl ?? 3_600_000
    this.#sweeper = setInterval(() => this.#sweep(Date.now()), options.sweepInterval ?? 60_000)
    this.#sweeper.unref()
  }

  async get(sid: string): Promise<StoredSession | null> {
    const entry = this.#live(sid, Date.now())
    if (!entry) return null
    return { fields: Object.fromEntries(entry.fields), meta: { ...entry.meta } }
  }

  async write(sid: string, write: SessionWrite): Promise<WriteResult> {
    if (this.#tombstoned(sid, write.now)) return 'gone'
    let entry = this.#live(sid, write.now)
    const created = !entry
    if (!entry) {
      if (write.mode === 'update') return 'gone'
      entry = {
        fields: new Map(),
        meta: { createdAt: write.now, lastSeenAt: write.now, expiresAt: write.expiresAt },
      }
      this.#sessions.set(sid, entry)
    }
    // The device is recorded when the write creates the session; an update writes
    // the fields it carries (the encryption layer seals them again after a rotation).
    if (created || write.mode === 'update') {
      if (write.device.userAgent !== undefined) entry.meta.userAgent = write.device.userAgent
      if (write.device.ip !== undefined) entry.meta.ip = write.device.ip
    }
    if (write.replace) {
      for (const key of entry.fields.keys()) if (!(key in write.set)) entry.fields.delete(key)
    }
    for (const [key, value] of Object.entries(write.set)) entry.fields.set(key, value)
    for (const key of write.unset) entry.fields.delete(key)
    if (write.mode === 'update') {
      for (const [key, { from, to }] of Object.entries(write.reseal ?? {})) {
        if (entry.fields.get(key) === from) entry.fields.set(key, to)
      }
    }
    entry.meta.lastSeenAt = write.now
    entry.meta.expiresAt = cappedExpiry(write.expiresAt, entry.meta.createdAt, write.maxLifetime)
    this.#index(sid, entry.meta, write.userId)
    this.#emit('changed', sid)
    return 'ok'
  }

  /** In one step, as every call here is. */
  async writeAndRead(
    sid: string,
    write: SessionWrite,
    basis: WriteBasis,
  ): Promise<ReadWriteResult> {
    const previous = this.#live(sid, write.now)?.fields.get(basis.key)
    if ((await this.write(sid, write)) === 'gone') return { result: 'gone' }
    if (previous === basis.value) return { result: 'ok', previous }
    const stored = (await this.get(sid)) ?? undefined
    return stored ? { result: 'ok', previous, stored } : { result: 'ok', previous }
  }

  /** In one step, as every call here is: the limit is exact. The oldest are the first to have joined. */
  async writeLimited(
    sid: string,
    write: SessionWrite,
    limit: SessionLimitRule,
  ): Promise<LimitedWriteResult> {
    const now = write.now
    if (this.#tombstoned(sid, now) || (write.mode === 'update' && !this.#live(sid, now))) {
      return { result: 'gone' }
    }
    const user = write.userId === undefined ? undefined : this.#users.get(write.userId)
    const others = [...(user ?? [])].filter((id) => id !== sid && this.#live(id, now))
    const revoked = overLimit(others, limit)
    if (revoked === 'full') return { result: 'full' }
    await this.write(sid, write)
    for (const id of revoked) this.#destroy(id, now, { reason: 'limit', by: write.by })
    return { result: 'ok', revoked }
  }

  async touch(sid: string, touch: SessionTouch): Promise<WriteResult> {
    const entry = this.#live(sid, touch.now)
    if (!entry) return 'gone'
    entry.meta.lastSeenAt = touch.now
    entry.meta.expiresAt = cappedExpiry(touch.expiresAt, entry.meta.createdAt, touch.maxLifetime)
    return 'ok'
  }

  async destroy(sid: string, options: CallOptions = {}): Promise<void> {
    this.#destroy(sid, Date.now(), options)
  }

  async listUser(userId: string, now: number): Promise<IndexedSession[]> {
    const list: IndexedSession[] = []
    for (const sid of this.#users.get(userId) ?? []) {
      const entry = this.#live(sid, now)
      if (entry) list.push({ id: sid, meta: { ...entry.meta } })
    }
    return list
  }

  async destroyUser(userId: string, except?: string, options: CallOptions = {}): Promise<string[]> {
    const now = Date.now()
    const destroyed: string[] = []
    for (const sid of [...(this.#users.get(userId) ?? [])]) {
      if (sid === except) continue
      if (this.#live(sid, now)) destroyed.push(sid)
      this.#destroy(sid, now, options)
    }
    return destroyed
  }

  async count(): Promise<number> {
    this.#sweep(Date.now())
    return this.#sessions.size
  }

  async ids(): Promise<string[]> {
    this.#sweep(Date.now())
    return [...this.#sessions.keys()]
  }

  async clear(): Promise<void> {
    this.#sessions.clear()
    this.#users.clear()
    this.#tombstones.clear()
  }

  async subscribe(listener: (event: SessionEvent) => void): Promise<() => Promise<void>> {
    this.#listeners.add(listener)
    return async () => {
      this.#listeners.delete(listener)
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#sweeper)
    this.#listeners.clear()
  }

  /** The entry if it exists and has not expired; an expired one is dropped on the way. */
  #live(sid: string, now: number): Entry | undefined {
    const entry = this.#sessions.get(sid)
    if (entry && entry.meta.expiresAt <= now) {
      this.#forget(sid, entry)
      return undefined
    }
    return entry
  }

  #tombstoned(sid: string, now: number): boolean {
    const until = this.#tombstones.get(sid)
    if (until === undefined) return false
    if (until > now) return true
    this.#tombstones.delete(sid)
    return false
  }

  #destroy(sid: string, now: number, said: CallOptions): void {
    const entry = this.#sessions.get(sid)
    if (entry) this.#forget(sid, entry)
    this.#tombstones.set(sid, now + this.#tombstoneTtl)
    this.#emit('destroyed', sid, said)
  }

  #forget(sid: string, entry: Entry): void {
    this.#sessions.delete(sid)
    this.#index(sid, entry.meta, undefined)
  }

  /** Moves the session to `userId`'s index (or out of every index). */
  #index(sid: string, meta: SessionMeta, userId: string | undefined): void {
    if (meta.userId !== undefined && meta.userId !== userId) {
      const set = this.#users.get(meta.userId)
      set?.delete(sid)
      if (set?.size === 0) this.#users.delete(meta.userId)
    }
    if (userId === undefined) {
      delete meta.userId
      return
    }
    meta.userId = userId
    const set = this.#users.get(userId)
    if (set) set.add(sid)
    else this.#users.set(userId, new Set([sid]))
  }

  #emit(type: SessionEvent['type'], sid: string, said: CallOptions = {}): void {
    const event: SessionEvent = { v: EVENT_PROTOCOL_VERSION, type, sid }
    if (said.reason !== undefined) event.reason = said.reason
    if (said.by !== undefined) event.by = said.by
    for (const listener of this.#listeners) listener(event)
  }

  #sweep(now: number): void {
    for (const [sid, entry] of this.#sessions)
      if (entry.meta.expiresAt <= now) this.#forget(sid, entry)
    for (const [sid, until] of this.#tombstones) if (until <= now) this.#tombstones.delete(sid)
  }
}
