import { randomBytes } from 'node:crypto'
import {
  type Backend,
  cappedExpiry,
  type LimitedWriteResult,
  MalformedRecordError,
  type SessionMeta,
  type SessionWrite,
  type StoredSession,
  type WriteResult,
} from './backend.js'
import { decodeSession, encodedSize, encodeSession, type SessionData } from './codec.js'
import {
  encryptedBackend,
  isOpened,
  type Reseal,
  resealOf,
  resolveUser,
} from './encrypted-backend.js'
import { type EncryptionOptions, SessionCipher } from './encryption.js'
import {
  InvalidOptionError,
  redactSid,
  SessionLimitError,
  SessionTooLargeError,
  StoreUnavailableError,
} from './errors.js'
import { type DestroyReason, Lifecycle } from './events.js'
import { cookieExpires, sessionExpiry } from './expiry.js'
import { Guard } from './guard.js'
import type { Recorder } from './metrics.js'
import type { NearCache } from './near-cache.js'
import { SessionLimit, type SessionLimitPolicy } from './session-limit.js'
import { debug, reportGone, reportMalformed, reportUnavailable } from './telemetry.js'

/**
 * The stored top-level key that holds the version of the last write: a random
 * nonce, new on every write. A node's near cache may serve a session only to a
 * client that presents the version the cached copy contains (see near-cache.ts).
 * It is stripped from the session the application sees.
 */
export const VERSION_KEY = '__smv'

/**
 * The stored top-level key a rotated-to session carries (`req.session.rotate` in
 * `sessionmesh/express`): until when, in epoch ms, a request presenting the old
 * id is served this session. Stripped from what the application sees, and never
 * removed by a delta (it is not in {@link Snapshot.fields}).
 */
export const ROTATED_KEY = '__smr'

/** What a request loaded: the base of its delta, and of the near cache's bookkeeping. */
export interface Snapshot {
  /** The stored fields, without {@link VERSION_KEY}. Never mutated: shared with the near cache. */
  readonly fields: Readonly<Record<string, string>>
  meta: SessionMeta
  /** The version stored with these fields, if any. */
  version: string | undefined
  /** Versions whose writes these fields are known to contain (the near cache's check). */
  versions: readonly string[]
  /** The near cache's change counter when the load began. */
  loadSeq: number
  /** With encryption: what was sealed with an older key, for the next write to seal again. */
  reseal?: Reseal
  /** Set on a session made by a rotation: see {@link ROTATED_KEY}. */
  rotatedUntil?: number | undefined
}

/** A session as loaded: the data the application gets, and what it was loaded from. */
export interface Loaded {
  data: SessionData
  snapshot: Snapshot
}

/** The options the engine shares between the store and the middleware. Times in ms. */
export interface EngineOptions {
  backend: Backend
  userId?: ((session: SessionData) => string | undefined) | undefined
  touchAfter?: number | undefined
  ttl?: number | undefined
  maxLifetime?: number | undefined
  maxBytes?: number | undefined
  timeout?: number | undefined
  retryAfter?: number | undefined
  onUnavailable?: 'fail-closed' | 'fail-open' | undefined
  nearCache?: NearCache | undefined
  maxSessionsPerUser?: number | undefined
  onSessionLimit?: SessionLimitPolicy | undefined
  /** Built from the public `metrics` option; absent, nothing is recorded. */
  recorder?: Recorder | undefined
  encryption?: EncryptionOptions | undefined
}

/** Where a new session comes from, recorded when the write creates it. */
export interface Device {
  userAgent?: string
  ip?: string
}

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
    const now = Date.now()
    if (near && version !== undefined) {
      const hit = near.lookup(sid, version, now)
      if (hit) return this.#decode(sid, hit)
    }
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
    const { [VERSION_KEY]: encodedVersion, [ROTATED_KEY]: rotated, ...fields } = stored.fields
    const storedVersion = parseVersion(encodedVersion)
    const snapshot: Snapshot = {
      fields,
      meta: stored.meta,
      version: storedVersion,
      versions: storedVersion === undefined ? [] : [storedVersion],
      loadSeq,
    }
    if (isOpened(stored)) snapshot.reseal = stored.reseal
    if (rotated !== undefined) snapshot.rotatedUntil = Number(rotated)
    const loaded = this.#decode(sid, snapshot)
    const cipher = this.#cipher
    if (cipher && loaded) {
      snapshot.meta = resolveUser(cipher, snapshot.meta, this.userIdOf(loaded.data))
    }
    if (loaded && near) near.fill(sid, snapshot, now)
    return loaded
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
    const version = newVersion()
    const write: SessionWrite = {
      mode: 'create',
      set: { ...fields, [VERSION_KEY]: JSON.stringify(version) },
      unset: [],
      replace: true,
      now,
      expiresAt,
      maxLifetime: this.#maxLifetime,
      userId,
      device,
    }
    if (snapshot) {
      const set: Record<string, string> = {}
      let changed = false
      for (const key in fields) {
        const value = fields[key] as string
        if (snapshot.fields[key] !== value) {
          set[key] = value
          changed = true
        }
      }
      const unset: string[] = []
      for (const key in snapshot.fields) if (!(key in fields)) unset.push(key)
      // express-session with `resave: true` saves unchanged sessions: that is a touch.
      if (!changed && unset.length === 0 && userId === snapshot.meta.userId) {
        const touched = await this.touch(sid, session, snapshot)
        return touched === 'gone' ? null : snapshot
      }
      set[VERSION_KEY] = JSON.stringify(version)
      Object.assign(write, { mode: 'update', set, unset, replace: false, device: {} })
      // Rotation: what an older key sealed is sealed again with the current one.
      if (snapshot.reseal)
        Object.assign(write, resealOf(snapshot.reseal, fields, write, snapshot.meta))
    }

    const near = this.near
    near?.expectOwnWrite(sid, now)
    let outcome: LimitedWriteResult
    try {
      const by = this.lifecycle.name
      outcome = await this.call('set', (deadline) =>
        this.#write(sid, { ...write, deadline, by }, limit),
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
    const createdAt = snapshot?.meta.createdAt ?? now
    const meta: SessionMeta = {
      ...snapshot?.meta,
      createdAt,
      lastSeenAt: now,
      expiresAt: cappedExpiry(expiresAt, createdAt, this.#maxLifetime),
    }
    if (userId === undefined) delete meta.userId
    else meta.userId = userId
    if (device.userAgent !== undefined && !snapshot) meta.userAgent = device.userAgent
    if (device.ip !== undefined && !snapshot) meta.ip = device.ip
    const versions = snapshot ? [...snapshot.versions.slice(-15), version] : [version]
    // A rotation's marker is written once, with the whole session; kept out of the
    // snapshot, no later delta removes it.
    const { [ROTATED_KEY]: rotated, ...kept } = fields
    const next: Snapshot = { fields: kept, meta, version, versions, loadSeq: near?.seq ?? 0 }
    if (rotated !== undefined) next.rotatedUntil = Number(rotated)
    else if (snapshot?.rotatedUntil !== undefined) next.rotatedUntil = snapshot.rotatedUntil
    near?.wrote(sid, next, snapshot, Date.now())
    // The next save of this request diffs against what was just written.
    next.loadSeq = near?.seq ?? 0
    return next
  }

  /** One write; a login under the session limit goes to `writeLimited` where the backend has it. */
  async #write(
    sid: string,
    write: SessionWrite,
    limit: SessionLimit | undefined,
  ): Promise<LimitedWriteResult> {
    const backend = this.backend
    if (limit && backend.writeLimited) return backend.writeLimited(sid, write, limit.rule)
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

  #decode(sid: string, snapshot: Snapshot): Loaded | null {
    let data: SessionData
    try {
      data = decodeSession(snapshot)
      // A record without a cookie (fixtures, other stores, migrated data) is read
      // as it is; it lives for `ttl`. A cookie that is not an object is corrupt.
      if ('cookie' in data && (typeof data.cookie !== 'object' || data.cookie === null)) {
        throw new MalformedRecordError('its cookie is not an object')
      }
      const expires = cookieExpires(data.cookie)
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

/** The default `userId`: passport's serialized user, when it is a non-empty string or a number. */
export function passportUser(session: SessionData): string | undefined {
  const passport = session.passport as { user?: unknown } | undefined
  const user = passport?.user
  if (typeof user === 'number') return String(user)
  return typeof user === 'string' && user !== '' ? user : undefined
}

/** 48 random bits: unique per write for all practical purposes, 8 cookie-safe characters. */
function newVersion(): string {
  return randomBytes(6).toString('base64url')
}

function parseVersion(encoded: string | undefined): string | undefined {
  if (encoded === undefined) return undefined
  try {
    const version: unknown = JSON.parse(encoded)
    return typeof version === 'string' ? version : undefined
  } catch {
    debug('ignoring an unreadable session version')
    return undefined
  }
}

/** Throws unless `value` is a positive finite number; `fallback` when undefined. */
export function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (!Number.isFinite(value) || value <= 0) {
    throw new InvalidOptionError(`${name} must be a positive number of ms or bytes, not ${value}`)
  }
  return value
}

/** Throws unless `value` is zero or a positive finite number; `fallback` when undefined. */
export function nonNegative(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (!Number.isFinite(value) || value < 0) {
    throw new InvalidOptionError(`${name} must be zero or a positive number, not ${value}`)
  }
  return value
}
