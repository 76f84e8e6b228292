import type { Server as HttpServer } from 'node:http'
import { type AddressInfo, createConnection } from 'node:net'
import express, { type NextFunction, type Request, type Response } from 'express'
import { createClient } from 'redis'
import { session } from 'sessionmesh/express'
import { redisBackend } from 'sessionmesh/redis'
import { shareSession } from 'sessionmesh/socket.io'
import { Server } from 'socket.io'
import { type Socket as ClientSocket, io as connect } from 'socket.io-client'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { testPassport } from '../support/express-app.js'
import { RedisServer } from '../support/redis-server.js'
import { closedByServer, connected, refused } from '../support/sockets.js'

// The `header` option over real HTTP and a private redis-server: a client with
// no cookie jar logs in, is served, is cut off by revocation and expiry, on HTTP
// and on socket.io (handshake `auth.session`); bad header values are no session.

declare module 'express-session' {
  interface Session {
    rotate(callback?: (error?: unknown) => void): this
  }
}

type RedisClient = ReturnType<typeof createClient>
type Data = Record<string, unknown>

let redis: RedisServer
let client: RedisClient
let prefixes = 0
const closers: Array<() => Promise<void>> = []
const sockets: ClientSocket[] = []

beforeAll(async () => {
  redis = await RedisServer.start()
  client = createClient({ url: redis.url })
  await client.connect()
})
afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.disconnect()
  for (const close of closers.splice(0)) await close()
})
afterAll(async () => {
  await client?.close()
  await redis?.stop()
})

async function start(header: string, maxAge = 3_600_000, rotateGrace = 0) {
  const sessions = session({
    backend: redisBackend({ client, prefix: `hdr${++prefixes}:` }),
    secret: 'k',
    resave: false,
    saveUninitialized: false,
    header,
    cookie: { maxAge },
    timeout: 5_000,
    rotateGrace,
  })
  const auth = testPassport()
  const app = express()
  app.use(express.json())
  app.use(sessions)
  app.use(auth.session())
  app.post('/login', auth.authenticate('local'), (req, res) => res.json({ sid: req.sessionID }))
  app.get('/me', (req, res) => {
    if (!req.user) return res.status(401).json({ sid: req.sessionID })
    res.json({ user: req.user, sid: req.sessionID })
  })
  app.put('/note', (req, res) => {
    ;(req.session as unknown as Data).note = 'n'
    res.json({})
  })
  app.post('/rotate', (req, res, next) => {
    req.session.rotate((error) => (error ? next(error) : res.json({ sid: req.sessionID })))
  })
  app.post('/logout', (req, res, next) => {
    req.session.destroy((error) => (error ? next(error) : res.sendStatus(204)))
  })
  app.use((error: Error & { status?: number }, _q: Request, res: Response, _n: NextFunction) => {
    res.status(error.status ?? 500).json({ message: error.message })
  })
  const server: HttpServer = app.listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  const io = new Server(server)
  const binding = await shareSession(io, { session: sessions, store: sessions.store })
  io.on('connection', (socket) => socket.emit('welcome', {}))
  closers.push(async () => {
    await binding.close()
    io.close()
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return { url, sessions }
}

/** A client with no cookie jar: it keeps what the response header says, and sends it back. */
class HeaderClient {
  token: string | undefined
  constructor(
    readonly base: string,
    readonly header: string,
  ) {}

  async request(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ) {
    const sent: Record<string, string> = { ...headers }
    if (this.token !== undefined && !(this.header in sent)) {
      sent[this.header] = this.header === 'authorization' ? `Bearer ${this.token}` : this.token
    }
    if (body !== undefined) sent['content-type'] = 'application/json'
    const response = await fetch(this.base + path, {
      method,
      headers: sent,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
    const value = response.headers.get(this.header)
    if (value !== null) {
      this.token = this.header === 'authorization' ? value.replace(/^Bearer /, '') : value
      if (value === '') this.token = undefined
    }
    const text = await response.text()
    return {
      status: response.status,
      value,
      exposed: response.headers.get('access-control-expose-headers'),
      body: (text ? JSON.parse(text) : undefined) as Data,
    }
  }

  login(user: string) {
    return this.request('POST', '/login', { username: user, password: 'pw' })
  }
}

const sidOf = (token: string | undefined) => (token ?? '').slice(2, (token ?? '').lastIndexOf('.'))

describe('header sessions', () => {
  for (const header of ['x-session-id', 'authorization']) {
    it(`${header}: a client without cookies logs in, is served, and logs out`, async () => {
      const { url } = await start(header)
      const api = new HeaderClient(url, header)
      const login = await api.login('alice')
      expect(login.status).toBe(200)
      expect(api.token).toMatch(/^s:[\w-]+\.[\w+/]+$/)
      if (header === 'authorization') expect(login.value).toMatch(/^Bearer s:/)
      expect(login.exposed).toBe(header)
      expect(sidOf(api.token)).toBe(login.body.sid)

      const me = await api.request('GET', '/me')
      expect(me.status).toBe(200)
      expect(me.body).toEqual({ user: { id: 'alice' }, sid: login.body.sid })
      // Nothing changed: nothing sent, as with the cookie.
      expect(me.value).toBeNull()

      const logout = await api.request('POST', '/logout')
      expect(logout.status).toBe(204)
      expect(logout.value).toBe('')
      expect(api.token).toBeUndefined()
    })
  }

  it('the header wins over a cookie of another session; without a header the cookie still works', async () => {
    const { url } = await start('x-session-id')
    const alice = new HeaderClient(url, 'x-session-id')
    const bob = new HeaderClient(url, 'x-session-id')
    await alice.login('alice')
    const bobLogin = await fetch(`${url}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'bob', password: 'pw' }),
    })
    const cookie = (bobLogin.headers.getSetCookie()[0] ?? '').split(';')[0] ?? ''
    expect(cookie).toMatch(/^connect\.sid=s%3A/)
    bob.token = undefined
    const both = await alice.request('GET', '/me', undefined, { cookie })
    expect(both.body.user).toEqual({ id: 'alice' })
    const cookieOnly = await fetch(`${url}/me`, { headers: { cookie } })
    expect(((await cookieOnly.json()) as Data).user).toEqual({ id: 'bob' })
    // A header that does not verify does not hide a good cookie.
    const badHeader = await fetch(`${url}/me`, { headers: { cookie, 'x-session-id': 's:x.y' } })
    expect(((await badHeader.json()) as Data).user).toEqual({ id: 'bob' })
  })

  it('a rotation sends the new token in the header; the old token is refused', async () => {
    const { url } = await start('authorization')
    const api = new HeaderClient(url, 'authorization')
    await api.login('gil')
    const old = api.token as string
    const rotated = await api.request('POST', '/rotate')
    expect(rotated.status).toBe(200)
    expect(rotated.value).toBe(`Bearer ${api.token}`)
    expect(sidOf(api.token)).toBe(rotated.body.sid)
    expect(api.token).not.toBe(old)
    expect((await api.request('GET', '/me')).body.user).toEqual({ id: 'gil' })
    const replay = await api.request('GET', '/me', undefined, { authorization: `Bearer ${old}` })
    expect(replay.status).toBe(401)
  })

  it('revocation and expiry cut a header client off', async () => {
    const { url, sessions } = await start('x-session-id', 1_500)
    const api = new HeaderClient(url, 'x-session-id')
    await api.login('carol')
    expect((await api.request('GET', '/me')).status).toBe(200)
    await sessions.store.revokeUserSessions('carol')
    expect((await api.request('GET', '/me')).status).toBe(401)

    const other = new HeaderClient(url, 'x-session-id')
    await other.login('carol')
    await new Promise((resolve) => setTimeout(resolve, 1_700))
    expect((await other.request('GET', '/me')).status).toBe(401)
  })

  it('bad header values are no session, never an error', async () => {
    const { url } = await start('authorization')
    const api = new HeaderClient(url, 'authorization')
    await api.login('dave')
    const good = api.token as string
    const forged = `s:${sidOf(good)}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`
    const values = [
      '',
      'Bearer',
      'Bearer ',
      `Basic ${good}`,
      good, // no scheme
      `Bearer ${forged}`,
      `Bearer ${sidOf(good)}`, // unsigned
      `Bearer ${good} extra`,
      `Bearer %E0%A4%A`, // not decodable
      `Bearer ${'x'.repeat(8_000)}`,
      'Bearer s:.',
    ]
    for (const value of values) {
      const response = await api.request('GET', '/me', undefined, { authorization: value })
      expect(response.status, value.slice(0, 40)).toBe(401)
    }
    // Case and spacing of the scheme do not matter; the token copied from the cookie (URI-encoded) is accepted.
    for (const value of [
      `bearer ${good}`,
      `BEARER   ${good}`,
      `Bearer ${encodeURIComponent(good)}`,
    ]) {
      expect((await api.request('GET', '/me', undefined, { authorization: value })).status).toBe(
        200,
      )
    }
  })

  it('a repeated header is no session, not a 500 (raw HTTP)', async () => {
    const { url } = await start('x-session-id')
    const api = new HeaderClient(url, 'x-session-id')
    await api.login('erin')
    const { port } = new URL(url)
    const token = api.token as string
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = createConnection(Number(port), '127.0.0.1', () => {
        socket.write(
          `GET /me HTTP/1.1\r\nHost: x\r\nX-Session-Id: ${token}\r\nX-Session-Id: ${token}\r\nConnection: close\r\n\r\n`,
        )
      })
      let text = ''
      socket.on('data', (chunk) => {
        text += chunk.toString()
      })
      socket.on('end', () => resolve(text))
      socket.on('error', reject)
    })
    const status = Number(answer.split(' ')[1])
    expect(status).toBe(401)
  })

  it('an invalid header option is refused at start-up with a coded error', () => {
    for (const header of ['', 'x session', 'cookie', 'Set-Cookie', 42]) {
      expect(() => session({ secret: 'k', header: header as string })).toThrow(
        expect.objectContaining({ code: 'SESSIONMESH_INVALID_OPTION' }),
      )
    }
  })
})

describe('header sessions on socket.io (handshake auth.session)', () => {
  it('connects with the token alone, is refused with a bad one, and is closed on revocation', async () => {
    const { url, sessions } = await start('x-session-id')
    const api = new HeaderClient(url, 'x-session-id')
    await api.login('fay')
    const open = (auth: Record<string, unknown>) => {
      const socket = connect(url, { transports: ['websocket'], reconnection: false, auth })
      sockets.push(socket)
      return socket
    }
    for (const bad of ['nope', `s:${sidOf(api.token)}.forged`, 42, '']) {
      expect(await refused(open({ session: bad }))).toBe('unauthorized')
    }
    const socket = open({ session: api.token })
    await connected(socket)
    const bearer = open({ session: `Bearer ${api.token}` })
    await connected(bearer)
    const closed = closedByServer(socket)
    await sessions.store.revokeSession(sidOf(api.token))
    expect((await closed).reason).toBe('revoked/io server disconnect')
    expect((await api.request('GET', '/me')).status).toBe(401)
    // The revoked token no longer opens a socket.
    expect(await refused(open({ session: api.token }))).toBe('unauthorized')
  })

  it('a rotation moves the sockets to the new id (same user) instead of closing them; without a grace window they close', async () => {
    for (const grace of [5_000, 0]) {
      const { url, sessions } = await start('x-session-id', 3_600_000, grace)
      const api = new HeaderClient(url, 'x-session-id')
      await api.login('hal')
      const socket = connect(url, {
        transports: ['websocket'],
        reconnection: false,
        auth: { session: api.token },
      })
      sockets.push(socket)
      await connected(socket)
      const closed = closedByServer(socket)
      const rotated = await api.request('POST', '/rotate')
      expect(rotated.status).toBe(200)
      if (grace === 0) {
        expect((await closed).reason).toBe('revoked/io server disconnect')
        continue
      }
      const early = await Promise.race([
        closed.then(() => 'closed'),
        new Promise((resolve) => setTimeout(resolve, 500, 'open')),
      ])
      expect(early).toBe('open')
      // Now bound to the new id: revoking that one closes it.
      await sessions.store.revokeSession(String(rotated.body.sid))
      expect((await closed).reason).toBe('revoked/io server disconnect')
    }
  })
})
