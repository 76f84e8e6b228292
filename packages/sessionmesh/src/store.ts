import { EventEmitter } from 'node:events'
import { createRequire } from 'node:module'
import { memoryBackend } from './backends/memory.js'
import {
  type Backend,
  cappedExpiry,
  MalformedRecordError,
  type SessionMeta,
  type SessionWrite,
  type StoredSession,
} from './core/backend.js'
import { decodeSession, encodedSize, encodeSession, type SessionData } from './core/codec.js'
import { InvalidOptionError, SessionTooLargeError, StoreUnavailableError } from './core/errors.js'
import { Guard } from './core/guard.js'
import { reportGone, reportMalformed, reportUnavailable } from './core/telemetry.js'

/** Options of {@link SessionStore}. Times are in milliseconds. */
export interface SessionStoreOptions {
  /**
   * Where sessions live.
   * @default memoryBackend()
   */
  backend?: Backend
  /**
   * The user a session belongs to, for the user index.
   * @default (session) => session.passport?.user, when it is a string or a number
   */
  userId?: (session: SessionData) => string | undefined
  /**
   * A read-only request extends the session's expiry only when the last extension is
   * older than this (and never less often than a tenth of the session's lifetime).
   * @default 60_000
   */
  touchAfter?: number
  /**
   * Lifetime of a session whose cookie has no `maxAge`.
   * @default 86_400_000 (one day)
   */
  ttl?: number
  /**
   * Absolute lifetime counted from creation, however active the session is; 0 for none.
   * @default 0
   */
  maxLifetime?: number
  /**
   * Largest encoded session a save may produce, in bytes; a bigger one is refused
   * with `SESSIONMESH_SESSION_TOO_LARGE` and the stored version is kept.
   * @default 65_536
   */
  maxBytes?: number
  /**
   * Longest wait for one backend call.
   * @default 300
   */
  timeout?: number
  /**
   * After a backend failure, calls fail at once for this long before one probes again.
   * @default 500
   */
  retryAfter?: number
  /**
   * What a request gets while the backend is unavailable. `fail-closed`: an error with
   * code `SESSIONMESH_STORE_UNAVAILABLE` and `status` 503. `fail-open`: no session
   * (the request runs as anonymous) and nothing is written.
   * @default 'fail-closed'
   */
  onUnavailable?: 'fail-closed' | 'fail-open'
}

/** One session of a user, as {@link SessionStore.listUserSessions} returns it. */
export interface UserSession {
  id: string
  createdAt: number
  lastSeenAt: number
  expiresAt: number
  userAgent?: string
  ip?: string
}

/** Node-style callback, as express-session and @fastify/session pass them. */
export type Callback<T = void> = (error: unknown, value?: T) => void

/** What the store remembers about a session a request loaded: the base of its delta. */
interface Snapshot {
  fields: Record<string, string>
  meta: SessionMeta
}

interface DeviceSource {
  headers?: Record<string, unknown>
  ip?: unknown
  socket?: { remoteAddress?: unknown }
}

/**
 * A session store for express-session and @fastify/session, over any sessionmesh
 * backend. A save writes only the top-level keys the request changed; a session
 * destroyed by another request stays destroyed; sessions are indexed by user;
 * read-only requests touch the backend at most once per `touchAfter`; and every
 * backend call is bounded by `timeout`.
 *
 * Every method takes an optional callback and also returns a Promise.
 *
 * @example
 * const store = new SessionStore({ backend: redisBackend({ client }) })
 * app.use(session({ store, secret, resave: false, saveUninitialized: false }))
 */
export class SessionStore extends EventEmitter {
  /** The backend this store writes to. */
  readonly backend: Backend
  readonly #guard: Guard
  readonly #userId: (session: SessionData) => string | undefined
  readonly #touchAfter: number
  readonly #ttl: number
  readonly #maxLifetime: number
  readonly #maxBytes: number
  readonly #failOpen: boolean
  /**
   * Keyed by the very object a request holds (express-session's Session), so that
   * two concurrent requests on one session each diff against what they loaded.
   */
  readonly #snapshots = new WeakMap<object, Snapshot>()

  constructor(options: SessionStoreOptions = {}) {
    super()
    this.backend = options.backend ?? memoryBackend()
    this.#userId = options.userId ?? passportUser
    this.#touchAfter = nonNegative('touchAfter', options.touchAfter, 60_000)
    this.#ttl = positive('ttl', options.ttl, 86_400_000)
    this.#maxLifetime = nonNegative('maxLifetime', options.maxLifetime, 0)
    this.#maxBytes = positive('maxBytes', options.maxBytes, 65_536)
    const policy = options.onUnavailable ?? 'fail-closed'
    if (policy !== 'fail-closed' && policy !== 'fail-open') {
      throw new InvalidOptionError(
        `onUnavailable must be 'fail-closed' or 'fail-open', not ${String(policy)}`,
      )
    }
    this.#failOpen = policy === 'fail-open'
    const backend = this.backend
    this.#guard = new Guard({
      kind: backend.kind,
      timeout: positive('timeout', options.timeout, 300),
      retryAfter: positive('retryAfter', options.retryAfter, 500),
      isOutage: (error) =>
        !(error instanceof MalformedRecordError) && (backend.isOutage?.(error) ?? true),
    })
  }

  /** The session stored under `sid`, or `null` (also for a malformed record, and, fail-open, when the backend is down). */
  get<S = SessionData>(sid: string, callback?: Callback<S | null>): Promise<S | null> {
    // The framework's session type is the caller's to name; the data is what was stored.
    return settle(this.#get(sid) as Promise<S | null>, callback)
  }

  /** Saves the changes the holder of `session` made since it loaded it. */
  set(sid: string, session: object, callback?: Callback): Promise<void> {
    return settle(this.#set(sid, session), callback)
  }

  /** Extends the expiry of an unchanged session, at most once per `touchAfter`. Never fails the request. */
  touch(sid: string, session: object, callback?: Callback): Promise<void> {
    return settle(this.#touch(sid, session), callback)
  }

  /** Destroys a session everywhere; a request still holding it cannot save it back. */
  destroy(sid: string, callback?: Callback): Promise<void> {
    return settle(
      this.#call('destroy', () => this.backend.destroy(sid)),
      callback,
    )
  }

  /** Number of live sessions (scans the backend: for tools, not for requests). */
  length(callback?: Callback<number>): Promise<number> {
    return settle(
      this.#call('length', () => this.backend.count()),
      callback,
    )
  }

  /** Removes every session of this store's backend. */
  clear(callback?: Callback): Promise<void> {
    return settle(
      this.#call('clear', () => this.backend.clear()),
      callback,
    )
  }

  /** The live sessions of a user, most recently seen first. */
  async listUserSessions(userId: string): Promise<UserSession[]> {
    const now = Date.now()
    const listed = await this.#call('listUserSessions', () => this.backend.listUser(userId, now))
    return listed
      .map(({ id, meta }) => {
        const session: UserSession = {
          id,
          createdAt: meta.createdAt,
          lastSeenAt: meta.lastSeenAt,
          expiresAt: meta.expiresAt,
        }
        if (meta.userAgent !== undefined) session.userAgent = meta.userAgent
        if (meta.ip !== undefined) session.ip = meta.ip
        return session
      })
      .sort((a, b) => b.lastSeenAt - a.lastSeenAt)
  }

  /** Ends one session (same as {@link SessionStore.destroy}). */
  revokeSession(sid: string): Promise<void> {
    return this.destroy(sid)
  }

  /** Ends every session of a user, except `options.except` if given; returns the ids ended. */
  revokeUserSessions(userId: string, options: { except?: string } = {}): Promise<string[]> {
    return this.#call('revokeUserSessions', () => this.backend.destroyUser(userId, options.except))
  }

  /** Closes the backend (which leaves clients it was given open). */
  close(): Promise<void> {
    return this.backend.close()
  }

  // express-session calls the three methods below on its store; they mirror its
  // own Store base class, which this class cannot extend without making
  // express-session a hard dependency.

  /** express-session: turns loaded data into `req.session`, remembering what was loaded. */
  createSession<R extends { session?: unknown }>(req: R, data: object): NonNullable<R['session']> {
    const session = expressSession().Store.prototype.createSession.call(this, req, data)
    const snapshot = this.#snapshots.get(data)
    if (snapshot) this.#snapshots.set(session, snapshot)
    return session as NonNullable<R['session']>
  }

  /** express-session: destroys the request's session and gives it a new one. */
  regenerate(req: { sessionID: string }, callback: (error?: unknown) => void): void {
    this.destroy(req.sessionID, (error) => {
      ;(this as unknown as { generate(req: object): void }).generate(req)
      callback(error)
    })
  }

  /** express-session: loads a session by id outside of a request. */
  load<S = SessionData>(sid: string, callback: (error: unknown, session?: S) => void): void {
    this.get(sid, (error, data) => {
      if (error) return callback(error)
      if (!data) return callback(undefined)
      const req: { sessionID: string; sessionStore: SessionStore; session?: S } = {
        sessionID: sid,
        sessionStore: this,
      }
      callback(undefined, this.createSession(req, data))
    })
  }

  async #get(sid: string): Promise<SessionData | null> {
    let stored: StoredSession | null
    try {
      stored = await this.#call('get', () => this.backend.get(sid))
    } catch (error) {
      if (error instanceof MalformedRecordError) {
        reportMalformed(sid, this.backend.kind, error)
        return null
      }
      if (this.#failOpen && error instanceof StoreUnavailableError) return null
      throw error
    }
    if (!stored) return null
    let data: SessionData
    try {
      data = decodeSession(stored)
      if (typeof data.cookie !== 'object' || data.cookie === null) {
        throw new MalformedRecordError('it has no cookie')
      }
    } catch (error) {
      reportMalformed(sid, this.backend.kind, error)
      return null
    }
    this.#snapshots.set(data, { fields: stored.fields, meta: stored.meta })
    return data
  }

  async #set(sid: string, session: object): Promise<void> {
    const fields = encodeSession(session)
    const bytes = encodedSize(fields)
    if (bytes > this.#maxBytes) throw new SessionTooLargeError(sid, bytes, this.#maxBytes)

    const now = Date.now()
    const snapshot = this.#snapshots.get(session)
    const userId = this.#userId(session as SessionData)
    const expiresAt = now + this.#ttlOf(session)
    const write: SessionWrite = {
      mode: 'create',
      set: fields,
      unset: [],
      replace: true,
      now,
      expiresAt,
      maxLifetime: this.#maxLifetime,
      userId,
      device: {},
    }
    if (snapshot) {
      const set: Record<string, string> = {}
      for (const [key, value] of Object.entries(fields)) {
        if (snapshot.fields[key] !== value) set[key] = value
      }
      const unset = Object.keys(snapshot.fields).filter((key) => !(key in fields))
      const unchanged = Object.keys(set).length === 0 && unset.length === 0
      // express-session with `resave: true` saves unchanged sessions: that is a touch.
      if (unchanged && userId === snapshot.meta.userId) return this.#touch(sid, session)
      Object.assign(write, { mode: 'update', set, unset, replace: false })
    } else {
      write.device = deviceOf(session)
    }

    let result: Awaited<ReturnType<Backend['write']>>
    try {
      result = await this.#call('set', () => this.backend.write(sid, write))
    } catch (error) {
      if (this.#failOpen && error instanceof StoreUnavailableError) return
      throw error
    }
    if (result === 'gone') {
      this.#snapshots.delete(session)
      reportGone(sid, 'set')
      return
    }
    const createdAt = snapshot?.meta.createdAt ?? now
    const meta: SessionMeta = {
      ...snapshot?.meta,
      createdAt,
      lastSeenAt: now,
      expiresAt: cappedExpiry(expiresAt, createdAt, this.#maxLifetime),
    }
    if (userId === undefined) delete meta.userId
    else meta.userId = userId
    this.#snapshots.set(session, { fields, meta })
  }

  async #touch(sid: string, session: object): Promise<void> {
    const snapshot = this.#snapshots.get(session)
    const now = Date.now()
    const ttl = this.#ttlOf(session)
    if (snapshot && now - snapshot.meta.lastSeenAt < Math.min(this.#touchAfter, ttl / 10)) return
    const touch = { now, expiresAt: now + ttl, maxLifetime: this.#maxLifetime }
    try {
      const result = await this.#call('touch', () => this.backend.touch(sid, touch))
      if (result === 'gone') {
        this.#snapshots.delete(session)
        reportGone(sid, 'touch')
      } else if (snapshot) {
        snapshot.meta.lastSeenAt = now
        snapshot.meta.expiresAt = cappedExpiry(
          touch.expiresAt,
          snapshot.meta.createdAt,
          this.#maxLifetime,
        )
      }
    } catch (error) {
      // A failed touch only means the expiry was not extended this time; the
      // response must not fail for it. (#call has already reported it.)
      if (!(error instanceof StoreUnavailableError)) throw error
    }
  }

  /** Runs one backend call under the timeout and breaker, reporting failures. */
  async #call<T>(operation: string, call: () => Promise<T>): Promise<T> {
    try {
      return await this.#guard.run(call)
    } catch (error) {
      if (error instanceof StoreUnavailableError) {
        reportUnavailable(
          operation,
          this.backend.kind,
          error,
          this.#failOpen ? 'fail-open' : 'fail-closed',
        )
      }
      throw error
    }
  }

  #ttlOf(session: object): number {
    const cookie = (session as { cookie?: { originalMaxAge?: unknown; maxAge?: unknown } }).cookie
    const maxAge = cookie?.originalMaxAge ?? cookie?.maxAge
    return typeof maxAge === 'number' && maxAge > 0 ? maxAge : this.#ttl
  }
}

/** The default `userId`: passport's serialized user, when it is a string or a number. */
export function passportUser(session: SessionData): string | undefined {
  const passport = session.passport as { user?: unknown } | undefined
  const user = passport?.user
  return typeof user === 'string' || typeof user === 'number' ? String(user) : undefined
}

/** The device a new session comes from; express-session's Session carries its request. */
function deviceOf(session: object): { userAgent?: string; ip?: string } {
  const req = (session as { req?: DeviceSource }).req
  const device: { userAgent?: string; ip?: string } = {}
  const userAgent = req?.headers?.['user-agent']
  if (typeof userAgent === 'string') device.userAgent = userAgent.slice(0, 256)
  const ip = req?.ip ?? req?.socket?.remoteAddress
  if (typeof ip === 'string') device.ip = ip
  return device
}

function settle<T>(work: Promise<T>, callback: Callback<T> | undefined): Promise<T> {
  if (callback) {
    work.then(
      (value) => callback(null, value),
      (error: unknown) => callback(error),
    )
  }
  return work
}

interface ExpressSessionModule {
  Store: { prototype: { createSession(this: unknown, req: object, data: object): object } }
}

let expressSessionModule: ExpressSessionModule | undefined

/** express-session is a peer dependency, loaded only when express-session itself calls us. */
function expressSession(): ExpressSessionModule {
  expressSessionModule ??= createRequire(import.meta.url)('express-session') as ExpressSessionModule
  return expressSessionModule
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (!Number.isFinite(value) || value <= 0) {
    throw new InvalidOptionError(`${name} must be a positive number of ms or bytes, not ${value}`)
  }
  return value
}

function nonNegative(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (!Number.isFinite(value) || value < 0) {
    throw new InvalidOptionError(`${name} must be zero or a positive number, not ${value}`)
  }
  return value
}
