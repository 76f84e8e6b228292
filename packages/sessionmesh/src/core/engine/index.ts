import {
  type Backend,
  cappedExpiry,
  type LimitedWriteResult,
  MalformedRecordError,
  type SessionWrite,
  type StoredSession,
  type WriteBasis,
  type WriteResult,
} from '../backend.js'
import {
  decodeFields,
  decodeSession,
  encodedSize,
  encodeSession,
  type SessionData,
} from '../codec.js'
import { encryptedBackend, isOpened, resealOf, resolveUser } from '../encrypted-backend.js'
import { SessionCipher } from '../encryption.js'
import {
  InvalidOptionError,
  redactSid,
  SessionLimitError,
  SessionTooLargeError,
  StoreUnavailableError,
} from '../errors.js'
import { type DestroyReason, Lifecycle } from '../events.js'
import { cookieExpires, sessionExpiry } from '../expiry.js'
import { Guard } from '../guard.js'
import type { Recorder } from '../metrics.js'
import type { NearCache } from '../near-cache.js'
import { SessionLimit } from '../session-limit.js'
import { debug, reportGone, reportMalformed, reportUnavailable } from '../telemetry.js'
import { type EngineOptions, nonNegative, passportUser, positive } from './options.js'
import {
  type Device,
  freshSnapshot,
  type Loaded,
  newVersion,
  nextSnapshot,
  type Snapshot,
  snapshotOf,
  VERSION_KEY,
} from './snapshot.js'

/**
 * Load, save, touch and destroy over one backend, with what makes them safe and
 * cheap: deltas against what the request loaded, lazy touch, the size limit, the
 * timeout and breaker, the outage policy, and the near cache. `SessionStore`
 * (under express-session) and the `sessionmesh/express` middleware are two thin
 * front ends over it, so both keep the same promises.
 */
export class SessionEngine {
  /** The backend as the engine uses it: with `encryption`, wrapped so that it stores only sealed values. */
  readonly backend: Backend
  readonly failOpen: boolean
  readonly near: NearCache | undefined
  /** Sessions created and destroyed: the stores over this engine forward them as `'session'`. */
  readonly lifecycle = new Lifecycle()
  readonly metrics: Recorder | undefined
  readonly #unwatch: (() => void) | undefined
  readonly #limit: SessionLimit | undefined
  readonly #guard: Guard
  readonly #userId: (session: SessionData) => string | undefined
  readonly #touchAfter: number
  readonly #ttl: number
  readonly #maxLifetime: number
  readonly #maxBytes: number
  readonly #timeout: number
  readonly #cipher: SessionCipher | undefined

  constructor(options: EngineOptions) {
    this.#cipher = options.encryption ? new SessionCipher(options.encryption) : undefined
    this.backend = this.#cipher
      ? encryptedBackend(options.backend, this.#cipher, VERSION_KEY)
      : options.backend
    this.near = options.nearCache
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
    this.failOpen = policy === 'fail-open'
    const backend = this.backend
    this.#timeout = positive('timeout', options.timeout, 300)
    this.#guard = new Guard({
      kind: backend.kind,
      timeout: this.#timeout,
      retryAfter: positive('retryAfter', options.retryAfter, 500),
      isOutage: (error) =>
        !(error instanceof MalformedRecordError) && (backend.isOutage?.(error) ?? true),
    })
    this.#limit =
      options.maxSessionsPerUser === undefined
        ? undefined
        : new SessionLimit(this, options.maxSessionsPerUser, options.onSessionLimit)
    const metrics = options.recorder
    this.metrics = metrics
    if (metrics) {
      this.lifecycle.on('session', (event) => metrics.session(event))
      const guard = this.#guard
      const near = this.near
      this.#unwatch = metrics.watch({
        backend: backend.kind,
        breakerOpen: () => guard.open,
        nearCache: () => near?.stats(),
      })
    }
  }

  /** Stops reporting this engine's state to the metrics registry. */
  dispose(): void {
    this.#unwatch?.()
  }

  /**
   * The session stored under `sid`, or `null` (also for a malformed record, and,
   * fail-open, when the backend is down). With `version` (what the client
   * presented) the near cache may answer without a round trip.
   */
  async load(sid: string, version?: string, onFailOpen?: () => void): Promise<Loaded | null> {
    const near = this.near
    if (near && version !== undefined) {
      const hit = this.cached(sid, version)
      if (hit !== undefined) return hit
    }
    const now = Date.now()
    const loadSeq = near?.seq ?? 0
    let stored: StoredSession | null
    try {
      stored = await this.call('get', () => this.backend.get(sid))
    } catch (error) {
      if (error instanceof MalformedRecordError) {
        reportMalformed(sid, this.backend.kind, error)
        return null
      }
      if (this.failOpen && error instanceof StoreUnavailableError) {
        onFailOpen?.()
        return null
      }
      throw error
    }
    if (!stored) return null
    const snapshot = snapshotOf(stored, loadSeq)
    if (isOpened(stored)) snapshot.reseal = stored.reseal
    const loaded = this.#decode(sid, snapshot)
    const cipher = this.#cipher
    if (cipher && loaded) {
      snapshot.meta = resolveUser(cipher, snapshot.meta, this.userIdOf(loaded.data))
    }
    if (loaded && near) near.fill(sid, snapshot, now)
    return loaded
  }

  /**
   * The near cache's copy of `sid` for a client presenting `version`, decoded, at
   * once: `undefined` when it has none to serve (then {@link load} asks the
   * backend), `null` when the copy did not decode (it is dropped). With
   * `withExpires: false` a cookie with a `maxAge` gets no `expires` (it is
   * `snapshot.meta.expiresAt`): for a reader that makes its own cookie object.
   */
  cached(sid: string, version: string, withExpires = true): Loaded | null | undefined {
    const hit = this.near?.lookup(sid, version, Date.now())
    return hit && this.#decode(sid, hit, withExpires)
  }

  /**
   * Saves what changed in `session` since `snapshot` (everything, when there is no
   * snapshot). An unchanged session is a lazy touch. Returns the new snapshot,
   * `null` when the session was destroyed meanwhile (nothing written) or its cookie
   * has expired (then it is destroyed, unless `stored` is false: the caller knows
   * it was never stored), or `undefined` when fail-open skipped the write.
   */
  async save(
    sid: string,
    session: object,
    snapshot: Snapshot | undefined,
    device: Device = {},
    fields: Record<string, string> = encodeSession(session),
    stored?: boolean,
  ): Promise<Snapshot | null | undefined> {
    delete fields[VERSION_KEY]
    const bytes = encodedSize(fields)
    if (bytes > this.#maxBytes) {
      this.metrics?.refusedWrite('too_large')
      throw new SessionTooLargeError(sid, bytes, this.#maxBytes)
    }

    const now = Date.now()
    const expiresAt = this.expiryOf(session, now)
    if (expiresAt <= now) {
      // The cookie was expired on purpose (maxAge 0, an `expires` in the past):
      // expired means gone, so that a replayed cookie cannot bring it back.
      if (snapshot || stored !== false) await this.destroy(sid, 'expired')
      return null
    }
    const userId = this.userIdOf(session as SessionData)
    // A login: the session gets a user it did not have.
    const login = userId !== undefined && userId !== snapshot?.meta.userId
    const limit = login ? this.#limit : undefined
    // A backend that can applies the limit inside the write; for the others it is checked around it.
    const atomicLimit = limit !== undefined && this.backend.writeLimited !== undefined
    if (login && limit && !atomicLimit) await limit.before(sid, userId, now)
    // An update sends what changed since the snapshot; a save without one, everything.
    const set: Record<string, string> = snapshot ? {} : { ...fields }
    const unset: string[] = []
    if (snapshot) {
      let changed = false
      for (const key in fields) {
        const value = fields[key] as string
        if (snapshot.fields[key] !== value) {
          set[key] = value
          changed = true
        }
      }
      for (const key in snapshot.fields) if (!(key in fields)) unset.push(key)
      // express-session with `resave: true` saves unchanged sessions: that is a touch.
      if (!changed && unset.length === 0 && userId === snapshot.meta.userId) {
        const touched = await this.touch(sid, session, snapshot)
        return touched === 'gone' ? null : snapshot
      }
    }
    const version = newVersion()
    set[VERSION_KEY] = JSON.stringify(version)
    const write: SessionWrite = {
      mode: snapshot ? 'update' : 'create',
      set,
      unset,
      replace: !snapshot,
      now,
      expiresAt,
      maxLifetime: this.#maxLifetime,
      userId,
      device: snapshot ? {} : device,
    }
    // Rotation: what an older key sealed is sealed again with the current one.
    if (snapshot?.reseal) {
      Object.assign(write, resealOf(snapshot.reseal, fields, write, snapshot.meta))
    }

    const near = this.near
    const sentSeq = near?.seq ?? 0
    near?.expectOwnWrite(sid, now)
    // With a near cache an update says which version it was based on, and learns
    // what the session became: the cached copy stays exact for the next request
    // even when other writes came in between.
    const basis =
      near && snapshot?.version !== undefined && !limit
        ? { key: VERSION_KEY, value: JSON.stringify(snapshot.version) }
        : undefined
    let outcome: WriteOutcome
    try {
      const by = this.lifecycle.name
      outcome = await this.call('set', (deadline) =>
        this.#write(sid, { ...write, deadline, by }, limit, basis),
      )
    } catch (error) {
      near?.ownWriteFailed(sid)
      if (this.failOpen && error instanceof StoreUnavailableError) return undefined
      throw error
    }
    if (outcome.result === 'full') {
      near?.ownWriteFailed(sid)
      throw new SessionLimitError(String(userId), limit?.max ?? 0)
    }
    if (outcome.result === 'gone') {
      near?.ownWriteFailed(sid)
      this.metrics?.refusedWrite('gone')
      reportGone(sid, 'set')
      return null
    }
    // Without a snapshot the session is new to this process (under @fastify/session,
    // which hides what it loaded, every save is; docs/events.md says so).
    if (!snapshot) this.lifecycle.created(sid, userId)
    for (const id of outcome.revoked) {
      near?.forget(id)
      this.lifecycle.destroyed(id, 'limit')
    }
    if (login && limit && !atomicLimit) await limit.after(sid, userId, now)
    // The backend answered what the write was applied to (with a near cache), and
    // the session itself when another write came first.
    const read = outcome.read
    const next = read?.stored
      ? freshSnapshot(read.stored, version, snapshot, read.previous, (v) =>
          near ? near.versionsOf(sid, v) : [],
        )
      : nextSnapshot(snapshot, write, fields, version)
    if (read) near?.wroteFresh(sid, next, sentSeq, Date.now())
    else near?.wrote(sid, next, snapshot, Date.now())
    // The next save of this request diffs against what was just written.
    next.loadSeq = near?.seq ?? 0
    return next
  }

  /** One write; a login under the session limit goes to `writeLimited` where the backend has it. */
  async #write(
    sid: string,
    write: SessionWrite,
    limit: SessionLimit | undefined,
    basis: WriteBasis | undefined,
  ): Promise<WriteOutcome> {
    const backend = this.backend
    if (limit && backend.writeLimited) return backend.writeLimited(sid, write, limit.rule)
    if (basis && backend.writeAndRead) {
      const read = await backend.writeAndRead(sid, write, basis)
      return read.result === 'gone' ? read : { result: 'ok', revoked: [], read }
    }
    return (await backend.write(sid, write)) === 'gone'
      ? { result: 'gone' }
      : { result: 'ok', revoked: [] }
  }

  /** True when a read-only request on this session should extend its expiry now. */
  touchDue(session: object, snapshot: Snapshot | undefined, now = Date.now()): boolean {
    if (!snapshot) return true
    return now - snapshot.meta.lastSeenAt >= Math.min(this.#touchAfter, this.ttlOf(session) / 10)
  }

  /** Extends the expiry of an unchanged session, at most once per `touchAfter`. Never fails on an outage. */
  async touch(sid: string, session: object, snapshot: Snapshot | undefined): Promise<WriteResult> {
    const now = Date.now()
    const expiresAt = this.expiryOf(session, now)
    if (expiresAt <= now) {
      // An expired cookie on an unchanged session: destroyed like a save of it.
      await this.destroy(sid)
      return 'gone'
    }
    if (!this.touchDue(session, snapshot, now)) return 'ok'
    const touch = { now, expiresAt, maxLifetime: this.#maxLifetime }
    try {
      // No deadline: a touch reported as failed changes nothing a request relies on.
      const result = await this.call('touch', () => this.backend.touch(sid, touch))
      if (result === 'gone') {
        reportGone(sid, 'touch')
        this.near?.forget(sid)
      } else if (snapshot) {
        // A new object: the old one may be shared with the near cache or another request.
        snapshot.meta = {
          ...snapshot.meta,
          lastSeenAt: now,
          expiresAt: cappedExpiry(touch.expiresAt, snapshot.meta.createdAt, this.#maxLifetime),
        }
        this.near?.touched(sid, snapshot, now)
      }
      return result
    } catch (error) {
      // A failed touch only means the expiry was not extended this time; the
      // response must not fail for it. (call() has already reported it.)
      if (!(error instanceof StoreUnavailableError)) throw error
      return 'ok'
    }
  }

  /** Destroys a session everywhere, this process's near cache first; `reason` is for the lifecycle event. */
  async destroy(sid: string, reason: DestroyReason = 'logout'): Promise<void> {
    this.near?.forget(sid)
    const by = this.lifecycle.name
    await this.call('destroy', (deadline) => this.backend.destroy(sid, { deadline, reason, by }))
    // Again: a load that began before the destroy may have filled the cache meanwhile.
    this.near?.forget(sid)
    this.lifecycle.destroyed(sid, reason)
  }

  /** Destroys every session of a user but `except`; returns the ids destroyed. */
  async destroyUser(
    userId: string,
    except?: string,
    reason: DestroyReason = 'revoked',
  ): Promise<string[]> {
    const ids = await this.call('revokeUserSessions', (deadline) =>
      this.backend.destroyUser(userId, except, { deadline, reason, by: this.lifecycle.name }),
    )
    for (const id of ids) this.near?.forget(id)
    for (const id of ids) this.lifecycle.destroyed(id, reason)
    return ids
  }

  /** Runs one backend call under the timeout and breaker, reporting failures. */
  async call<T>(operation: string, call: (deadline: number) => Promise<T>): Promise<T> {
    const metrics = this.metrics
    const started = metrics ? performance.now() : 0
    try {
      const result = await this.#guard.run(call)
      metrics?.backendCall(operation, 'ok', (performance.now() - started) / 1000)
      return result
    } catch (error) {
      metrics?.backendCall(
        operation,
        error instanceof StoreUnavailableError ? 'unavailable' : 'error',
        (performance.now() - started) / 1000,
      )
      if (error instanceof StoreUnavailableError) {
        reportUnavailable(
          operation,
          this.backend.kind,
          error,
          this.failOpen ? 'fail-open' : 'fail-closed',
        )
      }
      throw error
    }
  }

  /** The lifetime a write or touch gives the session, in ms (0 when its cookie has expired). */
  ttlOf(session: object, now = Date.now()): number {
    return Math.max(0, this.expiryOf(session, now) - now)
  }

  /**
   * When a write or touch made now makes the session end: now + its cookie's
   * `maxAge`; for a cookie with an absolute `expires` and no `maxAge`, that
   * `expires`; else now + `ttl`. At or before `now` means the cookie was expired
   * on purpose (`maxAge = 0`, an `expires` in the past).
   */
  expiryOf(session: object, now = Date.now()): number {
    return sessionExpiry(session, now, this.#ttl)
  }

  /** The user a session belongs to; an empty string is no user (see `userId` in the README). */
  userIdOf(session: SessionData): string | undefined {
    const userId = this.#userId(session)
    return userId === '' ? undefined : userId
  }

  #decode(sid: string, snapshot: Snapshot, withExpires = true): Loaded | null {
    let data: SessionData
    try {
      data = withExpires ? decodeSession(snapshot) : decodeFields(snapshot)
      // A record without a cookie (fixtures, other stores, migrated data) is read
      // as it is; it lives for `ttl`. A cookie that is not an object is corrupt.
      if ('cookie' in data && (typeof data.cookie !== 'object' || data.cookie === null)) {
        throw new MalformedRecordError('its cookie is not an object')
      }
      // With a maxAge, decodeSession gave the cookie the backend's expiry: no date to parse.
      const cookie = data.cookie as { originalMaxAge?: unknown } | undefined
      const expires =
        typeof cookie?.originalMaxAge === 'number' ? snapshot.meta.expiresAt : cookieExpires(cookie)
      // An absolute `expires` stored with the cookie is honoured even where the
      // backend's own expiry is later (a record another store wrote, an older release).
      if (expires !== undefined && expires <= Date.now()) {
        debug(
          'session %s: its cookie expired at %s',
          redactSid(sid),
          new Date(expires).toISOString(),
        )
        return null
      }
    } catch (error) {
      reportMalformed(sid, this.backend.kind, error)
      this.near?.forget(sid)
      return null
    }
    return { data, snapshot }
  }
}

/** What one write did: a {@link LimitedWriteResult}, with what `writeAndRead` answered when it was used. */
type WriteOutcome =
  | { result: 'gone' }
  | { result: 'full' }
  | {
      result: 'ok'
      revoked: string[]
      read?: { previous: string | undefined; stored?: StoredSession }
    }
