import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import express, { type NextFunction, type Request, type Response } from 'express'
import expressSession from 'express-session'
import { createClient } from 'redis'
import type { SessionStore } from 'sessionmesh'
import { session } from 'sessionmesh/express'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { testPassport } from '../support/express-app.js'
import { RedisServer } from '../support/redis-server.js'

// req.session.rotate() over real HTTP and a private redis-server: a new id with
// the same data, the old id a tombstone, the user index moved, passport intact,
// and requests already on their way when the id changes not logged out.

// What an application writes once to call rotate() under @types/express-session (docs/middleware.md).
declare module 'express-session' {
  interface Session {
    rotate(callback?: (error?: unknown) => void): this
  }
}

type RedisClient = ReturnType<typeof createClient>
type Data = Record<string, unknown>
const data = (req: Request) => req.session as unknown as Data

let redis: RedisServer
let client: RedisClient
let prefixes = 0
const closers: Array<() => Promise<void>> = []

beforeAll(async () => {
  redis = await RedisServer.start()
  client = createClient({ url: redis.url })
  await client.connect()
})
afterEach(async () => {
  for (const close of closers.splice(0)) await close()
})
afterAll(async () => {
  await client?.close()
  await redis?.stop()
})

/** An app on sessionmesh/express over its own key prefix, with passport login and a rotate route. */
async function start(options: { rotateGrace?: number; store?: expressSession.Store } = {}) {
  const prefix = `rot${++prefixes}:`
  const sessions = options.store
    ? session({ store: options.store, secret: 'k', resave: false, saveUninitialized: false })
    : session({
        backend: redisBackend({ client, prefix }),
        secret: 'k',
        resave: false,
        saveUninitialized: false,
        cookie: { maxAge: 3_600_000 },
        // The machine is shared: a store timeout (a 503) is not what these tests are about.
        timeout: 5_000,
        ...(options.rotateGrace === undefined ? {} : { rotateGrace: options.rotateGrace }),
      })
  const auth = testPassport()
  let arrived = () => {}
  let release = () => {}
  const waiting = new Promise<void>((resolve) => {
    arrived = resolve
  })
  const held = new Promise<void>((resolve) => {
    release = resolve
  })
  const app = express()
  app.use(express.json({ strict: false }))
  app.use(sessions)
  app.use(auth.session())
  app.post('/login', auth.authenticate('local'), (req, res) => {
    res.json({ sid: req.sessionID })
  })
  // Log in and rotate in one request: passport's regenerate, then rotate.
  app.post('/login-rotate', auth.authenticate('local'), (req, res, next) => {
    const before = req.sessionID
    req.session.rotate((error) => (error ? next(error) : res.json({ before, sid: req.sessionID })))
  })
  app.post('/rotate', (req, res, next) => {
    const before = req.sessionID
    req.session.rotate((error) => {
      if (error) return next(error)
      res.json({ before, sid: req.sessionID, user: req.user ?? null })
    })
  })
  // A login without passport: the user set by hand, then the id rotated.
  app.post('/login-by-hand', (req, res, next) => {
    data(req).passport = { user: 'fay' }
    const before = req.sessionID
    req.session.rotate((error) => (error ? next(error) : res.json({ before, sid: req.sessionID })))
  })
  app.put('/anon', (req, res) => {
    data(req).anon = true
    res.json({ sid: req.sessionID })
  })
  // Loads the session, then waits for the test before it writes.
  app.put('/slow/:key', async (req, res) => {
    arrived()
    await held
    data(req)[String(req.params.key)] = true
    res.json({ user: req.user ?? null, sid: req.sessionID })
  })
  app.get('/me', (req, res) => {
    if (!req.user) return res.status(401).json({ sid: req.sessionID })
    res.json({ user: req.user, sid: req.sessionID, data: data(req) })
  })
  app.put('/kv/:key', (req, res) => {
    if (!req.user) return res.status(401).json({})
    data(req)[String(req.params.key)] = req.body
    res.json({ sid: req.sessionID })
  })
  app.use(
    (
      error: Error & { status?: number; code?: string },
      _q: Request,
      res: Response,
      _n: NextFunction,
    ) => {
      res.status(error.status ?? 500).json({ code: error.code, message: error.message })
    },
  )
  const server: Server = app.listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  closers.push(
    () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  )
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  // A SessionStore unless a foreign store was given (and then unused by the tests).
  const store = sessions.store as SessionStore
  return { url, sessions: { store }, prefix, gate: { waiting, release } }
}

/** A cookie jar for one session cookie; `cookie` can be pinned to replay an old one. */
class Jar {
  cookie = ''
  constructor(readonly base: string) {}
  async request(method: string, path: string, body?: unknown, cookie = this.cookie) {
    const headers: Record<string, string> = {}
    if (cookie) headers.cookie = cookie
    if (body !== undefined) headers['content-type'] = 'application/json'
    const response = await fetch(this.base + path, {
      method,
      headers,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
    const set = response.headers.getSetCookie().find((line) => line.startsWith('connect.sid='))
    if (set) this.cookie = set.split(';')[0] ?? ''
    return { status: response.status, setCookie: set, body: (await response.json()) as Data }
  }
  login(user: string) {
    return this.request('POST', '/login', { username: user, password: 'pw' })
  }
}

const keys = async (pattern: string) => (await client.keys(pattern)).sort()

describe('req.session.rotate()', () => {
  it('moves the session to a new id with the same data, sends the new cookie, and tombstones the old id', async () => {
    const { url, sessions, prefix } = await start({ rotateGrace: 0 })
    const jar = new Jar(url)
    const login = await jar.login('alice')
    const oldId = String(login.body.sid)
    await jar.request('PUT', '/kv/theme', 'dark')
    const oldCookie = jar.cookie

    const rotated = await jar.request('POST', '/rotate')
    expect(rotated.status).toBe(200)
    const newId = String(rotated.body.sid)
    expect(rotated.body.before).toBe(oldId)
    expect(newId).not.toBe(oldId)
    expect(rotated.setCookie).toBeDefined()
    expect(jar.cookie).not.toBe(oldCookie)
    expect(rotated.body.user).toEqual({ id: 'alice' })

    const me = await jar.request('GET', '/me')
    expect(me.status).toBe(200)
    expect(me.body.sid).toBe(newId)
    expect(me.body.data).toMatchObject({ theme: 'dark', passport: { user: 'alice' } })

    // The old id: no session, a tombstone, out of alice's index; the new one in it.
    expect(await client.exists(`${prefix}s:${oldId}`)).toBe(0)
    expect(await client.exists(`${prefix}t:${oldId}`)).toBe(1)
    expect(await keys(`${prefix}s:*`)).toEqual([`${prefix}s:${newId}`])
    const listed = await sessions.store.listUserSessions('alice')
    expect(listed.map((entry) => entry.id)).toEqual([newId])
    const replay = await jar.request('GET', '/me', undefined, oldCookie)
    expect(replay.status).toBe(401)
    expect(replay.body.sid).not.toBe(oldId)
  })

  it('keeps passport’s login: rotate after req.login, in the same request, leaves one indexed session', async () => {
    const { url, sessions } = await start()
    const jar = new Jar(url)
    const response = await jar.request('POST', '/login-rotate', { username: 'bob', password: 'pw' })
    expect(response.status).toBe(200)
    expect(response.body.sid).not.toBe(response.body.before)
    const me = await jar.request('GET', '/me')
    expect(me.status).toBe(200)
    expect(me.body).toMatchObject({ user: { id: 'bob' }, sid: response.body.sid })
    expect((await sessions.store.listUserSessions('bob')).map((entry) => entry.id)).toEqual([
      response.body.sid,
    ])
  })

  it('a request in flight on the old id is served as the user, and its write cannot bring the old id back', async () => {
    const { url, prefix, gate } = await start({ rotateGrace: 0 })
    const jar = new Jar(url)
    await jar.login('carol')
    const oldCookie = jar.cookie
    const oldId = String((await jar.request('GET', '/me')).body.sid)
    const slow = jar.request('PUT', '/slow/late', undefined, oldCookie)
    await gate.waiting
    const rotated = await jar.request('POST', '/rotate')
    expect(rotated.status).toBe(200)
    gate.release()
    const answered = await slow
    expect(answered.status).toBe(200)
    expect(answered.body.user).toEqual({ id: 'carol' })
    expect(answered.setCookie).toBeUndefined()
    expect(await client.exists(`${prefix}s:${oldId}`)).toBe(0)
    expect((await jar.request('GET', '/me', undefined, oldCookie)).status).toBe(401)
    const me = await jar.request('GET', '/me')
    expect(me.body.sid).toBe(rotated.body.sid)
    expect(me.body.data).not.toHaveProperty('late')
  })

  it('an unsaved session only changes its id (nothing written, nothing destroyed)', async () => {
    const { url, prefix } = await start()
    const jar = new Jar(url)
    const response = await jar.request('POST', '/rotate')
    expect(response.status).toBe(200)
    expect(response.body.sid).not.toBe(response.body.before)
    expect(await keys(`${prefix}*`)).toEqual([])
  })

  it('works over an express-session store too (no grace window there)', async () => {
    const { url } = await start({ store: new expressSession.MemoryStore() })
    const jar = new Jar(url)
    await jar.login('dave')
    const oldCookie = jar.cookie
    const rotated = await jar.request('POST', '/rotate')
    expect(rotated.status).toBe(200)
    expect((await jar.request('GET', '/me')).body).toMatchObject({ user: { id: 'dave' } })
    expect((await jar.request('GET', '/me', undefined, oldCookie)).status).toBe(401)
  })

  it('a request on the old id just after the rotation is served as the user (no new cookie); refused with rotateGrace: 0 and after the window', async () => {
    for (const grace of [1_500, 0]) {
      const { url } = await start({ rotateGrace: grace })
      const jar = new Jar(url)
      await jar.login('erin')
      const oldCookie = jar.cookie
      const rotated = await jar.request('POST', '/rotate')
      const late = await jar.request('GET', '/me', undefined, oldCookie)
      if (grace === 0) {
        expect(late.status).toBe(401)
        continue
      }
      expect(late.status).toBe(200)
      expect(late.body).toMatchObject({ user: { id: 'erin' }, sid: rotated.body.sid })
      // The old id's holder is not handed the new id.
      expect(late.setCookie).toBeUndefined()
      // A write through the old id lands in the new session.
      expect((await jar.request('PUT', '/kv/late', 1, oldCookie)).status).toBe(200)
      expect((await jar.request('GET', '/me')).body.data).toMatchObject({ late: 1 })
      await new Promise((resolve) => setTimeout(resolve, grace + 100))
      expect((await jar.request('GET', '/me', undefined, oldCookie)).status).toBe(401)
      expect((await jar.request('GET', '/me')).status).toBe(200)
    }
  })

  it('a login does not get the grace window: the old, anonymous id is never served the logged-in session', async () => {
    const { url, sessions } = await start()
    const jar = new Jar(url)
    // A stored anonymous session: what an attacker could plant in a victim's browser.
    const anon = await jar.request('PUT', '/anon')
    const planted = jar.cookie
    const login = await jar.request('POST', '/login-by-hand')
    expect(login.status).toBe(200)
    expect(login.body.before).toBe(anon.body.sid)
    expect((await jar.request('GET', '/me')).body).toMatchObject({ user: { id: 'fay' } })
    const attacker = await jar.request('GET', '/me', undefined, planted)
    expect(attacker.status).toBe(401)
    expect(attacker.body.sid).not.toBe(login.body.sid)
    expect((await sessions.store.listUserSessions('fay')).map((entry) => entry.id)).toEqual([
      login.body.sid,
    ])
  })
})

describe('rotation under load logs nobody out', () => {
  it('64 concurrent requests per round over 10 rotations: every one served as the user; old ids refused after', async () => {
    const grace = 2_000
    const { url, sessions } = await start({ rotateGrace: grace })
    const jar = new Jar(url)
    await jar.login('gus')
    const oldCookies: string[] = []
    const statuses: number[] = []
    let written = 0
    for (let round = 0; round < 10; round++) {
      oldCookies.push(jar.cookie)
      // Requests sent with the cookie of the moment, racing the rotation (as a
      // browser's parallel XHRs do): some arrive before it, some after.
      const requests = Array.from({ length: 64 }, (_, index) => {
        const write = index % 4 === 0
        if (write) written++
        return write
          ? jar.request('PUT', `/kv/r${round}i${index}`, index, oldCookies[round])
          : jar.request('GET', '/me', undefined, oldCookies[round])
      })
      const rotation = jar.request('POST', '/rotate')
      for (const response of await Promise.all(requests)) statuses.push(response.status)
      expect((await rotation).status).toBe(200)
    }
    expect(statuses.filter((status) => status !== 200)).toEqual([])
    expect(statuses).toHaveLength(640)
    const me = await jar.request('GET', '/me')
    expect(me.status).toBe(200)
    // One session left for the user, the current one.
    expect((await sessions.store.listUserSessions('gus')).map((entry) => entry.id)).toEqual([
      me.body.sid,
    ])
    // Writes that arrived before their round's rotation, or in its window, are in the
    // current session; a write that loaded the old id just before the destroy is refused.
    const kept = Object.keys(me.body.data as Data).filter((key) => /^r\d+i\d+$/.test(key))
    expect(kept.length).toBeGreaterThan(0)
    expect(kept.length).toBeLessThanOrEqual(written)
    await new Promise((resolve) => setTimeout(resolve, grace + 100))
    for (const cookie of oldCookies) {
      expect((await jar.request('GET', '/me', undefined, cookie)).status).toBe(401)
    }
  })
})
