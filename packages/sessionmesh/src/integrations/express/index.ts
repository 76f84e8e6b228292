import { type CipherKey, KeyObject, randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { memoryBackend } from '../../backends/memory.js'
import { SessionEngine } from '../../core/engine/index.js'
import { nonNegative } from '../../core/engine/options.js'
import type { Loaded } from '../../core/engine/snapshot.js'
import { InvalidOptionError } from '../../core/errors.js'
import { NearCache, startNearCache } from '../../core/near-cache.js'
import { recorderFor } from '../../metrics.js'
import { engineOf, type SessionStore, storeOver } from '../../store.js'
import { readCookie, VerifiedCookies } from './cookie.js'
import { bareToken, headerConfig, tokenFrom } from './header.js'
import { Session, SessionCookie, type SessionCookieOptions } from './objects.js'
import type { Config, SessionMiddleware, SessionOptions, SessionRequest } from './options.js'
import { type ForeignStore, foreignSource, type Source } from './source.js'
import { RequestState } from './state.js'

export type { ForeignStore, SessionMiddleware, SessionOptions, SessionRequest }
export { Session, SessionCookie, type SessionCookieOptions }

/**
 * A drop-in for express-session: the same options, the same `req.session` and the
 * same cookies on the wire, doing the least work per request. It tracks what
 * changed instead of hashing the session, signs the cookie only when it sends
 * it, saves before the response starts (so a failed save becomes the response),
 * hands deltas straight to a sessionmesh backend, and touches lazily. Differences
 * from express-session are listed in docs/middleware.md.
 *
 * @example
 * import { session } from 'sessionmesh/express'
 * import { redisBackend } from 'sessionmesh/redis'
 * app.use(session({ backend: redisBackend({ client }), secret, resave: false, saveUninitialized: false }))
 */
export function session(options: SessionOptions & { store: SessionStore }): SessionMiddleware
export function session(
  options: SessionOptions & { store: ForeignStore },
): SessionMiddleware<ForeignStore>
export function session(options: SessionOptions & { store?: undefined }): SessionMiddleware
export function session(options: SessionOptions): SessionMiddleware<SessionStore | ForeignStore>
export function session(options: SessionOptions): SessionMiddleware<SessionStore | ForeignStore> {
  const fixedSecrets = secretsOf(options.secret)
  const genid = options.genid ?? defaultId
  if (typeof genid !== 'function') throw new InvalidOptionError('genid option must be a function')
  if (options.backend && options.store) {
    throw new InvalidOptionError('give either backend or store, not both')
  }
  const unset = options.unset ?? 'keep'
  if (unset !== 'keep' && unset !== 'destroy') {
    throw new InvalidOptionError(`unset option must be "destroy" or "keep", not ${String(unset)}`)
  }
  const name = options.name || options.key || 'connect.sid'
  const header = headerConfig(options.header)
  const rotateGrace = nonNegative('rotateGrace', options.rotateGrace, 5_000)

  let near: NearCache | undefined
  let source: Source
  let store: SessionStore | ForeignStore
  const foreign = options.store && !engineOf(options.store) ? options.store : undefined
  if (foreign) {
    if (options.nearCache) throw new InvalidOptionError('nearCache needs a sessionmesh backend')
    store = foreign
    source = foreignSource(foreign as ForeignStore)
  } else {
    let engine = options.store ? engineOf(options.store) : undefined
    if (engine && options.nearCache) {
      throw new InvalidOptionError('nearCache needs `backend`, not a SessionStore')
    }
    if (!engine) {
      if (options.nearCache) {
        near = new NearCache(options.nearCache === true ? {} : options.nearCache)
      }
      const { secret: _s, store: _st, nearCache: _n, cookie: _c, header: _h, ...rest } = options
      engine = new SessionEngine({
        ...rest,
        backend: options.backend ?? memoryBackend(),
        nearCache: near,
        recorder: recorderFor(options.metrics),
      })
    }
    store = (options.store as SessionStore | undefined) ?? storeOver(engine)
    source = engine
  }
  const backend = near ? (source as SessionEngine).backend : undefined
  const ready = near && backend ? startNearCache(near, backend) : Promise.resolve()

  // express-session's protocol for stores that lose their connection: while
  // disconnected, requests run without a session (and none is saved or sent).
  let connected = true
  const events = store as { on?: (event: string, listener: () => void) => unknown }
  if (typeof events.on === 'function') {
    events.on('disconnect', () => (connected = false))
    events.on('connect', () => (connected = true))
  }

  const cookieOption = options.cookie
  const fixedCookie = typeof cookieOption === 'function' ? undefined : { ...cookieOption }
  const cookieOf =
    typeof cookieOption === 'function'
      ? (req: IncomingMessage) => ({ ...cookieOption(req) })
      : () => fixedCookie as SessionCookieOptions
  const config: Config = {
    source,
    foreign: foreign !== undefined,
    name,
    versionName: `${name}.v`,
    cookieOf,
    genid,
    rolling: options.rolling ?? false,
    resave: options.resave ?? true,
    saveUninitialized: options.saveUninitialized ?? true,
    proxy: options.proxy,
    unsetDestroy: unset === 'destroy',
    near: near !== undefined,
    store,
    // A foreign store cannot hide the marker the grace window needs.
    rotateGrace: foreign ? 0 : rotateGrace,
    header,
  }
  const fixedSigner = fixedSecrets ? new VerifiedCookies(fixedSecrets) : undefined
  const fixedCookies = fixedSigner &&
    fixedCookie && { options: fixedCookie as SessionCookieOptions, signer: fixedSigner }
  const versionName = near ? config.versionName : undefined
  let lastSecret: { secret: unknown; signer: VerifiedCookies } | undefined
  // Without a `secret` option, cookie-parser's `req.secret`: one signer per secret seen last.
  const signerOf = (req: SessionRequest): VerifiedCookies | undefined => {
    if (fixedSigner) return fixedSigner
    const secret = (req as { secret?: unknown }).secret
    if (!isKey(secret)) return undefined
    if (lastSecret?.secret !== secret)
      lastSecret = { secret, signer: new VerifiedCookies([secret]) }
    return lastSecret.signer
  }

  const middleware = (req: IncomingMessage, res: ServerResponse, next: (e?: unknown) => void) => {
    const request = req as SessionRequest
    if (request.session) return next()
    if (!connected) return next()
    const cookieOptions = cookieOf(req)
    const path = cookieOptions.path || '/'
    if (path !== '/' && !pathOf(request).startsWith(path)) return next()
    const signer = signerOf(request)
    if (!signer) return next(new Error('secret option required for sessions'))
    request.sessionStore = store
    const cookieHeader = req.headers.cookie
    const token = header ? tokenFrom(req.headers, header) : undefined
    const tokenId = token === undefined ? undefined : signer.sid(token)
    const fromHeader =
      tokenId === undefined && cookieHeader
        ? signer.fromHeader(cookieHeader, name, versionName)
        : undefined
    const cookieId = tokenId ?? fromHeader?.sid ?? idFrom(request, name, signer)
    const cookies =
      fixedCookies && signer === fixedSigner && cookieOptions === fixedCookie
        ? fixedCookies
        : { options: cookieOptions, signer }
    const state = new RequestState(config, cookies, request, res, next, cookieId)
    if (cookieId === undefined) {
      state.generate()
      return next()
    }
    request.sessionID = cookieId
    const version = config.near
      ? (fromHeader?.version ?? readCookie(cookieHeader, config.versionName))
      : undefined
    // A near cache hit answers now: no promise, no turn of the event loop.
    const hit = version === undefined ? undefined : source.cached?.(cookieId, version, false)
    if (hit) {
      try {
        state.inflate(hit, version)
      } catch (error) {
        return next(error)
      }
      return next()
    }
    let degraded = false
    const onFailOpen = () => (degraded = true)
    source
      .load(cookieId, source.cached ? undefined : version, onFailOpen)
      .then(async (loaded: Loaded | null) => {
        // Gone: perhaps rotated away a moment ago, by a request this one overtook.
        const rotatedTo =
          loaded || degraded || config.rotateGrace === 0 ? undefined : signer.rotated(cookieId)
        const moved = rotatedTo ? await source.load(rotatedTo, undefined, onFailOpen) : null
        return { loaded, moved, rotatedTo }
      })
      .then(
        ({ loaded, moved, rotatedTo }) => {
          try {
            if (degraded) state.degrade()
            else if (loaded) state.inflate(loaded, version)
            else if (moved && rotatedTo && (moved.snapshot.rotatedUntil ?? 0) > Date.now()) {
              request.sessionID = rotatedTo
              state.forwarded(moved)
            } else state.generate()
          } catch (error) {
            return next(error)
          }
          next()
        },
        (error: unknown) => {
          if ((error as { code?: unknown } | null)?.code === 'ENOENT') {
            state.generate()
            next()
          } else next(error)
        },
      )
  }

  return Object.assign(middleware, {
    store,
    ready,
    nearCacheStats: () => near?.stats(),
    sessionId: (token: unknown) => {
      if (!fixedSigner || typeof token !== 'string') return undefined
      // The bare token; a `Bearer ` in front, as the `authorization` header has it, is allowed.
      const value = bareToken(token.replace(/^\s*bearer[ \t]+/i, ''))
      return value === undefined ? undefined : fixedSigner.sid(value)
    },
    rotatedId: (sid: string) =>
      fixedSigner && config.rotateGrace > 0 ? fixedSigner.rotated(sid) : undefined,
    close: async () => {
      await near?.close()
      // The lifecycle bus subscription and metrics of an engine this middleware made.
      const own = options.store === undefined ? engineOf(store) : undefined
      await own?.lifecycle.close()
      own?.dispose()
    },
  })
}

/** The secrets of the `secret` option, checked; `undefined` when it is not given (use `req.secret`). */
function secretsOf(secret: SessionOptions['secret']): CipherKey[] | undefined {
  if (secret === undefined) return undefined
  if (!Array.isArray(secret)) {
    if (!isKey(secret)) {
      throw new InvalidOptionError(
        `secret must be a non-empty string or an HMAC key (Buffer, KeyObject), not ${describe(secret)}`,
      )
    }
    return [secret as CipherKey]
  }
  const list = secret as readonly unknown[]
  if (list.length === 0) {
    throw new InvalidOptionError('secret option array must contain one or more strings')
  }
  list.forEach((entry, index) => {
    if (!isKey(entry)) {
      throw new InvalidOptionError(
        `secret[${index}] is ${describe(entry)}: every secret must be a non-empty string or an HMAC key${
          entry === undefined ? ' (is an environment variable unset?)' : ''
        }`,
      )
    }
  })
  return list as CipherKey[]
}

function isKey(value: unknown): value is CipherKey {
  if (typeof value === 'string') return value !== ''
  if (ArrayBuffer.isView(value)) return value.byteLength > 0
  return value instanceof KeyObject
}

function describe(value: unknown): string {
  if (value === '') return 'an empty string'
  if (value === undefined || value === null) return String(value)
  const type = typeof value
  return `${type === 'object' ? 'an' : 'a'} ${type}`
}

/**
 * The session id the request presents when its `Cookie` header has none: what
 * cookie-parser left in `req.signedCookies` and `req.cookies` (as express-session
 * reads them, for apps that rewrite the header).
 */
function idFrom(req: SessionRequest, name: string, signer: VerifiedCookies): string | undefined {
  const parsed = req as { signedCookies?: unknown; cookies?: unknown }
  const signed = (parsed.signedCookies as Record<string, unknown> | undefined)?.[name]
  if (typeof signed === 'string' && signed !== '') return signed
  const cookie = (parsed.cookies as Record<string, unknown> | undefined)?.[name]
  return typeof cookie === 'string' ? signer.sid(cookie) : undefined
}

function defaultId(): string {
  return randomBytes(24).toString('base64url')
}

function pathOf(req: SessionRequest): string {
  const url = req.originalUrl ?? req.url ?? '/'
  const query = url.indexOf('?')
  return (query === -1 ? url : url.slice(0, query)) || '/'
}
