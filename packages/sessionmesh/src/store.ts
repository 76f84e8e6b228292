import { EventEmitter } from 'node:events'
import { createRequire } from 'node:module'
import { memoryBackend } from './backends/memory.js'
import type { Backend } from './core/backend.js'
import type { SessionData } from './core/codec.js'
import type { EncryptionOptions } from './core/encryption.js'
import { SessionEngine } from './core/engine/index.js'
import { passportUser } from './core/engine/options.js'
import type { Device, Snapshot } from './core/engine/snapshot.js'
import { InvalidOptionError, NotSupportedError } from './core/errors.js'
import type { SessionLifecycleEvent } from './core/events.js'
import { type MetricsOptions, recorderFor } from './metrics.js'

export { passportUser }
/** Options of {@link SessionStore}. Times are in milliseconds. */
export interface SessionStoreOptions {
  /**
   * Where sessions live.
   * @default memoryBackend()
   */
  backend?: Backend
  /**
   * The user a session belongs to, for the user index. `undefined` or an empty
   * string: the session belongs to no user (it is not indexed).
   * @default (session) => session.passport?.user, when it is a non-empty string or a number
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
  /**
   * Most sessions one user may have. A login beyond it ends the user's oldest
   * sessions (`onSessionLimit: 'revoke-oldest'`) or is refused with
   * `SESSIONMESH_SESSION_LIMIT` (`'refuse'`). Checked against the user index just
   * before (refuse) or after (revoke-oldest) the login's write.
   * @default undefined (no limit)
   */
  maxSessionsPerUser?: number
  /**
   * What a login beyond `maxSessionsPerUser` does.
   * @default 'revoke-oldest'
   */
  onSessionLimit?: 'revoke-oldest' | 'refuse'
  /**
   * Prometheus metrics (`sessionmesh_*`) in this prom-client registry, e.g.
   * `{ registry: new Registry() }`. prom-client is loaded only when this is given.
   * @default undefined (nothing is recorded)
   */
  metrics?: MetricsOptions
  /**
   * Encryption at rest: AES-256-GCM of every session value and of the device fields,
   * and a keyed hash (HMAC-SHA-256) of user ids in the user index. The first key
   * seals, every key opens; a session is sealed again with the first key on its
   * next write. A record no key opens is treated as malformed (no session).
   * See the README, "Encryption at rest".
   * @default undefined (stored in clear)
   * @example
   * encryption: { keys: [{ id: 'k2', key: process.env.SESSION_KEY_K2 as string }, { id: 'k1', key: oldKey }] }
   */
  encryption?: EncryptionOptions
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

/** The request express-session's `generate` gives a new session. */
export interface GeneratingRequest {
  sessionID: string
  session?: unknown
}

/** The parts of a request the device is read from. */
export interface DeviceSource {
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
  readonly #engine: SessionEngine
  /**
   * Kept on the very object a request holds (express-session's Session), so that
   * two concurrent requests on one session each diff against what they loaded.
   */
  readonly #snapshots = new Tags<Snapshot>()
  /** Sessions express-session generated in this process that no save has stored yet. */
  readonly #fresh = new Tags<true>()
  #generate: ((req: GeneratingRequest) => void) | undefined

  constructor(options: SessionStoreOptions = {}) {
    super()
    this.backend = options.backend ?? memoryBackend()
    const engine =
      adopted ??
      new SessionEngine({
        ...options,
        backend: this.backend,
        recorder: recorderFor(options.metrics),
      })
    this.#engine = engine
    engines.set(this, engine)
    engine.lifecycle.on('session', (event: SessionLifecycleEvent) => this.emit('session', event))
    // Other processes' destroys are heard on the bus only for an app that listens.
    this.on('newListener', (name: string | symbol) => {
      if (name === 'session') engine.lifecycle.watch(this.backend)
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
    return settle(this.#engine.destroy(sid, 'logout'), callback)
  }

  /** Number of live sessions (scans the backend: for tools, not for requests). */
  length(callback?: Callback<number>): Promise<number> {
    return settle(
      this.#engine.call('length', () => this.backend.count()),
      callback,
    )
  }

  /**
   * The ids of the live sessions (scans the backend: for tools, not for requests).
   * Fails with `SESSIONMESH_NOT_SUPPORTED` on a backend that cannot list them.
   */
  ids(callback?: Callback<string[]>): Promise<string[]> {
    return settle(this.#ids(), callback)
  }

  /**
   * Every live session, each with its `id` (as connect-redis returns them). Loads
   * them one by one: for tools and small stores, not for requests.
   */
  all<S = SessionData>(
    callback?: Callback<Array<S & { id: string }>>,
  ): Promise<Array<S & { id: string }>> {
    return settle(this.#all() as Promise<Array<S & { id: string }>>, callback)
  }

  /** Removes every session of this store's backend. */
  clear(callback?: Callback): Promise<void> {
    const cleared = this.#engine.call('clear', () => this.backend.clear())
    return settle(
      cleared.then(() => this.#engine.near?.clear()),
      callback,
    )
  }

  /** The live sessions of a user, most recently seen first. */
  async listUserSessions(userId: string): Promise<UserSession[]> {
    checkUserId(userId)
    const now = Date.now()
    const backend = this.#engine.backend
    const listed = await this.#engine.call('listUserSessions', () => backend.listUser(userId, now))
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
    return this.#engine.destroy(sid, 'revoked')
  }

  /** Ends every session of a user, except `options.except` if given; returns the ids ended. */
  revokeUserSessions(userId: string, options: { except?: string } = {}): Promise<string[]> {
    try {
      checkUserId(userId)
    } catch (error) {
      return Promise.reject(error)
    }
    return this.#engine.destroyUser(userId, options.except)
  }

  /** Stops hearing lifecycle events and closes the backend (which leaves clients it was given open). */
  async close(): Promise<void> {
    await this.#engine.lifecycle.close()
    this.#engine.dispose()
    await this.backend.close()
  }

  // express-session calls the three methods below on its store; they mirror its
  // own Store base class, which this class cannot extend without making
  // express-session a hard dependency.

  /** express-session: turns loaded data into `req.session`, remembering what was loaded. */
  createSession<S extends object = SessionData>(req: object, data: object): S {
    const snapshot = this.#snapshots.get(data)
    // A record stored without a cookie (by another store, or a fixture) gets a
    // browser-session one; express-session's own would fail to read it.
    const record = data as { cookie?: unknown }
    if (typeof record.cookie !== 'object' || record.cookie === null) {
      record.cookie = { originalMaxAge: null, expires: null }
    }
    const session = expressSession().Store.prototype.createSession.call(this, req, data)
    if (snapshot) this.#snapshots.set(session, snapshot)
    return session as S
  }

  /**
   * express-session: destroys the request's session and gives it a new one. A
   * session that was never stored (a login from a fresh visit) is not destroyed:
   * there is nothing to remove, and a tombstone would be a write anyone can cause.
   */
  regenerate(
    req: { sessionID: string; session?: unknown },
    callback: (error?: unknown) => void,
  ): void {
    const renew = (error?: unknown) => {
      this.generate?.(req as GeneratingRequest)
      callback(error)
    }
    if (this.#neverStored(req.session)) process.nextTick(renew)
    else settle(this.#engine.destroy(req.sessionID, 'regenerated'), renew)
  }

  /**
   * express-session assigns its `generate(req)` to the store it is given. The store
   * wraps it to remember which sessions are new, so that destroying one that was
   * never saved (a logout without a cookie) writes nothing.
   */
  get generate(): ((req: GeneratingRequest) => void) | undefined {
    return this.#generate
  }

  set generate(generate: ((req: GeneratingRequest) => void) | undefined) {
    this.#generate =
      generate &&
      ((req) => {
        generate(req)
        const session = req.session
        if (typeof session !== 'object' || session === null) return
        this.#fresh.set(session, true)
        const destroy = (session as { destroy?: unknown }).destroy
        if (typeof destroy !== 'function') return
        // express-session's Session#destroy names only the id to the store; this one
        // skips the store while the session is unsaved. Not enumerable: not session data.
        Object.defineProperty(session, 'destroy', {
          configurable: true,
          enumerable: false,
          writable: true,
          value: (callback?: (error?: unknown) => void) => {
            if (!this.#neverStored(session)) return destroy.call(session, callback)
            if (req.session === session) delete req.session
            if (callback) process.nextTick(callback)
            return session
          },
        })
      })
  }

  /** express-session: loads a session by id outside of a request. */
  load<S extends object = SessionData>(
    sid: string,
    callback: (error: unknown, session?: S) => void,
  ): void {
    this.get<object>(sid, (error, data) => {
      if (error) return callback(error)
      if (!data) return callback(undefined)
      const req = { sessionID: sid, sessionStore: this }
      callback(undefined, this.createSession<S>(req, data))
    })
  }

  #ids(): Promise<string[]> {
    const backend = this.backend
    if (!backend.ids) {
      return Promise.reject(
        new NotSupportedError(`the ${backend.kind} backend cannot list session ids`),
      )
    }
    return this.#engine.call('ids', () => (backend.ids as () => Promise<string[]>).call(backend))
  }

  async #all(): Promise<Array<SessionData & { id: string }>> {
    const ids = await this.#ids()
    const sessions: Array<SessionData & { id: string }> = []
    // A few loads in flight at a time: bounded, and not one round trip after another.
    for (let i = 0; i < ids.length; i += 16) {
      const loaded = await Promise.all(ids.slice(i, i + 16).map((sid) => this.#engine.load(sid)))
      loaded.forEach((session, k) => {
        if (session) sessions.push({ id: ids[i + k] as string, ...session.data })
      })
    }
    return sessions
  }

  async #get(sid: string): Promise<SessionData | null> {
    const loaded = await this.#engine.load(sid)
    if (!loaded) return null
    this.#snapshots.set(loaded.data, loaded.snapshot)
    return loaded.data
  }

  async #set(sid: string, session: object): Promise<void> {
    const snapshot = this.#snapshots.get(session)
    const saved = await this.#engine.save(
      sid,
      session,
      snapshot,
      snapshot ? {} : deviceOf((session as { req?: DeviceSource }).req),
      undefined,
      !this.#neverStored(session),
    )
    if (saved === null) this.#snapshots.delete(session)
    else if (saved) {
      this.#snapshots.set(session, saved)
      this.#fresh.delete(session)
    }
  }

  /** True for a session express-session generated here that no save has stored. */
  #neverStored(session: unknown): boolean {
    return (
      typeof session === 'object' &&
      session !== null &&
      this.#fresh.has(session) &&
      !this.#snapshots.has(session)
    )
  }

  async #touch(sid: string, session: object): Promise<void> {
    const snapshot = this.#snapshots.get(session)
    const result = await this.#engine.touch(sid, session, snapshot)
    if (result === 'gone') this.#snapshots.delete(session)
  }
}

/** The engine behind a store, for the `sessionmesh/express` middleware (not public API). */
export function engineOf(store: object): SessionEngine | undefined {
  return engines.get(store)
}

/** A base class whose constructor returns its argument, so that a subclass adds its private fields to that object. */
class Adopt {
  constructor(target: object) {
    // biome-ignore lint/correctness/noConstructorReturn: the point of the class (see Tags)
    return target
  }
}

/**
 * A value per session object (what it was loaded or last saved as; whether it is
 * new), held by the object itself in a private field of this store's: invisible
 * to every copy, spread, JSON, `Reflect.ownKeys` and `structuredClone` of the
 * session. A WeakMap did the same at a cost: with three entries per request, its
 * upkeep in the garbage collector took a tenth of a read-modify-write's time
 * under express-session (bench/pair.mjs). A non-enumerable symbol property, used
 * next, took 180 to 320 ns to add to an express-session `Session`, the private
 * field 25 to 60 (bench/tag-cost.mjs, in 5 runs of 6; one run, on a busy
 * machine, read the other way). An object that takes no new property (frozen)
 * falls back to a WeakMap.
 */
class Tags<T> {
  readonly #frozen = new WeakMap<object, T>()
  // One class per Tags, so that each has a private name of its own.
  readonly #slot = class Slot extends Adopt {
    #value: T | undefined

    static has(session: object): session is Slot {
      return #value in session
    }
    static read(session: Slot): T | undefined {
      return session.#value
    }
    static write(session: object, value: T | undefined): void {
      const slot = Slot.has(session) ? session : new Slot(session)
      slot.#value = value
    }
  }

  get(session: object): T | undefined {
    const slot = this.#slot
    return slot.has(session) ? slot.read(session) : this.#frozen.get(session)
  }

  has(session: object): boolean {
    return this.get(session) !== undefined
  }

  set(session: object, value: T): void {
    const slot = this.#slot
    if (slot.has(session) || Object.isExtensible(session)) slot.write(session, value)
    else this.#frozen.set(session, value)
  }

  delete(session: object): void {
    const slot = this.#slot
    if (slot.has(session)) slot.write(session, undefined)
    else this.#frozen.delete(session)
  }
}

const engines = new WeakMap<object, SessionEngine>()
let adopted: SessionEngine | undefined

/** A store over an existing engine: the middleware's `store`, sharing its near cache. */
export function storeOver(engine: SessionEngine): SessionStore {
  adopted = engine
  try {
    return new SessionStore({ backend: engine.backend })
  } finally {
    adopted = undefined
  }
}

/** The device a new session comes from: express-session's Session carries its request. */
export function deviceOf(req: DeviceSource | undefined): Device {
  const device: Device = {}
  const userAgent = req?.headers?.['user-agent']
  if (typeof userAgent === 'string') device.userAgent = userAgent.slice(0, 256)
  const ip = req?.ip ?? req?.socket?.remoteAddress
  // A dual-stack server reports IPv4 clients as ::ffff:a.b.c.d: keep the address people know.
  if (typeof ip === 'string') device.ip = ip.startsWith('::ffff:') ? ip.slice(7) : ip
  return device
}

/**
 * An empty string is no user: the store never indexes a session under it, so
 * listing or revoking it would silently find nothing (a `req.user?.id ?? ''` slip).
 */
function checkUserId(userId: unknown): void {
  if (typeof userId !== 'string' || userId === '') {
    throw new InvalidOptionError(
      `a user id must be a non-empty string, not ${JSON.stringify(userId) ?? String(userId)}`,
    )
  }
}

function settle<T>(work: Promise<T>, callback: Callback<T> | undefined): Promise<T> {
  if (callback) {
    work.then(
      (value) => outsidePromise(() => callback(null, value)),
      (error: unknown) => outsidePromise(() => callback(error)),
    )
  }
  return work
}

/**
 * Runs a callback so that what it throws is an uncaught exception, as from any
 * callback API (express-session's MemoryStore), not the rejection of a promise
 * nobody holds: a test's failed assertion in a store callback would otherwise
 * show as a timeout, and an app's `unhandledRejection` logger would swallow it.
 */
function outsidePromise(call: () => void): void {
  try {
    call()
  } catch (error) {
    process.nextTick(() => {
      throw error
    })
  }
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
