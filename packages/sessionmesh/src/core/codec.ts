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
  for (const key of Object.keys(plain as object)) {
    const value = (plain as SessionData)[key]
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
    const encoded =
      key === 'cookie' ? (storedForm(value) ?? encodeCookie(value)) : stringify(key, value)
    if (encoded !== undefined) fields[key] = encoded
  }
  return fields
}

/** Rebuilds the session object from its fields; the cookie gets its `expires` back from the meta. */
export function decodeSession(stored: StoredSession): SessionData {
  const session = decodeFields(stored)
  const cookie = session.cookie
  if (isObject(cookie) && typeof cookie.originalMaxAge === 'number') {
    cookie.expires = isoString(stored.meta.expiresAt)
  }
  return session
}

// The last expiry formatted: a hot session's is the same until its next write or
// touch, and toISOString costs more than the rest of a decode.
let lastExpiry = Number.NaN
let lastIso = ''

function isoString(at: number): string {
  if (at !== lastExpiry) {
    lastIso = new Date(at).toISOString()
    lastExpiry = at
  }
  return lastIso
}

/**
 * {@link decodeSession} without the cookie's `expires`, for a reader that takes
 * it from `meta.expiresAt` itself (an ISO string costs more than the rest).
 */
export function decodeFields(stored: StoredSession): SessionData {
  const session: SessionData = {}
  const fields = stored.fields
  for (const key in fields) {
    let value: unknown
    try {
      value =
        key === 'cookie' ? decodeCookie(fields[key] as string) : JSON.parse(fields[key] as string)
    } catch (cause) {
      throw new MalformedRecordError(`field ${JSON.stringify(key)} is not JSON`, { cause })
    }
    // defineProperty, not assignment, for `__proto__`: it is data like any other
    // key, and must not replace the session object's prototype.
    if (key === '__proto__') {
      Object.defineProperty(session, key, {
        value,
        enumerable: true,
        writable: true,
        configurable: true,
      })
    } else session[key] = value
  }
  return session
}

/**
 * A cookie may say how it is stored: a method under this key returning its stored
 * JSON when nothing in it changed since it was loaded, so that saving an unchanged
 * session does not encode its cookie again (`sessionmesh/express`'s cookie has one).
 */
export const STORED_FORM: unique symbol = Symbol('sessionmesh.storedForm')

function storedForm(cookie: unknown): string | undefined {
  const method = isObject(cookie) ? (cookie as { [STORED_FORM]?: unknown })[STORED_FORM] : undefined
  return typeof method === 'function' ? (method.call(cookie) as string | undefined) : undefined
}

// Decoded cookies by their JSON. The sessions of an app nearly all store the same
// cookie (its options), so most decodes copy a parsed one instead of parsing it.
const decodedCookies = new Map<string, Readonly<Record<string, unknown>>>()
const DECODED_COOKIES = 256

function decodeCookie(json: string): unknown {
  const known = decodedCookies.get(json)
  if (known) return { ...known }
  const value: unknown = JSON.parse(json)
  // Only a flat object: a copy of it shares nothing with the next request's.
  if (!isObject(value) || Array.isArray(value) || json.length > 512) return value
  for (const key in value) if (isObject(value[key])) return value
  if (decodedCookies.size >= DECODED_COOKIES) decodedCookies.clear()
  decodedCookies.set(json, value)
  return { ...value }
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
