import type { AddressInfo } from 'node:net'
import express, { type NextFunction, type Request, type Response } from 'express'
import expressSession from 'express-session'
import { createClient } from 'redis'
import { SessionStore } from 'sessionmesh'
import { session as smSession } from 'sessionmesh/express'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Client, testPassport } from '../support/express-app.js'
import { RedisServer } from '../support/redis-server.js'

// Issue 11, items 5 and 9, through real HTTP on a private redis-server: what a
// cookie expired on purpose, a logout without a session and a login from a fresh
// visit leave in Redis.

let server: RedisServer
let redis: Awaited<ReturnType<typeof connect>>
const closers: Array<() => Promise<void>> = []

function connect() {
  const client = createClient({ url: server.url })
  client.on('error', () => {})
  return client.connect()
}

type Middleware = 'express-session' | 'sessionmesh/express'

/** A small app: passport login, logout, a key write, and two ways to expire the cookie. */
async function startApp(kind: Middleware, prefix: string) {
  const client = await connect()
  const backend = redisBackend({ client, prefix })
  // A generous timeout: on a loaded machine a 300 ms one turns some calls into 503s.
  const store = new SessionStore({ backend, timeout: 5_000 })
  const options = {
    secret: 'lifecycle secret',
    resave: false,
    saveUninitialized: false,
    cookie: { maxAge: 3_600_000 },
  }
  const app = express()
  app.use(express.json())
  app.use(
    kind === 'express-session'
      ? expressSession({ ...options, store })
      : smSession({ ...options, backend, timeout: 5_000 }),
  )
  const auth = testPassport()
  app.use(auth.session())
  const done = (res: Response, next: NextFunction) => (error?: unknown) =>
    error ? next(error) : res.sendStatus(204)
  const data = (req: Request) => req.session as unknown as Record<string, unknown>
  const before: string[] = []
  app.post(
    '/login',
    (req, _res, next) => {
      before.push(req.sessionID)
      next()
    },
    auth.authenticate('local'),
    (req, res) => res.json({ sid: req.sessionID }),
  )
  app.get('/me', (req, res) => (req.user ? res.json(req.user) : res.sendStatus(401)))
  app.post('/logout', (req, res, next) => req.session.destroy(done(res, next)))
  app.put('/kv/:key', (req, res, next) => {
    data(req)[String(req.params.key)] = req.body
    req.session.save(done(res, next))
  })
  app.post('/expire/max-age', (req, res) => {
    req.session.cookie.maxAge = 0
    res.sendStatus(204)
  })
  app.post('/expire/past', (req, res) => {
    req.session.cookie.expires = new Date(Date.now() - 60_000)
    res.sendStatus(204)
  })
  const http = app.listen(0, '127.0.0.1')
  await new Promise((resolve) => http.once('listening', resolve))
  closers.push(async () => {
    http.closeAllConnections()
    await new Promise((resolve) => http.close(resolve))
    client.destroy()
  })
  const { port } = http.address() as AddressInfo
  return { url: `http://127.0.0.1:${port}`, store, before }
}

async function keys(prefix: string): Promise<string[]> {
  return (await redis.keys(`${prefix}*`)).sort()
}

beforeAll(async () => {
  server = await RedisServer.start()
  redis = await connect()
})
afterAll(async () => {
  for (const close of closers.splice(0)) await close()
  redis?.destroy()
  await server?.stop()
})

describe.each<Middleware>(['express-session', 'sessionmesh/express'])('%s', (kind) => {
  it('a logout without a session writes nothing (each one used to leave a tombstone)', async () => {
    const prefix = `nolog:${kind}:`
    const { url } = await startApp(kind, prefix)
    for (let i = 0; i < 20; i++) {
      const response = await new Client(url).request('POST', '/logout')
      expect(response.status).toBe(204)
    }
    expect(await keys(prefix)).toEqual([])
  })

  it('a login from a fresh visit writes the session and its index, no tombstone for the unsaved one', async () => {
    const prefix = `login:${kind}:`
    const { url, before } = await startApp(kind, prefix)
    const browser = new Client(url)
    expect((await browser.login('fresh')).status).toBe(200)
    const unsaved = before[0] as string
    expect(unsaved).not.toBe(browser.sid)
    const stored = await keys(prefix)
    expect(stored.filter((key) => key.includes(unsaved))).toEqual([])
    expect(stored.filter((key) => key.includes(browser.sid))).toHaveLength(1)
    // Logging out of a stored session still leaves its tombstone: that promise is kept.
    expect((await browser.request('POST', '/logout')).status).toBe(204)
    expect((await keys(prefix)).filter((key) => key.includes(browser.sid))).toHaveLength(1)
    expect((await browser.request('GET', '/me')).status).toBe(401)
  })

  it.each(['max-age', 'past'])(
    'expiring the cookie (%s) destroys the session: a replayed cookie does not get it back',
    async (how) => {
      const prefix = `expire:${kind}:${how}:`
      const { url, store } = await startApp(kind, prefix)
      const browser = new Client(url)
      expect((await browser.login('leaving')).status).toBe(200)
      const cookie = browser.cookie
      const sid = browser.sid
      expect((await browser.request('GET', '/me')).status).toBe(200)
      expect((await browser.request('POST', `/expire/${how}`)).status).toBe(204)
      const replay = new Client(url)
      replay.cookie = cookie
      expect((await replay.request('GET', '/me')).status).toBe(401)
      expect(await store.get(sid)).toBeNull()
      expect(await store.listUserSessions('leaving')).toEqual([])
      // Gone means destroyed (a tombstone): a request that loaded it cannot write it back.
      expect((await keys(prefix)).filter((key) => key.includes(sid))).toHaveLength(1)
      expect(await store.get(sid)).toBeNull()
    },
  )
})

describe('an absolute expires on a cookie', () => {
  it('is the stored session’s expiry, and a record whose cookie has expired is not served', async () => {
    const prefix = 'absolute:'
    const client = await connect()
    closers.push(async () => client.destroy())
    const backend = redisBackend({ client, prefix })
    const store = new SessionStore({ backend })
    const expires = new Date(Date.now() + 120_000)
    await store.set('absolute-sid-1', {
      cookie: { originalMaxAge: null, expires: expires.toISOString(), path: '/' },
      n: 1,
    })
    // Before: the store ignored it and kept the session for its default day.
    expect((await backend.get('absolute-sid-1'))?.meta.expiresAt).toBe(expires.getTime())
    const loaded = (await store.get('absolute-sid-1')) as { cookie: { expires: string } } | null
    expect(loaded?.cookie.expires).toBe(expires.toISOString())

    // A record written elsewhere, whose cookie's expires has passed though the key lives on.
    const now = Date.now()
    await backend.write('absolute-sid-2', {
      mode: 'create',
      set: {
        cookie: JSON.stringify({ originalMaxAge: null, expires: new Date(now - 1000), path: '/' }),
      },
      unset: [],
      replace: true,
      now,
      expiresAt: now + 3_600_000,
      maxLifetime: 0,
      userId: undefined,
      device: {},
    })
    expect(await backend.get('absolute-sid-2')).not.toBeNull()
    expect(await store.get('absolute-sid-2')).toBeNull()
  })
})
