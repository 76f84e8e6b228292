import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import express, {
  type NextFunction,
  type Request,
  type RequestHandler,
  type Response,
} from 'express'
import expressSession from 'express-session'
import { type Backend, SessionStore } from 'sessionmesh'
import { session } from 'sessionmesh/express'
import { memoryBackend } from 'sessionmesh/memory'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { testPassport } from '../support/express-app.js'

type Data = Record<string, unknown>
const data = (req: Request) => req.session as unknown as Data

const servers: Server[] = []
afterEach(() => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections()
    server.close()
  }
})

/** The same small app over whichever session middleware is given. */
async function app(middleware: RequestHandler, trustProxy = false): Promise<string> {
  const app = express()
  if (trustProxy) app.set('trust proxy', true)
  app.use(middleware)
  app.get('/get', (req, res) => {
    const { cookie: _c, ...rest } = data(req) ?? {}
    res.json({ id: req.sessionID, data: rest })
  })
  app.get('/noop', (_req, res) => res.json({}))
  app.put('/set/:key/:value', (req, res) => {
    data(req)[String(req.params.key)] = req.params.value
    res.json({ id: req.sessionID })
  })
  app.post('/save', (req, res, next) => {
    data(req).saved = true
    req.session.save((error) => (error ? next(error) : res.json({ id: req.sessionID })))
  })
  app.post('/regenerate', (req, res, next) => {
    const before = req.sessionID
    req.session.regenerate((error) => {
      if (error) return next(error)
      data(req).after = 'yes'
      res.json({ before, after: req.sessionID })
    })
  })
  app.post('/destroy', (req, res, next) => {
    req.session.destroy((error) => (error ? next(error) : res.sendStatus(204)))
  })
  app.post('/null', (req, res) => {
    ;(req as unknown as { session: unknown }).session = null
    res.sendStatus(204)
  })
  app.get('/reload', (req, res, next) => {
    req.session.reload((error) => (error ? next(error) : res.json({ data: data(req) })))
  })
  app.put('/maxage/:ms', (req, res) => {
    req.session.cookie.maxAge = Number(req.params.ms)
    res.json({ maxAge: req.session.cookie.maxAge })
  })
  app.put('/big', (req, res) => {
    data(req).big = 'x'.repeat(10_000)
    res.json({ ok: true })
  })
  app.use(
    (
      error: Error & { status?: number; code?: string },
      _req: Request,
      res: Response,
      _next: NextFunction,
    ) => {
      res.status(error.status ?? 500).json({ code: error.code ?? 'ERROR' })
    },
  )
  const server = app.listen(0, '127.0.0.1')
  servers.push(server)
  await new Promise((resolve) => server.once('listening', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/** One browser: a cookie jar that follows Set-Cookie, and the raw Set-Cookie lines of the last response. */
class Browser {
  cookies = new Map<string, string>()
  setCookies: string[] = []

  async request(base: string, method: string, path: string, headers: Record<string, string> = {}) {
    const cookie = [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ')
    const response = await fetch(`${base}${path}`, {
      method,
      headers: cookie ? { ...headers, cookie } : headers,
    })
    this.setCookies = response.headers.getSetCookie()
    for (const line of this.setCookies) {
      const [pair = ''] = line.split(';')
      const eq = pair.indexOf('=')
      const value = pair.slice(eq + 1)
      if (value === '' || /expires=thu, 01 jan 1970/i.test(line))
        this.cookies.delete(pair.slice(0, eq))
      else this.cookies.set(pair.slice(0, eq), value)
    }
    const body = response.status === 204 ? undefined : await response.json()
    return { status: response.status, body: body as Data }
  }
}

/** A Set-Cookie line with its value and expiry times taken out, to compare attributes. */
const shape = (line: string | undefined) =>
  (line ?? '').replace(/=[^;]*/, '=<value>').replace(/Expires=[^;]*/, 'Expires=<date>')

/** Counts the writes `backend` receives from now on. */
function countWrites(backend: Backend): { count: number } {
  const writes = { count: 0 }
  const write = backend.write.bind(backend)
  backend.write = (sid, w) => {
    writes.count++
    return write(sid, w)
  }
  return writes
}

type Options = Parameters<typeof session>[0]
/** Both middlewares with the same options, over one store they share. */
function both(options: Omit<Options, 'backend'>) {
  const store = (options.store ?? new SessionStore()) as SessionStore
  return {
    ours: session({ ...options, store }) as unknown as RequestHandler,
    theirs: expressSession({ ...(options as expressSession.SessionOptions), store }),
  }
}

describe('session() and express-session, side by side', () => {
  it('reads the cookies express-session writes, and express-session reads its cookies', async () => {
    const { ours, theirs } = both({ secret: 'k', resave: false, saveUninitialized: false })
    const [a, b] = [await app(theirs), await app(ours)]
    const browser = new Browser()
    const first = await browser.request(a, 'PUT', '/set/x/1')
    const second = await browser.request(b, 'PUT', '/set/y/2')
    expect(second.body.id).toBe(first.body.id)
    const seen = await browser.request(a, 'GET', '/get')
    expect(seen.body).toEqual({ id: first.body.id, data: { x: '1', y: '2' } })
  })

  it('writes Set-Cookie with the same attributes, in the same order, for every cookie option', async () => {
    const cookie = {
      maxAge: 60_000,
      path: '/',
      domain: '127.0.0.1',
      httpOnly: false,
      sameSite: 'lax' as const,
      priority: 'high' as const,
    }
    const { ours, theirs } = both({
      secret: 'k',
      name: 'sid',
      cookie,
      saveUninitialized: false,
      resave: false,
    })
    const [x, y] = [new Browser(), new Browser()]
    await x.request(await app(theirs), 'PUT', '/set/a/1')
    await y.request(await app(ours), 'PUT', '/set/a/1')
    expect(shape(y.setCookies[0])).toBe(shape(x.setCookies[0]))
    expect(y.setCookies[0]).toMatch(/^sid=s%3A/)
  })

  it('signs with the first secret and accepts every secret of the array (rotation)', async () => {
    const store = new SessionStore()
    // A cookie with an expiry: express-session re-sends those when the session changes.
    const cookie = { maxAge: 60_000 }
    const old = await app(
      session({
        secret: 'old',
        store,
        saveUninitialized: false,
        resave: false,
        cookie,
      }) as unknown as RequestHandler,
    )
    const rotated = await app(
      session({
        secret: ['new', 'old'],
        store,
        saveUninitialized: false,
        resave: false,
        cookie,
      }) as unknown as RequestHandler,
    )
    const newOnly = await app(
      session({
        secret: 'new',
        store,
        saveUninitialized: false,
        resave: false,
        cookie,
      }) as unknown as RequestHandler,
    )
    const browser = new Browser()
    const { body } = await browser.request(old, 'PUT', '/set/a/1')
    expect((await browser.request(rotated, 'GET', '/get')).body.id).toBe(body.id)
    // Changing the session re-sends the cookie, now signed with the new secret.
    await browser.request(rotated, 'PUT', '/set/b/2')
    expect((await browser.request(newOnly, 'GET', '/get')).body).toEqual({
      id: body.id,
      data: { a: '1', b: '2' },
    })
    // A cookie signed with a secret nobody lists is a new session.
    const stranger = new Browser()
    await stranger.request(old, 'PUT', '/set/a/1')
    expect((await stranger.request(newOnly, 'GET', '/get')).body.data).toEqual({})
  })

  it('uses genid for new ids', async () => {
    let n = 0
    const base = await app(
      session({
        secret: 'k',
        genid: () => `custom-${++n}`,
        saveUninitialized: false,
        resave: false,
      }) as unknown as RequestHandler,
    )
    expect((await new Browser().request(base, 'PUT', '/set/a/1')).body.id).toBe('custom-1')
  })

  for (const saveUninitialized of [true, false]) {
    it(`saveUninitialized: ${saveUninitialized} stores and sends an untouched new session as express-session does`, async () => {
      const { ours, theirs } = both({ secret: 'k', saveUninitialized, resave: false })
      const results: number[] = []
      for (const mw of [theirs, ours]) {
        const browser = new Browser()
        await browser.request(await app(mw), 'GET', '/noop')
        results.push(browser.setCookies.length)
      }
      expect(results).toEqual(saveUninitialized ? [1, 1] : [0, 0])
    })
  }
  for (const rolling of [true, false]) {
    it(`rolling: ${rolling} re-sends the cookie on a read-only request exactly when express-session does`, async () => {
      const counts = []
      for (const mw of Object.values(
        both({
          secret: 'k',
          rolling,
          resave: false,
          saveUninitialized: false,
          cookie: { maxAge: 60_000 },
        }),
      )) {
        const browser = new Browser()
        const base = await app(mw)
        await browser.request(base, 'PUT', '/set/a/1')
        await browser.request(base, 'GET', '/get')
        counts.push(browser.setCookies.length)
      }
      expect(counts).toEqual(rolling ? [1, 1] : [0, 0])
    })
  }

  it('resave: true saves an unchanged session, resave: false does not, as express-session', async () => {
    for (const resave of [true, false]) {
      const calls: number[] = []
      for (const make of [expressSession, session] as const) {
        const store = new expressSession.MemoryStore()
        let sets = 0
        const set = store.set.bind(store)
        store.set = (sid, s, cb) => {
          sets++
          set(sid, s, cb)
        }
        const mw = (make as typeof expressSession)({
          secret: 'k',
          resave,
          saveUninitialized: false,
          store,
        })
        const base = await app(mw)
        const browser = new Browser()
        await browser.request(base, 'PUT', '/set/a/1')
        sets = 0
        await browser.request(base, 'GET', '/get')
        calls.push(sets)
      }
      expect(calls).toEqual(resave ? [1, 1] : [0, 0])
    }
  })

  for (const proxy of [true, false, undefined]) {
    it(`proxy: ${proxy} decides whether a secure cookie is sent behind X-Forwarded-Proto: https`, async () => {
      const sent = []
      for (const mw of Object.values(
        both({
          secret: 'k',
          proxy,
          cookie: { secure: true },
          saveUninitialized: false,
          resave: false,
        } as Options),
      )) {
        const browser = new Browser()
        // With proxy unset, both follow Express's `trust proxy`, which is on here.
        await browser.request(await app(mw, true), 'PUT', '/set/a/1', {
          'x-forwarded-proto': 'https',
        })
        sent.push(browser.setCookies.length)
      }
      expect(sent).toEqual(proxy === false ? [0, 0] : [1, 1])
    })
  }

  it("cookie.secure: 'auto' makes the cookie secure exactly on secure requests", async () => {
    const base = await app(
      session({
        secret: 'k',
        proxy: true,
        cookie: { secure: 'auto' },
        saveUninitialized: false,
        resave: false,
      }) as unknown as RequestHandler,
    )
    const plain = new Browser()
    await plain.request(base, 'PUT', '/set/a/1')
    expect(plain.setCookies[0]).not.toMatch(/Secure/)
    const tls = new Browser()
    await tls.request(base, 'PUT', '/set/a/1', { 'x-forwarded-proto': 'https' })
    expect(tls.setCookies[0]).toMatch(/; Secure/)
  })

  for (const unset of ['keep', 'destroy'] as const) {
    it(`unset: '${unset}' keeps or destroys the stored session when req.session is set to null`, async () => {
      const store = new SessionStore()
      const base = await app(
        session({
          secret: 'k',
          unset,
          store,
          saveUninitialized: false,
          resave: false,
        }) as unknown as RequestHandler,
      )
      const browser = new Browser()
      const { body } = await browser.request(base, 'PUT', '/set/a/1')
      await browser.request(base, 'POST', '/null')
      expect(await store.get(String(body.id))).toEqual(
        unset === 'keep' ? expect.objectContaining({ a: '1' }) : null,
      )
    })
  }

  it('takes any express-session store (express-session’s own MemoryStore)', async () => {
    const base = await app(
      session({
        secret: 'k',
        store: new expressSession.MemoryStore(),
        saveUninitialized: false,
        resave: false,
      }) as unknown as RequestHandler,
    )
    const browser = new Browser()
    await browser.request(base, 'PUT', '/set/a/1')
    await browser.request(base, 'PUT', '/set/b/2')
    expect((await browser.request(base, 'GET', '/get')).body.data).toEqual({ a: '1', b: '2' })
  })
})

describe('req.session API', () => {
  const make = (store = new SessionStore()) =>
    app(
      session({
        secret: 'k',
        store,
        saveUninitialized: false,
        resave: false,
        cookie: { maxAge: 60_000 },
      }) as unknown as RequestHandler,
    )

  it('regenerate destroys the old session and gives a new id that keeps what is set after it', async () => {
    const store = new SessionStore()
    const base = await make(store)
    const browser = new Browser()
    await browser.request(base, 'PUT', '/set/a/1')
    const { body } = await browser.request(base, 'POST', '/regenerate')
    expect(body.after).not.toBe(body.before)
    expect(await store.get(String(body.before))).toBeNull()
    expect((await browser.request(base, 'GET', '/get')).body).toEqual({
      id: body.after,
      data: { after: 'yes' },
    })
  })

  it('destroy removes the session and clears the cookie in the browser', async () => {
    const store = new SessionStore()
    const base = await make(store)
    const browser = new Browser()
    const { body } = await browser.request(base, 'PUT', '/set/a/1')
    await browser.request(base, 'POST', '/destroy')
    expect(browser.cookies.size).toBe(0)
    expect(await store.get(String(body.id))).toBeNull()
  })

  it('reload sees what another request saved meanwhile', async () => {
    const store = new SessionStore()
    const base = await make(store)
    const browser = new Browser()
    const { body } = await browser.request(base, 'PUT', '/set/a/1')
    const other = (await store.get(String(body.id))) as Data
    other.b = '2'
    await store.set(String(body.id), other)
    expect((await browser.request(base, 'GET', '/reload')).body.data).toMatchObject({
      a: '1',
      b: '2',
    })
  })

  it('save saves before answering and is not repeated at the end of the request', async () => {
    const store = new SessionStore()
    const base = await make(store)
    const browser = new Browser()
    const { body } = await browser.request(base, 'POST', '/save')
    expect(await store.get(String(body.id))).toMatchObject({ saved: true })
  })

  it('cookie.maxAge set by the app is saved and sent (express-session ignores a cookie-only change)', async () => {
    const base = await make()
    const browser = new Browser()
    await browser.request(base, 'PUT', '/set/a/1')
    await browser.request(base, 'PUT', '/maxage/7200000')
    const expires = Date.parse(/Expires=([^;]*)/.exec(browser.setCookies[0] ?? '')?.[1] ?? '')
    expect(expires - Date.now()).toBeGreaterThan(7_000_000)
  })

  it('sends no Set-Cookie and writes nothing for a read-only request', async () => {
    const backend = memoryBackend()
    const store = new SessionStore({ backend })
    const base = await make(store)
    const browser = new Browser()
    await browser.request(base, 'PUT', '/set/a/1')
    const writes = countWrites(backend)
    for (let i = 0; i < 5; i++) await browser.request(base, 'GET', '/get')
    expect(browser.setCookies).toEqual([])
    expect(writes.count).toBe(0)
  })

  it('saves and sends the cookie when a middleware before it replaced res.end and res.writeHead, and inside a mounted sub-app', async () => {
    // The hooks live on ServerResponse.prototype; a response whose methods an
    // earlier middleware replaced (as compression and on-headers do) gets its own.
    const store = new SessionStore()
    const outer = express()
    const calls: string[] = []
    // Only on /set: the sub-app's responses keep the methods of their prototype.
    outer.use('/set', (_req, res, next) => {
      const { end, writeHead } = res
      res.writeHead = function (this: Response, ...args: unknown[]) {
        calls.push('writeHead')
        return (writeHead as (...a: unknown[]) => Response).apply(this, args)
      } as Response['writeHead']
      res.end = function (this: Response, ...args: unknown[]) {
        calls.push('end')
        return (end as (...a: unknown[]) => Response).apply(this, args)
      } as Response['end']
      next()
    })
    outer.use(
      session({ secret: 'k', store, resave: false, saveUninitialized: false }) as RequestHandler,
    )
    const sub = express()
    sub.put('/set/:value', (req, res) => {
      data(req).value = req.params.value
      res.json({ id: req.sessionID })
    })
    outer.use('/sub', sub)
    outer.put('/set/:value', (req, res) => {
      data(req).value = req.params.value
      res.json({ id: req.sessionID })
    })
    const server = outer.listen(0, '127.0.0.1')
    servers.push(server)
    await new Promise((resolve) => server.once('listening', resolve))
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    for (const path of ['/set/own', '/sub/set/mounted']) {
      const browser = new Browser()
      const { body } = await browser.request(base, 'PUT', path)
      expect(browser.cookies.has('connect.sid')).toBe(true)
      expect(await store.get(String(body.id))).toMatchObject({ value: path.split('/').at(-1) })
    }
    expect(calls).toEqual(['end', 'writeHead'])
  })

  it('writes nothing for a read-only request even when the clock ticks while the cookie is reset', async () => {
    // Every call of Date.now() is a millisecond later: were `originalMaxAge` read
    // back from `expires`, each request would come out 1 ms short and be saved.
    const backend = memoryBackend()
    const base = await make(new SessionStore({ backend }))
    const browser = new Browser()
    await browser.request(base, 'PUT', '/set/a/1')
    const writes = countWrites(backend)
    let now = Date.now()
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => ++now)
    try {
      for (let i = 0; i < 5; i++) await browser.request(base, 'GET', '/get')
    } finally {
      clock.mockRestore()
    }
    expect(writes.count).toBe(0)
  })

  it('turns a refused save into the response instead of a 200 sent before the save (express-session does that)', async () => {
    const theirs = new Browser()
    const answered = await theirs
      .request(
        await app(
          expressSession({
            secret: 'k',
            store: new SessionStore({ maxBytes: 1000 }),
            resave: false,
            saveUninitialized: false,
          }),
        ),
        'PUT',
        '/big',
      )
      .then(
        (response) => response.status,
        () => 'connection closed',
      )
    // express-session has already sent "200 OK" when the store refuses the save.
    expect([200, 'connection closed']).toContain(answered)
    const base = await app(
      session({
        secret: 'k',
        backend: memoryBackend(),
        maxBytes: 1000,
        resave: false,
        saveUninitialized: false,
      }) as unknown as RequestHandler,
    )
    const ours = new Browser()
    const response = await ours.request(base, 'PUT', '/big')
    expect(response).toEqual({ status: 500, body: { code: 'SESSIONMESH_SESSION_TOO_LARGE' } })
    expect(ours.cookies.size).toBe(0)
  })

  it('keeps passport login and logout working unchanged', async () => {
    const auth = testPassport()
    const store = new SessionStore()
    const server = express()
    server.use(
      session({
        secret: 'k',
        store,
        resave: false,
        saveUninitialized: false,
      }) as unknown as RequestHandler,
    )
    server.use(auth.session())
    server.post(
      '/login',
      (req, _res, next) => {
        req.body = { username: String(req.query.u), password: 'pw' }
        next()
      },
      auth.authenticate('local'),
      (req, res) => res.json({ user: req.user }),
    )
    server.get('/me', (req, res) => res.json({ user: req.user ?? null }))
    server.post('/logout', (req, res, next) =>
      req.logout((e) => (e ? next(e) : res.sendStatus(204))),
    )
    const listener = server.listen(0, '127.0.0.1')
    servers.push(listener)
    await new Promise((resolve) => listener.once('listening', resolve))
    const base = `http://127.0.0.1:${(listener.address() as AddressInfo).port}`
    const browser = new Browser()
    expect((await browser.request(base, 'POST', '/login?u=alice')).body).toEqual({
      user: { id: 'alice' },
    })
    expect((await browser.request(base, 'GET', '/me')).body).toEqual({ user: { id: 'alice' } })
    expect(await store.listUserSessions('alice')).toHaveLength(1)
    await browser.request(base, 'POST', '/logout')
    expect((await browser.request(base, 'GET', '/me')).body).toEqual({ user: null })
    expect(await store.listUserSessions('alice')).toHaveLength(0)
  })
})
