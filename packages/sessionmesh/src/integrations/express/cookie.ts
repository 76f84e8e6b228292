import { type CipherKey, createHmac, timingSafeEqual } from 'node:crypto'
import type { ServerResponse } from 'node:http'
import { InvalidOptionError } from '../../core/errors.js'

/**
 * The session cookie as express-session puts it on the wire, so that either
 * middleware reads the other's cookies: `s:` + id + `.` + the HMAC-SHA256 of the id
 * in base64 without padding, URI-encoded.
 */

/** `value.signature`, the signature being HMAC-SHA256 in base64 without `=` padding. */
export function sign(value: string, secret: CipherKey): string {
  return `${value}.${mac(value, secret)}`
}

/** The value inside `signed` if one of `secrets` signed it, else `undefined`. Constant time per secret. */
export function unsign(signed: string, secrets: readonly CipherKey[]): string | undefined {
  const dot = signed.lastIndexOf('.')
  if (dot <= 0) return undefined
  const value = signed.slice(0, dot)
  const given = Buffer.from(signed.slice(dot + 1))
  for (const secret of secrets) {
    const expected = Buffer.from(mac(value, secret))
    if (expected.length === given.length && timingSafeEqual(expected, given)) return value
  }
  return undefined
}

function mac(value: string, secret: CipherKey): string {
  return createHmac('sha256', secret).update(value).digest('base64').replace(/=+$/, '')
}

/**
 * The value of cookie `name` in a `Cookie` header: the first one when the name
 * repeats, trimmed, unquoted and URI-decoded (left as is when it does not decode),
 * as the `cookie` package that express-session uses reads it.
 */
export function readCookie(header: string | undefined, name: string): string | undefined {
  // The cookie package express-session parses with cannot hold a cookie named
  // `__proto__` (it is an object's prototype there): read it as absent, as it does.
  if (!header || name === '__proto__') return undefined
  let start = 0
  const length = header.length
  while (start < length) {
    let end = header.indexOf(';', start)
    if (end === -1) end = length
    const eq = header.indexOf('=', start)
    if (eq !== -1 && eq < end && header.slice(start, eq).trim() === name) {
      let value = header.slice(eq + 1, end).trim()
      if (value.length > 1 && value.charCodeAt(0) === 34 && value.endsWith('"')) {
        value = value.slice(1, -1)
      }
      return value.includes('%') ? tryDecode(value) : value
    }
    start = end + 1
  }
  return undefined
}

function tryDecode(value: string): string {
  try {
    return decodeURIComponent(value)
  } catch {
    return value
  }
}

/** The attributes of a `Set-Cookie`, as express-session's cookie data holds them. */
export interface CookieAttributes {
  expires?: Date | null | undefined
  domain?: string | undefined
  path?: string | undefined
  httpOnly?: boolean | undefined
  secure?: boolean | 'auto' | undefined
  partitioned?: boolean | undefined
  priority?: 'low' | 'medium' | 'high' | undefined
  sameSite?: boolean | 'lax' | 'strict' | 'none' | undefined
}

const PRIORITY: Readonly<Record<string, string>> = { low: 'Low', medium: 'Medium', high: 'High' }
const SAME_SITE: Readonly<Record<string, string>> = { lax: 'Lax', strict: 'Strict', none: 'None' }

/**
 * A `Set-Cookie` value with the attributes in the order the `cookie` package
 * writes them, so that switching middleware changes nothing a client sees.
 * `sameSite` and `priority` are read in any case (`'None'`, `'HIGH'`); an unknown
 * value, or an `expires` that is not a valid date, throws with the `cookie`
 * package's message (`option sameSite is invalid`) rather than reaching the wire.
 */
export function serializeCookie(name: string, value: string, attributes: CookieAttributes): string {
  let out = `${name}=${encodeURIComponent(value)}`
  if (attributes.domain) out += `; Domain=${attributes.domain}`
  if (attributes.path) out += `; Path=${attributes.path}`
  const expires: unknown = attributes.expires
  if (expires) {
    if (!(expires instanceof Date) || Number.isNaN(expires.getTime())) {
      throw new InvalidOptionError('option expires is invalid')
    }
    out += `; Expires=${expires.toUTCString()}`
  }
  if (attributes.httpOnly) out += '; HttpOnly'
  if (attributes.secure) out += '; Secure'
  if (attributes.partitioned) out += '; Partitioned'
  if (attributes.priority) out += `; Priority=${named(PRIORITY, attributes.priority, 'priority')}`
  const sameSite = attributes.sameSite
  if (sameSite) {
    out += `; SameSite=${sameSite === true ? 'Strict' : named(SAME_SITE, sameSite, 'sameSite')}`
  }
  return out
}

function named(names: Readonly<Record<string, string>>, value: unknown, option: string): string {
  const name = typeof value === 'string' ? names[value.toLowerCase()] : undefined
  if (name === undefined) throw new InvalidOptionError(`option ${option} is invalid`)
  return name
}

/**
 * Remembers which signed cookie values verified, so a returning client costs a
 * map lookup instead of an HMAC. Only successes are kept, and at most `limit`:
 * garbage cookies cannot grow it.
 */
export class VerifiedCookies {
  readonly #secrets: readonly CipherKey[]
  readonly #limit: number
  #verified = new Map<string, string>()
  #signed = new Map<string, string>()
  #headers = new Map<string, HeaderIds>()

  constructor(secrets: readonly CipherKey[], limit = 10_000) {
    this.#secrets = secrets
    this.#limit = limit
  }

  /** The session id in a cookie value (`s:` + signed id), or `undefined` if it is not one we signed. */
  sid(raw: string): string | undefined {
    const known = this.#verified.get(raw)
    if (known !== undefined) return known
    if (!raw.startsWith('s:')) return undefined
    const sid = unsign(raw.slice(2), this.#secrets)
    if (sid === undefined) return undefined
    if (this.#verified.size >= this.#limit) this.#verified = new Map()
    this.#verified.set(raw, sid)
    return sid
  }

  /**
   * The session id in cookie `name` of a `Cookie` header, and the value of cookie
   * `versionName` (the near cache's), remembered per header: a returning client
   * sends the same header again, and then costs a map lookup instead of a parse,
   * a URI decode and a signature check. Only headers that carry a cookie we
   * signed are kept, and none longer than {@link MAX_REMEMBERED_HEADER}.
   */
  fromHeader(header: string, name: string, versionName: string | undefined): HeaderIds | undefined {
    const known = this.#headers.get(header)
    if (known !== undefined && known.name === name && known.versionName === versionName) {
      return known
    }
    const raw = readCookie(header, name)
    const sid = raw === undefined ? undefined : this.sid(raw)
    if (sid === undefined) return undefined
    const version = versionName === undefined ? undefined : readCookie(header, versionName)
    const ids: HeaderIds = { sid, version, name, versionName }
    if (header.length <= MAX_REMEMBERED_HEADER) {
      if (this.#headers.size >= this.#limit) this.#headers = new Map()
      this.#headers.set(header, ids)
    }
    return ids
  }

  /**
   * The id a rotation of `sid` moves the session to: a keyed hash of it, so that
   * every node finds the new session from the old id during the grace window,
   * and nobody without the secret can tell one from the other.
   */
  rotated(sid: string): string {
    return createHmac('sha256', this.#secrets[0] as CipherKey)
      .update(`sessionmesh:rotate:${sid}`)
      .digest('base64url')
      .slice(0, 32)
  }

  /** The cookie value for `sid`, signed with the first secret. */
  value(sid: string): string {
    const known = this.#signed.get(sid)
    if (known !== undefined) return known
    const value = `s:${sign(sid, this.#secrets[0] as CipherKey)}`
    if (this.#signed.size >= this.#limit) this.#signed = new Map()
    this.#signed.set(sid, value)
    return value
  }
}

/** What {@link VerifiedCookies.fromHeader} read from a `Cookie` header. */
export interface HeaderIds {
  readonly sid: string
  readonly version: string | undefined
  readonly name: string
  readonly versionName: string | undefined
}

/** Longer `Cookie` headers are read every time: at most 10,000 × 1 KiB is remembered. */
const MAX_REMEMBERED_HEADER = 1024

/** Adds `cookies` to the response's `Set-Cookie`, after any the application set. */
export function appendSetCookie(res: ServerResponse, cookies: string[]): void {
  const previous = res.getHeader('set-cookie')
  if (previous === undefined) res.setHeader('set-cookie', cookies)
  else if (Array.isArray(previous)) res.setHeader('set-cookie', [...previous, ...cookies])
  else res.setHeader('set-cookie', [String(previous), ...cookies])
}

/** The session cookie's options that {@link expiredCookie} repeats (a `SessionCookieOptions`). */
interface DroppedCookie {
  domain?: string
  path?: string
  httpOnly?: boolean
  secure?: boolean | 'auto'
  sameSite?: boolean | 'lax' | 'strict' | 'none' | 'auto'
  partitioned?: boolean
}

/** A `Set-Cookie` that makes the browser drop cookie `name`. */
export function expiredCookie(name: string, cookie: DroppedCookie): string {
  return serializeCookie(name, '', {
    domain: cookie.domain,
    path: cookie.path ?? '/',
    expires: new Date(0),
    httpOnly: cookie.httpOnly ?? true,
    secure: cookie.secure === true,
    sameSite: cookie.sameSite === 'auto' ? undefined : cookie.sameSite,
    partitioned: cookie.partitioned,
  })
}
