import diagnostics from 'node:diagnostics_channel'
import { createClient } from 'redis'
import { type SessionLifecycleEvent, SessionStore } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'
import { shareSession } from 'sessionmesh/socket.io'
import { Server } from 'socket.io'
import { io as connect } from 'socket.io-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Client, startApp, type TestApp } from '../support/express-app.js'
import { RedisServer } from '../support/redis-server.js'

// Two nodes in one process, wired as two processes would be: each its own Redis
// client and store over one private redis-server, the first serving a real
// express-session + passport app.

let redis: RedisServer
let app: TestApp
const nodes: Array<{
  store: SessionStore
  events: SessionLifecycleEvent[]
  close(): Promise<void>
}> = []

async function node() {
  const client = createClient({ url: redis.url })
  client.on('error', () => {})
  await client.connect()
  const store = new SessionStore({ backend: redisBackend({ client, prefix: 'life:' }) })
  const events: SessionLifecycleEvent[] = []
  store.on('session', (event: SessionLifecycleEvent) => events.push(event))
  const entry = {
    store,
    events,
    close: async () => {
      await store.close()
      client.destroy()
    },
  }
  nodes.push(entry)
  return entry
}

let a: Awaited<ReturnType<typeof node>>
let b: Awaited<ReturnType<typeof node>>

beforeAll(async () => {
  redis = await RedisServer.start()
  a = await node()
  b = await node()
  app = await startApp(a.store)
  // b hears the bus once subscribed: a's destroys reaching it prove it.
  const heard = Date.now() + 10_000
  while (!b.events.some((event) => event.sid === 'warm-up-session-id')) {
    if (Date.now() > heard) throw new Error('the second node never heard the bus')
    await a.store.destroy('warm-up-session-id')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
})
afterAll(async () => {
  await app?.close()
  for (const entry of nodes) await entry.close()
  await redis?.stop()
})

function clear() {
  for (const entry of nodes) entry.events.length = 0
}

async function login(user: string): Promise<{ client: Client; sid: string }> {
  const client = new Client(app.url)
  const response = await client.login(user)
  expect(response.status).toBe(200)
  const { sid } = (await response.json()) as { sid: string }
  expect(sid).toBe(client.sid)
  return { client, sid }
}

describe('session lifecycle events', () => {
  it('a login is `created` (with the user) on the node that made it, and not on the others', async () => {
    clear()
    const { sid } = await login('ann')
    expect(a.events.filter((event) => event.type === 'created')).toEqual([
      { type: 'created', sid, userId: 'ann', origin: 'local' },
    ])
    // passport regenerates the anonymous session at login; it was never stored, so
    // nothing is destroyed and nothing is reported (nor written: issue 11 item 9).
    expect(a.events.filter((e) => e.type === 'destroyed')).toEqual([])
    expect(b.events.filter((event) => event.type === 'created')).toEqual([])
  })

  it('a destroy is `destroyed`/logout locally, and the same reason from the bus on another node', async () => {
    const { sid } = await login('ann')
    clear()
    await a.store.destroy(sid)
    expect(a.events).toEqual([{ type: 'destroyed', sid, reason: 'logout', origin: 'local' }])
    await expect
      .poll(() => b.events.filter((event) => event.sid === sid))
      .toEqual([{ type: 'destroyed', sid, reason: 'logout', origin: 'bus' }])
  })

  it('passport’s logout, which regenerates first, ends the logged-in session as `regenerated`', async () => {
    const { client, sid } = await login('ann')
    clear()
    expect((await client.request('POST', '/logout')).status).toBe(204)
    // The fresh id passport made is then destroyed by req.session.destroy(), but it
    // was never stored: nothing to destroy, nothing reported.
    expect(a.events).toEqual([{ type: 'destroyed', sid, reason: 'regenerated', origin: 'local' }])
    await expect.poll(() => b.events.map((event) => event.sid)).toContain(sid)
  })

  it('a revocation is `revoked`, one event per session, the kept one untouched', async () => {
    const kept = await login('bea')
    const others = [await login('bea'), await login('bea')]
    const single = await login('bea')
    clear()
    await b.store.revokeSession(single.sid)
    const ended = await b.store.revokeUserSessions('bea', { except: kept.sid })
    expect(ended.sort()).toEqual(others.map((entry) => entry.sid).sort())
    // (Filtered: the bus may still be delivering the previous test's destroys.)
    const local = b.events
      .filter((event) => event.origin === 'local')
      .map((event) => [event.type, event.sid, 'reason' in event && event.reason])
    expect(local.sort()).toEqual(
      [single, ...others].map((entry) => ['destroyed', entry.sid, 'revoked']).sort(),
    )
    const targets = [single, ...others].map((entry) => entry.sid)
    const heard = () => a.events.filter((event) => targets.includes(event.sid))
    await expect
      .poll(() =>
        heard()
          .map((event) => event.sid)
          .sort(),
      )
      .toEqual(targets.sort())
    expect(heard().every((event) => event.origin === 'bus')).toBe(true)
    // The bus says why: the node that revoked told every other.
    expect(heard().every((event) => 'reason' in event && event.reason === 'revoked')).toBe(true)
    expect(a.events.some((event) => event.sid === kept.sid)).toBe(false)
  })

  it('regression: a node’s own destroy coming back on the bus is not reported twice', async () => {
    const { sid } = await login('cid')
    // b's destroy reaches a through the bus: once it has, b's own copy has arrived too.
    clear()
    await b.store.revokeSession(sid)
    await expect.poll(() => a.events.length).toBe(1)
    await a.store.destroy('another-marker-id')
    await expect.poll(() => b.events.some((e) => e.sid === 'another-marker-id')).toBe(true)
    expect(b.events.filter((event) => event.sid === sid)).toEqual([
      { type: 'destroyed', sid, reason: 'revoked', origin: 'local' },
    ])
  })

  it('publishes on diagnostics_channel sessionmesh:session with the session id redacted', async () => {
    const seen: Array<Record<string, unknown>> = []
    const listener = (message: unknown) => seen.push(message as Record<string, unknown>)
    diagnostics.subscribe('sessionmesh:session', listener)
    try {
      const { sid } = await login('dee')
      const created = seen.find((message) => message.type === 'created')
      expect(created).toMatchObject({ type: 'created', userId: 'dee', origin: 'local' })
      expect(created?.sid).toBe(`${sid.slice(0, 6)}…`)
      expect(JSON.stringify(seen)).not.toContain(sid)
    } finally {
      diagnostics.unsubscribe('sessionmesh:session', listener)
    }
  })

  it('an expiry the socket.io binding sees is `destroyed`/expired on that node', async () => {
    const client = createClient({ url: redis.url })
    client.on('error', () => {})
    await client.connect()
    const store = new SessionStore({ backend: redisBackend({ client, prefix: 'life-exp:' }) })
    const events: SessionLifecycleEvent[] = []
    store.on('session', (event: SessionLifecycleEvent) => events.push(event))
    const short = await startApp(store, { maxAge: 1_000 })
    const io = new Server(short.server)
    const binding = await shareSession(io, {
      session: short.sessionMiddleware,
      store,
      expiryCheckInterval: 100,
    })
    const browser = new Client(short.url)
    expect((await browser.login('eve')).status).toBe(200)
    const socket = connect(short.url, {
      transports: ['websocket'],
      reconnection: false,
      extraHeaders: { cookie: browser.cookie },
    })
    try {
      const ended = new Promise<string>((resolve) => {
        socket.once('session:ended', (event: { reason: string }) => resolve(event.reason))
      })
      expect(await ended).toBe('expired')
      expect(events).toContainEqual({
        type: 'destroyed',
        sid: browser.sid,
        reason: 'expired',
        origin: 'local',
      })
    } finally {
      socket.disconnect()
      await binding.close()
      io.disconnectSockets(true)
      await short.close()
      await store.close()
      client.destroy()
    }
  })
})
