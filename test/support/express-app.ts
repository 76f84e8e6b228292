import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import express, {
  type Response as ExpressResponse,
  type NextFunction,
  type Request,
  type RequestHandler,
} from 'express'
import session from 'express-session'
import passport from 'passport'
import { Strategy as LocalStrategy } from 'passport-local'
import type { SessionStore } from 'sessionmesh'

export interface TestApp {
  url: string
  /** The HTTP server, for attaching socket.io. */
  server: Server
  /** The session middleware the app uses, for sharing with socket.io. */
  sessionMiddleware: RequestHandler
  /** Holds `PUT /slow/:key` after it has loaded its session, until the test calls `release()`. */
  gate: { waiting: Promise<void>; release(): void }
  close(): Promise<void>
}

/** A passport with local login: any user name, password `pw`; the user is `{ id: name }`. */
export function testPassport(): passport.Authenticator {
  const auth = new passport.Passport()
  auth.use(
    new LocalStrategy((username, password, done) =>
      done(null, password === 'pw' ? { id: username } : false),
    ),
  )
  auth.serializeUser<string>((user, done) => done(null, (user as { id: string }).id))
  auth.deserializeUser<string>((id, done) => done(null, { id }))
  return auth
}

/**
 * A small real app: express-session over the given store, passport local login
 * (any user name, password `pw`), and routes that read and change the session.
 * Errors answer `{ code, message }` with the error's status.
 */
export async function startApp(
  store: SessionStore,
  cookie: session.CookieOptions = { maxAge: 3_600_000 },
): Promise<TestApp> {
  const app = express()
  const auth = testPassport()

  app.use(express.json({ strict: false }))
  const sessionMiddleware = session({
    store,
    secret: 'test secret',
    resave: false,
    saveUninitialized: false,
    cookie,
  })
  app.use(sessionMiddleware)
  app.use(auth.session())

  let release = () => {}
  let arrived = () => {}
  const gate = {
    waiting: new Promise<void>((resolve) => {
      arrived = resolve
    }),
    release: () => release(),
  }
  const held = new Promise<void>((resolve) => {
    release = resolve
  })
  const data = (req: Request) => req.session as unknown as Record<string, unknown>
  const saved = (req: Request, res: ExpressResponse, next: NextFunction) =>
    req.session.save((error) => (error ? next(error) : res.sendStatus(204)))

  app.post('/login', auth.authenticate('local'), (req, res) => {
    res.json({ user: req.user, sid: req.sessionID })
  })
  app.get('/me', (req, res) => {
    if (!req.user) return res.sendStatus(401)
    res.json({ user: req.user, sid: req.sessionID })
  })
  app.put('/kv/:key', (req, res, next) => {
    data(req)[String(req.params.key)] = req.body
    saved(req, res, next)
  })
  app.get('/kv', (req, res) => {
    const { cookie: _cookie, passport: _passport, ...pairs } = data(req)
    res.json(pairs)
  })
  app.put('/slow/:key', async (req, res, next) => {
    arrived()
    await held
    data(req)[String(req.params.key)] = req.body
    saved(req, res, next)
  })
  app.post('/logout', (req, res, next) => {
    req.logout((error) => {
      if (error) return next(error)
      req.session.destroy((destroyError) =>
        destroyError ? next(destroyError) : res.sendStatus(204),
      )
    })
  })
  app.use(
    (
      error: Error & { status?: number; code?: string },
      _req: Request,
      res: ExpressResponse,
      _next: NextFunction,
    ) => {
      res.status(error.status ?? 500).json({ code: error.code, message: error.message })
    },
  )

  const server = app.listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    sessionMiddleware,
    gate,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** A fetch response, with JSON bodies left loosely typed for assertions. */
export interface TestResponse {
  status: number
  headers: Headers
  json(): Promise<any>
  text(): Promise<string>
}

/** A client with one cookie jar: what one browser is. */
export class Client {
  cookie = ''
  constructor(
    readonly base: string,
    readonly userAgent = 'TestBrowser/1.0',
  ) {}

  async request(method: string, path: string, body?: unknown): Promise<TestResponse> {
    const headers: Record<string, string> = { 'user-agent': this.userAgent }
    if (this.cookie) headers.cookie = this.cookie
    if (body !== undefined) headers['content-type'] = 'application/json'
    const init: RequestInit = { method, headers }
    if (body !== undefined) init.body = JSON.stringify(body)
    const response = await fetch(`${this.base}${path}`, init)
    const set = response.headers.get('set-cookie')
    if (set) this.cookie = set.split(';')[0] ?? ''
    return response as TestResponse
  }

  login(username: string): Promise<TestResponse> {
    return this.request('POST', '/login', { username, password: 'pw' })
  }

  /** The session id inside the signed cookie. */
  get sid(): string {
    const value = decodeURIComponent(this.cookie.split('=')[1] ?? '')
    return value.slice(2, value.lastIndexOf('.'))
  }
}
