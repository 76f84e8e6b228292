import { STORED_FORM } from '../../core/codec.js'
import { type CookieAttributes, serializeCookie } from './cookie.js'

/** Options of the session cookie, as express-session takes them. */
export interface SessionCookieOptions {
  /**
   * Lifetime in ms from the last time the session was saved or touched; `null` for a
   * browser-session cookie (no `Expires`).
   * @default null
   */
  maxAge?: number | null
  /** An absolute expiry; prefer `maxAge`. */
  expires?: Date | null
  /** @default true */
  httpOnly?: boolean
  /** @default '/' */
  path?: string
  domain?: string
  /**
   * `'auto'`: secure exactly when the request is (see the `proxy` option).
   * @default false
   */
  secure?: boolean | 'auto'
  /**
   * Read in any case. `'auto'`: `none` when the request is secure, else `lax`
   * (for a cookie that must also work cross-site over HTTPS).
   */
  sameSite?: boolean | 'lax' | 'strict' | 'none' | 'auto'
  partitioned?: boolean
  priority?: 'low' | 'medium' | 'high'
}

/** The JSON form of a cookie, as express-session stores it (`expires` as an ISO string). */
export interface CookieData {
  originalMaxAge: number | null
  partitioned?: boolean | undefined
  priority?: 'low' | 'medium' | 'high' | undefined
  expires: Date | null
  secure?: boolean | 'auto' | undefined
  httpOnly?: boolean | undefined
  domain?: string | undefined
  path?: string | undefined
  sameSite?: boolean | 'lax' | 'strict' | 'none' | undefined
}

/**
 * `req.session.cookie`: the same fields and accessors as express-session's Cookie,
 * so that code setting `maxAge` or reading `expires` keeps working.
 */
export class SessionCookie {
  path = '/'
  httpOnly = true
  secure: boolean | 'auto' | undefined
  domain: string | undefined
  sameSite: boolean | 'lax' | 'strict' | 'none' | undefined
  partitioned: boolean | undefined
  priority: 'low' | 'medium' | 'high' | undefined
  /** The `maxAge` the cookie was given, in ms; what each touch extends the session by. */
  originalMaxAge: number | null = null
  #expires: Date | null = null
  /** The stored JSON this cookie was loaded from, and its decoded attributes: see {@link STORED_FORM}. */
  #storedJSON: string | undefined
  #stored: Readonly<Record<string, unknown>> | undefined

  constructor(options: SessionCookieOptions | Record<string, unknown> = {}) {
    const o = options as SessionCookieOptions
    this.#assign(o)
    if (o.expires !== undefined) this.expires = o.expires
    if (o.maxAge !== undefined) this.maxAge = o.maxAge
    if (o.maxAge === undefined && o.expires === undefined) this.originalMaxAge = null
  }

  /** The attributes besides the expiry, from options or a stored cookie. */
  #assign(o: SessionCookieOptions): void {
    if (o.path !== undefined) this.path = o.path
    if (o.httpOnly !== undefined) this.httpOnly = o.httpOnly
    this.secure = o.secure
    this.domain = o.domain
    // 'auto' depends on the request: the middleware resolves it.
    this.sameSite = o.sameSite === 'auto' ? undefined : o.sameSite
    this.partitioned = o.partitioned
    this.priority = o.priority
  }

  /** When the browser drops the cookie; `null` for a browser-session cookie. */
  get expires(): Date | null {
    return this.#expires
  }

  set expires(date: Date | null) {
    this.#expires = date
    this.originalMaxAge = this.maxAge
  }

  /** Milliseconds left; setting it moves `expires` and `originalMaxAge`. */
  get maxAge(): number | null {
    return this.#expires ? this.#expires.getTime() - Date.now() : null
  }

  set maxAge(ms: number | null) {
    if (ms !== null && typeof ms !== 'number') throw new TypeError('maxAge must be a number')
    // `originalMaxAge` is `ms` itself. Read back from `expires` (as express-session
    // does), it comes out 1 ms short whenever the clock ticks in between: a change
    // to the stored cookie, and so a write, on a request that changed nothing.
    this.#expires = ms === null ? null : new Date(Date.now() + ms)
    this.originalMaxAge = ms
  }

  /** The attributes, in express-session's order (which is also the stored JSON's). */
  get data(): CookieData {
    return {
      originalMaxAge: this.originalMaxAge,
      partitioned: this.partitioned,
      priority: this.priority,
      expires: this.#expires,
      secure: this.secure,
      httpOnly: this.httpOnly,
      domain: this.domain,
      path: this.path,
      sameSite: this.sameSite,
    }
  }

  /** A `Set-Cookie` value for `name=value` with these attributes. */
  serialize(name: string, value: string): string {
    return serializeCookie(name, value, this.data as CookieAttributes)
  }

  toJSON(): CookieData {
    return this.data
  }

  /**
   * The stored JSON, when this cookie still says what it said when loaded (its
   * `expires` aside, which is stored as the session's expiry): saving an
   * unchanged session then costs no encoding. `undefined`: encode it.
   */
  [STORED_FORM](): string | undefined {
    const stored = this.#stored
    if (stored === undefined || this.originalMaxAge !== stored.originalMaxAge) return undefined
    for (const name of ATTRIBUTES) if (this[name] !== stored[name]) return undefined
    return this.#storedJSON
  }

  /**
   * A cookie from its decoded stored form (`expires` as a string), keeping the
   * stored `originalMaxAge`. `json` is the stored JSON it was decoded from. A
   * cookie with a maxAge expires with its session: at `sessionExpiresAt` (epoch
   * ms), when given, instead of the stored `expires`.
   */
  static from(
    stored: Record<string, unknown>,
    json?: string,
    sessionExpiresAt?: number,
  ): SessionCookie {
    const cookie = new SessionCookie(NO_OPTIONS)
    cookie.#assign(stored as SessionCookieOptions)
    const originalMaxAge = stored.originalMaxAge
    const hasMaxAge = typeof originalMaxAge === 'number'
    cookie.originalMaxAge = hasMaxAge ? originalMaxAge : null
    const expires = (hasMaxAge ? sessionExpiresAt : undefined) ?? stored.expires
    if (typeof expires === 'string' || typeof expires === 'number') {
      cookie.#expires = new Date(expires)
    }
    // Only a cookie whose stored JSON holds nothing this class drops, and no
    // absolute expiry, can stand for its stored form unchanged.
    if (json !== undefined && hasMaxAge) {
      let known = true
      for (const key in stored) if (!STORED_KEYS.has(key)) known = false
      if (known) {
        cookie.#stored = stored
        cookie.#storedJSON = json
      }
    }
    return cookie
  }
}

const NO_OPTIONS: SessionCookieOptions = {}
/** What the stored JSON holds besides `originalMaxAge` and `expires`. */
const ATTRIBUTES = [
  'partitioned',
  'priority',
  'secure',
  'httpOnly',
  'domain',
  'path',
  'sameSite',
] as const
const STORED_KEYS = new Set<string>(['originalMaxAge', 'expires', ...ATTRIBUTES])

/** What a session's methods act through: the request that holds it. */
export interface SessionHost {
  save(session: Session): Promise<void>
  reload(session: Session): Promise<void>
  regenerate(session: Session): Promise<void>
  rotate(session: Session): Promise<void>
  destroy(session: Session): Promise<void>
  /** A save without a callback failed: the request answers with that error if it still can. */
  unreported(error: unknown): void
}

type Done = (error?: unknown) => void

/**
 * `req.session`: the application's data as own properties, plus express-session's
 * methods. `id` and `req` are not enumerable, so they are never stored.
 */
export class Session {
  [key: string]: unknown
  declare cookie: SessionCookie
  readonly #host: SessionHost
  readonly #id: string
  readonly #req: object

  constructor(host: SessionHost, req: object, id: string, cookie: SessionCookie) {
    this.#host = host
    this.#id = id
    this.#req = req
    this.cookie = cookie
  }

  /** The session id; read-only (a getter, so never stored nor enumerated). */
  get id(): string {
    return this.#id
  }

  /** The request this session belongs to. */
  get req(): object {
    return this.#req
  }

  /** Resets the cookie's expiry to a full `originalMaxAge` from now. */
  touch(): this {
    return this.resetMaxAge()
  }

  /** Resets the cookie's expiry to a full `originalMaxAge` from now. */
  resetMaxAge(): this {
    this.cookie.maxAge = this.cookie.originalMaxAge
    return this
  }

  /**
   * Saves now. Without a callback a failure is not lost: the request answers
   * with it, if it has not answered yet.
   */
  save(callback?: Done): this {
    this.#run(this.#host.save(this), callback)
    return this
  }

  /** Replaces `req.session` with the stored version. */
  reload(callback: Done): this {
    this.#run(this.#host.reload(this), callback)
    return this
  }

  /** Destroys this session and puts a new, empty one with a new id in `req.session`. */
  regenerate(callback: Done): this {
    this.#run(this.#host.regenerate(this), callback)
    return this
  }

  /**
   * Moves this session to a new id, keeping its data: the new session is written
   * first, then the old id is destroyed (a tombstone), and the response carries
   * the new cookie. `req.session` is then the session under the new id. See
   * docs/middleware.md ("Rotating the id") for the grace window and passport.
   */
  rotate(callback?: Done): this {
    this.#run(this.#host.rotate(this), callback)
    return this
  }

  /** Destroys this session everywhere and removes `req.session`. */
  destroy(callback?: Done): this {
    this.#run(this.#host.destroy(this), callback)
    return this
  }

  #run(work: Promise<void>, callback: Done | undefined): void {
    work.then(
      () => callback?.(),
      (error: unknown) => (callback ? callback(error) : this.#host.unreported(error)),
    )
  }
}
