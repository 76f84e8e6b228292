import type { CipherKey } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Backend } from '../../core/backend.js'
import type { NearCacheOptions, NearCacheStats } from '../../core/near-cache.js'
import type { SessionStore, SessionStoreOptions } from '../../store.js'
import type { VerifiedCookies } from './cookie.js'
import type { Session, SessionCookieOptions } from './objects.js'
import type { ForeignStore, Source } from './source.js'

/** Options of {@link session}: express-session's, plus the store's when given a `backend`. */
export interface SessionOptions extends Omit<SessionStoreOptions, 'backend'> {
  /**
   * Signs the cookie: a string or any HMAC key (a Buffer, a KeyObject). With an
   * array, the first signs and every one verifies (rotation); every entry must be
   * set, and an unset one (an environment variable that is not defined) is an
   * error naming it. Without a secret, `req.secret` (set by cookie-parser) is used,
   * and a request without either fails with "secret option required for sessions".
   * @default req.secret, per request
   */
  secret?: CipherKey | readonly (CipherKey | undefined)[] | undefined
  /**
   * Name of the session cookie.
   * @default 'connect.sid'
   */
  name?: string
  /**
   * express-session's old name for `name`, used when `name` is not given.
   * @deprecated use `name`
   */
  key?: string
  /**
   * The cookie's options, or a function that returns them for each new session
   * (and for the path check of every request).
   * @default { path: '/', httpOnly: true, secure: false, maxAge: null }
   */
  cookie?: SessionCookieOptions | ((req: IncomingMessage) => SessionCookieOptions)
  /**
   * Makes a new session id.
   * @default 24 random bytes in base64url (32 characters)
   */
  genid?: (req: IncomingMessage) => string
  /**
   * Send the cookie on every response, moving its expiry.
   * @default false
   */
  rolling?: boolean
  /**
   * Save a session at the end of a request even when it did not change. With a
   * sessionmesh backend an unchanged save is only a lazy touch.
   * @default true (as in express-session; `false` is recommended)
   */
  resave?: boolean
  /**
   * Store new sessions that the request did not change.
   * @default true (as in express-session; `false` is recommended)
   */
  saveUninitialized?: boolean
  /**
   * Trust `X-Forwarded-Proto` for `cookie.secure`: `true` trusts it, `false`
   * ignores it, unset follows Express's `trust proxy` setting (`req.secure`).
   */
  proxy?: boolean
  /**
   * What deleting `req.session` means: `keep` the stored session, or `destroy` it.
   * @default 'keep'
   */
  unset?: 'keep' | 'destroy'
  /** A sessionmesh backend to keep sessions in (deltas, lazy touch, user index…). */
  backend?: Backend
  /** Any express-session store instead of a backend; a `SessionStore` keeps all its guarantees. */
  store?: ForeignStore | SessionStore
  /**
   * Keep recently used sessions in this process (needs a `backend` with an event
   * bus, such as Redis). Adds a small version cookie (`<name>.v`) so that a client
   * reading on another node right after a write never gets the old copy.
   * @default false
   */
  nearCache?: boolean | NearCacheOptions
  /**
   * Also read the signed session id from this request header, and send it in the
   * response whenever the cookie is sent (for API and mobile clients without a
   * cookie jar). Any header name, in any case; `'authorization'` means
   * `Authorization: Bearer <token>`, in the request and in the response. The
   * token is the cookie's value unencoded (`s:<id>.<signature>`); a response
   * that ends the session sends the header empty. A value that does not verify
   * is no session, as a bad cookie is.
   * @default none: cookies only
   */
  header?: string
  /**
   * After `req.session.rotate()` of a logged-in session, how long (ms) a request
   * presenting the old id is still served the new session (it gets no cookie for
   * it), so that requests already on their way when the id changed are not
   * logged out. Writes on the old id are refused at once. 0 refuses the old id
   * at once.
   * @default 5000
   */
  rotateGrace?: number
}

/** The request as the middleware sees it. */
export interface SessionRequest extends IncomingMessage {
  session?: Session | undefined
  sessionID?: string
  sessionStore?: unknown
  originalUrl?: string
  secure?: boolean
}

/**
 * The middleware, with the store it uses for revocation and listing: a
 * `SessionStore` unless it was given a foreign `store`.
 */
export interface SessionMiddleware<S extends SessionStore | ForeignStore = SessionStore> {
  (req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void): void
  /** The store over the same backend: `listUserSessions`, `revokeSession`, `revokeUserSessions`. */
  readonly store: S
  /** Settles when the near cache is subscribed (at once without one). */
  readonly ready: Promise<void>
  /** The near cache's counters, if there is one. */
  nearCacheStats(): NearCacheStats | undefined
  /**
   * The session id in a token (the value of the `header` option, or the cookie's),
   * or `undefined` when this middleware did not sign it. With no `secret` option
   * (cookie-parser's `req.secret`) there is nothing to check it with: `undefined`.
   * The socket.io binding uses it for the handshake's `auth.session`.
   */
  sessionId(token: unknown): string | undefined
  /**
   * The id a rotation with a grace window moves session `sid` to (see
   * `rotateGrace`), so that the socket.io binding can move the sockets of a
   * rotated session instead of closing them; `undefined` without a `secret`
   * option or with `rotateGrace: 0`.
   */
  rotatedId(sid: string): string | undefined
  /** Unsubscribes the near cache (and the lifecycle events' bus, see the store's `session` event). The backend and its client stay open. */
  close(): Promise<void>
}

/** Everything a request needs from the middleware's configuration. */
export interface Config {
  source: Source
  /** An express-session store: its touch and destroy errors go to `next()` after the response. */
  foreign: boolean
  name: string
  versionName: string
  cookieOf: (req: IncomingMessage) => SessionCookieOptions
  genid: (req: IncomingMessage) => string
  rolling: boolean
  resave: boolean
  saveUninitialized: boolean
  proxy: boolean | undefined
  unsetDestroy: boolean
  near: boolean
  store: unknown
  /** See {@link SessionOptions.rotateGrace}. */
  rotateGrace: number
  /** The `header` option, lower-cased; `bearer` for `authorization`. */
  header: { name: string; bearer: boolean } | undefined
}

/** What one request signs and verifies its cookie with, and the options its cookie gets. */
export interface RequestCookies {
  options: SessionCookieOptions
  signer: VerifiedCookies
}
