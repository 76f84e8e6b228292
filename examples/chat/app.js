// The sessionmesh demo app: an Express 5 app with express-session on the
// sessionmesh store, passport local login, and a small JSON API over the session.
// createApp() builds it without listening, so that the socket.io chat and the web
// page can be added on top of the same session middleware.

import { createHash, timingSafeEqual } from 'node:crypto'
import { join } from 'node:path'
import express from 'express'
import session from 'express-session'
import passport from 'passport'
import { Strategy as LocalStrategy } from 'passport-local'
import { session as sessionmeshSession } from 'sessionmesh/express'

/** The name of the session cookie. Letters only, so that nginx can hash it ($cookie_sessionmesh). */
export const COOKIE_NAME = 'sessionmesh'

/** Top-level session keys the kv API writes start with this, so they never hit `cookie` or `passport`. */
const KV_PREFIX = 'kv:'
const KEY_PATTERN = /^[\w.-]{1,64}$/
/** The web page: plain HTML, CSS and ES modules, no build step. */
const PUBLIC_DIR = join(import.meta.dirname, 'public')
/**
 * The page builds its DOM with textContent only and loads nothing from elsewhere;
 * the policy makes a slip there (an injected script or handler) inert.
 */
const PAGE_POLICY =
  "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; " +
  "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

/**
 * The demo accounts: alice, bob and carol, all with `password`.
 *
 * @param {string} password
 * @returns {Map<string, { id: string, name: string, password: string }>}
 */
export function demoUsers(password = 'sessionmesh') {
  return new Map(
    ['alice', 'bob', 'carol'].map((id) => [
      id,
      { id, name: id[0].toUpperCase() + id.slice(1), password },
    ]),
  )
}

/**
 * A public handle for a session: the API never shows other sessions' ids, which
 * are bearer credentials, only a digest that is enough to pick one to revoke.
 *
 * @param {string} sid
 */
export function sessionHandle(sid) {
  return createHash('sha256').update(sid).digest('base64url').slice(0, 22)
}

/**
 * Builds the demo app.
 *
 * @param {object} options
 * @param {import('sessionmesh').SessionStore} options.store the shared session store
 * @param {string} options.nodeId this process's name, sent as `X-Served-By`
 * @param {string} options.secret signs the session cookie; the same on every node
 * @param {import('pino').Logger} options.logger
 * @param {ReturnType<typeof demoUsers>} [options.users]
 * @param {boolean | string | number} [options.trustProxy] Express's `trust proxy`;
 *   default `'loopback'`: nginx runs on this host, and only its X-Forwarded-* count.
 * @param {() => boolean} [options.draining] true once the node is shutting down
 * @param {number} [options.sessionMaxAge] idle lifetime of a session in ms; default one week
 * @param {string} [options.sessionHeader] also accept the session from this request header
 *   (`sessionmesh/express`'s `header` option, e.g. `x-session-id` or `authorization`), for
 *   clients without cookies; the middleware is then sessionmesh's instead of express-session
 */
export function createApp(options) {
  const { store, nodeId, logger } = options
  const users = options.users ?? demoUsers()
  const draining = options.draining ?? (() => false)
  const app = express()
  app.disable('x-powered-by')
  // nginx connects from loopback and appends the client to X-Forwarded-For: trusting
  // loopback only makes req.ip the client and req.secure follow X-Forwarded-Proto,
  // while a client cannot spoof either by sending the headers itself.
  app.set('trust proxy', options.trustProxy ?? 'loopback')

  const auth = new passport.Passport()
  auth.use(
    new LocalStrategy((username, password, done) => {
      const user = users.get(username)
      done(null, user && samePassword(password, user.password) ? user : false)
    }),
  )
  auth.serializeUser((user, done) => done(null, user.id))
  auth.deserializeUser((id, done) => {
    const user = users.get(String(id))
    // An unknown id (the account was removed) is an anonymous request, not an error.
    done(null, user ?? false)
  })

  const sessionOptions = {
    name: COOKIE_NAME,
    store,
    secret: options.secret,
    resave: false,
    saveUninitialized: false,
    cookie: {
      httpOnly: true,
      sameSite: 'lax',
      secure: 'auto',
      maxAge: options.sessionMaxAge ?? 7 * 24 * 3_600_000,
    },
  }
  // Header sessions are a sessionmesh/express option; the same cookies either way.
  const sessionMiddleware = options.sessionHeader
    ? sessionmeshSession({ ...sessionOptions, header: options.sessionHeader })
    : session(sessionOptions)

  app.use((_req, res, next) => {
    res.setHeader('X-Served-By', nodeId)
    // A draining node asks nginx to drop the connection after this response, so
    // that nginx never reuses a connection the node is about to close.
    if (draining()) res.setHeader('Connection', 'close')
    next()
  })
  app.get('/healthz', (_req, res) => {
    res.json({ ok: true, node: nodeId })
  })
  // Served without the session middleware: the page must load while the store is
  // down, so that it can say so.
  app.use(
    express.static(PUBLIC_DIR, {
      setHeaders(res) {
        res.setHeader('Content-Security-Policy', PAGE_POLICY)
        res.setHeader('Cache-Control', 'no-cache')
      },
    }),
  )
  // Before the session is even loaded: a state-changing request from another
  // origin is refused, so that no other site (nor a page on another port of this
  // host) can log a visitor in, out, or revoke their sessions with their cookie.
  app.use('/api', sameOriginOnly(logger))
  app.use('/api', express.json({ strict: false, limit: '16kb' }), sessionMiddleware, auth.session())

  app.post('/api/login', (req, res, next) => {
    // passport-local also reads the query string; credentials there end up in
    // access logs and make a cross-site form login possible. The JSON body only.
    const { username, password } = req.is('application/json') ? (req.body ?? {}) : {}
    if (typeof username !== 'string' || typeof password !== 'string' || hasCredentials(req.query)) {
      return res
        .status(400)
        .json({ error: 'send {"username", "password"} as a JSON body, and nothing in the URL' })
    }
    auth.authenticate('local', (error, user) => {
      if (error) return next(error)
      if (!user) return res.status(401).json({ error: 'wrong username or password' })
      // passport regenerates the session here: a fresh id after login, no fixation.
      req.login(user, (loginError) => {
        if (loginError) return next(loginError)
        logger.info({ user: user.id }, 'login')
        res.json({ user: publicUser(user) })
      })
    })(req, res, next)
  })

  app.post('/api/logout', (req, res, next) => {
    if (!req.session) return res.sendStatus(204)
    req.session.destroy((error) => {
      if (error) return next(error)
      res.clearCookie(COOKIE_NAME)
      res.sendStatus(204)
    })
  })

  const api = express.Router()
  api.use((req, res, next) => {
    if (!req.user) return res.status(401).json({ error: 'not logged in' })
    next()
  })
  api.get('/me', (req, res) => {
    res.json({ user: publicUser(req.user), node: nodeId })
  })
  api.get('/kv', (req, res) => {
    const pairs = {}
    for (const [key, value] of Object.entries(req.session)) {
      if (key.startsWith(KV_PREFIX)) pairs[key.slice(KV_PREFIX.length)] = value
    }
    res.json(pairs)
  })
  api.put('/kv/:key', (req, res, next) => {
    const { key } = req.params
    if (!KEY_PATTERN.test(key))
      return res.status(400).json({ error: 'key must match [\\w.-]{1,64}' })
    if (req.body === undefined) return res.status(400).json({ error: 'the body must be JSON' })
    req.session[KV_PREFIX + key] = req.body
    // Saved before answering, so that the next request, on any node, reads it.
    req.session.save((error) => (error ? next(error) : res.json({ key, value: req.body })))
  })
  api.get('/sessions', async (req, res) => {
    const sessions = await store.listUserSessions(req.user.id)
    res.json({
      sessions: sessions.map(({ id, ...rest }) => ({
        id: sessionHandle(id),
        current: id === req.sessionID,
        ...rest,
      })),
    })
  })
  api.delete('/sessions/:id', async (req, res) => {
    const sessions = await store.listUserSessions(req.user.id)
    const target = sessions.find((entry) => sessionHandle(entry.id) === req.params.id)
    if (!target) return res.status(404).json({ error: 'no such session' })
    await store.revokeSession(target.id)
    logger.info({ user: req.user.id, current: target.id === req.sessionID }, 'session revoked')
    res.sendStatus(204)
  })
  api.post('/sessions/revoke-others', async (req, res) => {
    const revoked = await store.revokeUserSessions(req.user.id, { except: req.sessionID })
    logger.info({ user: req.user.id, revoked: revoked.length }, 'other sessions revoked')
    res.json({ revoked: revoked.length })
  })
  app.use('/api', api)

  app.use('/api', (_req, res) => {
    res.status(404).json({ error: 'not found' })
  })
  app.use((error, req, res, _next) => {
    if (error?.code === 'SESSIONMESH_STORE_UNAVAILABLE') {
      logger.warn({ path: req.path, reason: error.message }, 'session store unavailable')
      return res.status(503).json({ error: 'store unavailable', code: error.code })
    }
    const status = Number.isInteger(error?.status) && error.status < 500 ? error.status : 500
    if (status >= 500) logger.error({ err: error, path: req.path }, 'request failed')
    res
      .status(status)
      .json({ error: status >= 500 ? 'internal error' : error.message, code: error?.code })
  })

  return { app, sessionMiddleware, passport: auth }
}

/** Methods that change nothing, which any origin may send. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

/**
 * Refuses (403) a state-changing request a browser sent from another origin. A
 * browser says where a request comes from with `Sec-Fetch-Site` (every current
 * one); only `same-origin` passes. Without it, an `Origin` header must name this
 * host; with neither, the client is not a browser page (curl, a test), which
 * cannot ride on a visitor's cookie, and passes.
 *
 * @param {import('pino').Logger} logger
 */
export function sameOriginOnly(logger) {
  return (req, res, next) => {
    if (SAFE_METHODS.has(req.method)) return next()
    const site = req.get('sec-fetch-site')
    const origin = req.get('origin')
    if (
      site !== undefined ? site === 'same-origin' : origin === undefined || sameHost(req, origin)
    ) {
      return next()
    }
    logger.warn({ path: req.path, site, origin }, 'cross-origin request refused')
    res.status(403).json({ error: 'cross-origin request refused' })
  }
}

/** True when `origin` names the host the request was sent to (nginx passes the Host on). */
function sameHost(req, origin) {
  let url
  try {
    url = new URL(origin)
  } catch {
    return false
  }
  const host = req.get('host') ?? ''
  // nginx forwards `$host`, without the port: then the host name is what can be compared.
  return url.host === host || (!host.includes(':') && url.hostname === host)
}

/** True when a query string carries a username or password. */
function hasCredentials(query) {
  return query != null && ('username' in query || 'password' in query)
}

function publicUser(user) {
  return { id: user.id, name: user.name }
}

/** Compares without leaking, through timing, how much of the password matched. */
function samePassword(given, expected) {
  const a = createHash('sha256').update(String(given)).digest()
  const b = createHash('sha256').update(String(expected)).digest()
  return timingSafeEqual(a, b)
}
