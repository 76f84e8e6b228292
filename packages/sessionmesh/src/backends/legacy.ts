import { debuglog } from 'node:util'
import type { Backend, SessionWrite, StoredSession, WriteResult } from '../core/backend.js'
import { encodeSession, type SessionData } from '../core/codec.js'
import { passportUser } from '../core/engine/options.js'
import { InvalidOptionError, redactSid } from '../core/errors.js'
import { connect, type RedisLike } from './redis/client.js'

const debug = debuglog('sessionmesh:legacy')

// Switching a running app from connect-redis or connect-pg-simple without logging
// anybody out: a session sessionmesh does not have is looked up in the old store,
// written in the new format, and deleted from the old store, so that a later
// logout cannot be undone by importing the old copy again.

/** A session as another library stored it. */
export interface LegacySession {
  /** The session object express-session saved. */
  session: SessionData
  /** When the old store would have forgotten it (epoch ms). */
  expiresAt: number
}

/** Where old sessions are read from, and deleted once imported. */
export interface LegacySource {
  /** Short name for logs, e.g. `connect-redis`. */
  readonly kind: string
  read(sid: string): Promise<LegacySession | null>
  remove(sid: string): Promise<void>
}

/** Options of {@link legacyBackend}. */
export interface LegacyBackendOptions {
  /** The new backend; every session ends up there. */
  backend: Backend
  /** The store the app used before, e.g. {@link connectRedisSource} or {@link connectPgSimpleSource}. */
  legacy: LegacySource
  /**
   * The user a session belongs to, for the user index: the same function as the
   * store's `userId` option.
   * @default (session) => session.passport?.user, when it is a string or a number
   */
  userId?: (session: SessionData) => string | undefined
}

/**
 * Wraps the new backend for the switch-over: a session missing from it is imported
 * from the old store on first use, so users stay logged in. Remove the wrapper once
 * the old store's sessions have expired (its longest cookie lifetime).
 *
 * @example
 * const backend = legacyBackend({
 *   backend: redisBackend({ client }),
 *   legacy: connectRedisSource({ client }),
 * })
 * app.use(session({ store: new SessionStore({ backend }), secret, … }))
 */
export function legacyBackend(options: LegacyBackendOptions): Backend {
  const { backend, legacy } = options
  if (!backend || !legacy)
    throw new InvalidOptionError('legacyBackend needs `backend` and `legacy`')
  const userId = options.userId ?? passportUser

  const importSession = async (sid: string): Promise<StoredSession | null> => {
    const old = await legacy.read(sid)
    if (!old) return null
    const now = Date.now()
    if (old.expiresAt <= now) return null
    const device: SessionWrite['device'] = {}
    const write: SessionWrite = {
      mode: 'create',
      set: encodeSession(old.session),
      unset: [],
      replace: true,
      now,
      expiresAt: old.expiresAt,
      maxLifetime: 0,
      userId: userId(old.session),
      device,
    }
    // 'create' is refused by a tombstone: a session logged out here stays out.
    const result: WriteResult = await backend.write(sid, write)
    await legacy.remove(sid)
    debug('imported session %s from %s: %s', redactSid(sid), legacy.kind, result)
    return result === 'ok' ? backend.get(sid) : null
  }

  // Everything but reads and destroys goes straight to the new backend.
  const wrapped: Backend = {
    kind: `${backend.kind}+${legacy.kind}`,
    get: async (sid) => (await backend.get(sid)) ?? importSession(sid),
    write: (sid, write) => backend.write(sid, write),
    touch: (sid, touch) => backend.touch(sid, touch),
    destroy: async (sid, deadline) => {
      await backend.destroy(sid, deadline)
      await legacy.remove(sid)
    },
    listUser: (user, now) => backend.listUser(user, now),
    destroyUser: (user, except, deadline) => backend.destroyUser(user, except, deadline),
    count: () => backend.count(),
    clear: () => backend.clear(),
    close: () => backend.close(),
  }
  // Sessions still only in the legacy store are not listed: they appear once imported.
  if (backend.ids) wrapped.ids = backend.ids.bind(backend)
  if (backend.evict) wrapped.evict = backend.evict.bind(backend)
  if (backend.subscribe) wrapped.subscribe = backend.subscribe.bind(backend)
  if (backend.isOutage) wrapped.isOutage = backend.isOutage.bind(backend)
  return wrapped
}

/** Options of {@link connectRedisSource}. */
export interface ConnectRedisSourceOptions {
  /** A connected node-redis (v5+) or ioredis client on the Redis connect-redis used. */
  client: RedisLike
  /**
   * connect-redis's key prefix.
   * @default 'sess:'
   */
  prefix?: string
}

/**
 * Sessions connect-redis wrote: a JSON string at `<prefix><sid>` with a TTL (its
 * default serializer). The expiry is the key's TTL.
 */
export function connectRedisSource(options: ConnectRedisSourceOptions): LegacySource {
  const prefix = options.prefix ?? 'sess:'
  const { send } = connect(options.client)
  return {
    kind: 'connect-redis',
    async read(sid) {
      const key = `${prefix}${sid}`
      const [value, ttl] = await Promise.all([send(key, ['GET', key]), send(key, ['PTTL', key])])
      if (typeof value !== 'string') return null
      const session = parseSession(value)
      if (!session) return null
      // -1: no TTL (connect-redis with `disableTTL`): fall back to the cookie's expiry.
      const pttl = Number(ttl)
      const expiresAt = pttl > 0 ? Date.now() + pttl : cookieExpiry(session)
      return { session, expiresAt }
    },
    async remove(sid) {
      await send(`${prefix}${sid}`, ['DEL', `${prefix}${sid}`])
    },
  }
}

/** The part of a node-postgres pool {@link connectPgSimpleSource} uses. */
export interface PgQueryLike {
  query(text: string, values?: unknown[]): Promise<{ rows: Array<Record<string, unknown>> }>
}

/** Options of {@link connectPgSimpleSource}. */
export interface ConnectPgSimpleSourceOptions {
  /** A node-postgres pool on the database connect-pg-simple used. */
  pool: PgQueryLike
  /**
   * connect-pg-simple's `tableName`.
   * @default 'session'
   */
  tableName?: string
  /** connect-pg-simple's `schemaName`, if it had one. */
  schemaName?: string
}

/** Sessions connect-pg-simple wrote: table `session (sid, sess json, expire timestamp)`. */
export function connectPgSimpleSource(options: ConnectPgSimpleSourceOptions): LegacySource {
  const quote = (name: string) => `"${name.replaceAll('"', '""')}"`
  const table =
    (options.schemaName ? `${quote(options.schemaName)}.` : '') +
    quote(options.tableName ?? 'session')
  return {
    kind: 'connect-pg-simple',
    async read(sid) {
      // The same clock connect-pg-simple compares with: the timestamp is read back in
      // the session time zone it was written in.
      const { rows } = await options.pool.query(
        `SELECT sess, (EXTRACT(EPOCH FROM expire::timestamptz) * 1000)::bigint AS expires_at
         FROM ${table} WHERE sid = $1 AND expire >= now()`,
        [sid],
      )
      const row = rows[0]
      if (!row) return null
      const session = typeof row.sess === 'string' ? parseSession(row.sess) : asSession(row.sess)
      return session ? { session, expiresAt: Number(row.expires_at) } : null
    },
    async remove(sid) {
      await options.pool.query(`DELETE FROM ${table} WHERE sid = $1`, [sid])
    },
  }
}

function parseSession(value: string): SessionData | null {
  try {
    return asSession(JSON.parse(value))
  } catch {
    return null
  }
}

function asSession(value: unknown): SessionData | null {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as SessionData)
    : null
}

/** The cookie's own expiry, or one day from now for a browser-session cookie. */
function cookieExpiry(session: SessionData): number {
  const cookie = session.cookie as { expires?: unknown } | undefined
  const expires = typeof cookie?.expires === 'string' ? Date.parse(cookie.expires) : Number.NaN
  return Number.isFinite(expires) ? expires : Date.now() + 86_400_000
}
