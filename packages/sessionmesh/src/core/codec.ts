import { MalformedRecordError, type StoredSession } from './backend.js'
import { ErrorCode, SessionMeshError } from './errors.js'

/**
 * A session as the frameworks hand it over: an object whose top-level keys are
 * the unit of change. Declare your keys on it, as with express-session's
 * `SessionData`, to type `userId` and the socket.io helpers:
 *
 * @example
 * declare module 'sessionmesh' {
 *   interface SessionData { account?: { id: string } }
 * }
 */
export interface SessionData {
  [key: string]: unknown
}

/**
 * Encodes each top-level key of a session on its own, so that a save can compare
 * key by key with what was loaded and write only what changed.
 *
 * The cookie's `expires` is left out when the cookie has a `maxAge`:
 * express-session moves it on every request, and the backend's `expiresAt` already
 * says when the session ends; storing it would turn every request into a write. An
 * absolute `expires` (no `maxAge`) does not move, and is kept.
 */
export function encodeSession(session: object): Record<string, string> {
  const plain = hasToJSON(session) ? session.toJSON() : session
  const fields: Record<string, string> = {}
  for (const [key, value] of Object.entries(plain as SessionData)) {
    if (key === '__proto__') {
      // Only an own key made by JSON.parse or a spread gets here. Records and deltas
      // are plain objects all the way to the backends, where assigning this key
      // would silently drop it: refuse it instead of losing it.
      throw new SessionMeshError(
        ErrorCode.SESSION_NOT_SERIALIZABLE,
        'session key "__proto__" cannot be stored; the stored version was kept',
        500,
      )
    }
    const encoded = key === 'cookie' ? encodeCookie(value) : stringify(key, value)
    if (encoded !== undefined) fields[key] = encoded
  }
  return fields
}

/** Rebuilds the session object from its fields; the cookie gets its `expires` back from the meta. */
export function decodeSession(stored: StoredSession): SessionData {
  const session: SessionData = {}
  for (const [key, value] of Object.entries(stored.fields)) {
    try {
      // defineProperty, not assignment: a key named `__proto__` is data like any
      // other, and must not replace the session object's prototype.
      Object.defineProperty(session, key, {
        value: JSON.parse(value),
        enumerable: true,
        writable: true,
        configurable: true,
      })
    } catch (cause) {
      throw new MalformedRecordError(`field ${JSON.stringify(key)} is not JSON`, { cause })
    }
  }
  const cookie = session.cookie
  if (isObject(cookie) && typeof cookie.originalMaxAge === 'number') {
    cookie.expires = new Date(stored.meta.expiresAt).toISOString()
  }
  return session
}

/** Bytes the encoded session takes: what `maxBytes` limits. */
export function encodedSize(fields: Record<string, string>): number {
  let bytes = 0
  for (const [key, value] of Object.entries(fields)) {
    bytes += Buffer.byteLength(key) + Buffer.byteLength(value)
  }
  return bytes
}

function encodeCookie(cookie: unknown): string | undefined {
  if (!isObject(cookie)) return stringify('cookie', cookie)
  const plain = hasToJSON(cookie) ? cookie.toJSON() : cookie
  if (!isObject(plain)) return stringify('cookie', plain)
  if (typeof plain.originalMaxAge !== 'number' && plain.expires != null) {
    return stringify('cookie', plain)
  }
  const { expires: _expires, ...rest } = plain
  return stringify('cookie', rest)
}

function stringify(key: string, value: unknown): string | undefined {
  try {
    return JSON.stringify(value)
  } catch (cause) {
    throw new SessionMeshError(
      ErrorCode.SESSION_NOT_SERIALIZABLE,
      `session key ${JSON.stringify(key)} cannot be stored as JSON; the stored version was kept`,
      500,
      { cause },
    )
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null
}

function hasToJSON(value: object): value is { toJSON(): unknown } {
  return typeof (value as { toJSON?: unknown }).toJSON === 'function'
}
