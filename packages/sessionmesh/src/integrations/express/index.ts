import { randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { memoryBackend } from '../../backends/memory.js'
import { type Loaded, SessionEngine } from '../../core/engine.js'
import { InvalidOptionError } from '../../core/errors.js'
import { NearCache, startNearCache } from '../../core/near-cache.js'
import { engineOf, type SessionStore, storeOver } from '../../store.js'
import { readCookie, VerifiedCookies } from './cookie.js'
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
export function session(options: SessionOptions): SessionMiddleware {
  const secrets = typeof options.secret === 'string' ? [options.secret] : [...options.secret]
  if (secrets.length === 0 || secrets.some((s) => typeof s !== 'string' || s === '')) {
    throw new InvalidOptionError('secret must be a non-empty string or array of strings')
  }
  if (options.backend && options.store) {
    throw new InvalidOptionError('give either backend or store, not both')
  }
  const unset = options.unset ?? 'keep'
  if (unset !== 'keep' && unset !== 'destroy') {
    throw new InvalidOptionError(`unset must be 'keep' or 'destroy', not ${String(unset)}`)
  }
  const name = options.name ?? 'connect.sid'

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
      const { secret: _s, store: _st, nearCache: _n, ...rest } = options
      engine = new SessionEngine({
        ...rest,
        backend: options.backend ?? memoryBackend(),
        nearCache: near,
      })
    }
    store = (options.store as SessionStore | undefined) ?? storeOver(engine)
    source = engine
  }
  const backend = near ? (source as SessionEngine).backend : undefined
  const ready = near && backend ? startNearCache(near, backend) : Promise.resolve()

  const config: Config = {
    source,
    name,
    versionName: `${name}.v`,
    cookie: { ...options.cookie },
    cookies: new VerifiedCookies(secrets),
    genid: options.genid ?? defaultId,
    rolling: options.rolling ?? false,
    resave: options.resave ?? true,
    saveUninitialized: options.saveUninitialized ?? true,
    proxy: options.proxy,
    unsetDestroy: unset === 'destroy',
    near: near !== undefined,
    store,
  }
  const cookiePath = config.cookie.path ?? '/'

  const middleware = (req: IncomingMessage, res: ServerResponse, next: (e?: unknown) => void) => {
    const request = req as SessionRequest
    if (request.session) return next()
    if (cookiePath !== '/' && !pathOf(request).startsWith(cookiePath)) return next()
    request.sessionStore = store
    const header = req.headers.cookie
    const raw = readCookie(header, name)
    const cookieId = raw === undefined ? undefined : config.cookies.sid(raw)
    const state = new RequestState(config, request, res, next, cookieId)
    if (cookieId === undefined) {
      state.generate()
      return next()
    }
    request.sessionID = cookieId
    const version = config.near ? readCookie(header, config.versionName) : undefined
    let degraded = false
    source
      .load(cookieId, version, () => (degraded = true))
      .then(
        (loaded: Loaded | null) => {
          if (degraded) state.degrade()
          else if (loaded) state.inflate(loaded, version)
          else state.generate()
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
    close: async () => {
      await near?.close()
    },
  })
}

function defaultId(): string {
  return randomBytes(24).toString('base64url')
}

function pathOf(req: SessionRequest): string {
  const url = req.originalUrl ?? req.url ?? '/'
  const query = url.indexOf('?')
  return query === -1 ? url : url.slice(0, query)
}
