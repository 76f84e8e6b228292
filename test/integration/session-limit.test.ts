import { createClient } from 'redis'
import { type SessionLifecycleEvent, SessionStore, type SessionStoreOptions } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'
import { type SessionBinding, shareSession } from 'sessionmesh/socket.io'
import { Server } from 'socket.io'
import { io as connect, type Socket } from 'socket.io-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Client, startApp, type TestApp } from '../support/express-app.js'
import { RedisServer } from '../support/redis-server.js'

// maxSessionsPerUser over a private redis-server: two nodes wired as two
// processes would be (own clients, stores and apps), sockets on the second.

let redis: RedisServer
const cleanups: Array<() => Promise<void>> = []

async function node(prefix: string, options: SessionStoreOptions = {}) {
  const client = createClient({ url: redis.url })
  client.on('error', () => {})
  await client.connect()
  const store = new SessionStore({ ...options, backend: redisBackend({ client, prefix }) })
  const events: SessionLifecycleEvent[] = []
  store.on('session', (event: SessionLifecycleEvent) => events.push(event))
  const app: TestApp = await startApp(store)
  cleanups.push(async () => {
    await app.close()
    await store.close()
    client.destroy()
  })
  return { store, app, events }
}

async function login(app: TestApp, user: string): Promise<Client> {
  const client = new Client(app.url)
  expect((await client.login(user)).status).toBe(200)
  return client
}

beforeAll(async () => {
  redis = await RedisServer.start()
})
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup()
  await redis?.stop()
})

describe('maxSessionsPerUser', () => {
  it("'revoke-oldest' (the default): a third login ends the oldest session, and its socket on another node", async () => {
    const limited = await node('limit:', { maxSessionsPerUser: 2 })
    const other = await node('limit:')
    const io = new Server(other.app.server)
    const binding: SessionBinding = await shareSession(io, {
      session: other.app.sessionMiddleware,
      store: other.store,
    })
    cleanups.push(async () => {
      await binding.close()
      io.disconnectSockets(true)
    })

    const oldest = await login(limited.app, 'ann')
    const middle = await login(limited.app, 'ann')
    const socket: Socket = connect(other.app.url, {
      transports: ['websocket'],
      reconnection: false,
      extraHeaders: { cookie: oldest.cookie },
    })
    cleanups.push(async () => {
      socket.disconnect()
    })
    await new Promise((resolve, reject) => {
      socket.once('connect', () => resolve(undefined))
      socket.once('connect_error', reject)
    })
    const ended = new Promise<{ reason: string; at: number }>((resolve) => {
      socket.once('session:ended', (event: { reason: string }) =>
        resolve({ reason: event.reason, at: Date.now() }),
      )
    })

    const started = Date.now()
    const newest = await login(limited.app, 'ann')
    const { reason, at } = await ended
    expect(reason).toBe('revoked')
    // The oldest session's socket, on the other node, closes within a second of the login.
    expect(at - started).toBeLessThan(1000)
    expect((await oldest.request('GET', '/me')).status).toBe(401)
    expect((await middle.request('GET', '/me')).status).toBe(200)
    expect((await newest.request('GET', '/me')).status).toBe(200)
    const listed = await other.store.listUserSessions('ann')
    expect(listed.map((entry) => entry.id).sort()).toEqual([middle.sid, newest.sid].sort())
    expect(limited.events).toContainEqual({
      type: 'destroyed',
      sid: oldest.sid,
      reason: 'limit',
      origin: 'local',
    })
  })

  it("'refuse': a login beyond the limit fails with SESSIONMESH_SESSION_LIMIT and changes nothing", async () => {
    const strict = await node('refuse:', { maxSessionsPerUser: 2, onSessionLimit: 'refuse' })
    const first = await login(strict.app, 'bob')
    const second = await login(strict.app, 'bob')
    const third = new Client(strict.app.url)
    const refused = await third.login('bob')
    expect(refused.status).toBe(409)
    expect(await refused.json()).toMatchObject({ code: 'SESSIONMESH_SESSION_LIMIT' })
    expect((await first.request('GET', '/me')).status).toBe(200)
    expect((await second.request('GET', '/me')).status).toBe(200)
    expect((await strict.store.listUserSessions('bob')).length).toBe(2)
    // Another user is not affected; after a logout, bob may log in again.
    await login(strict.app, 'cid')
    expect((await first.request('POST', '/logout')).status).toBe(204)
    await login(strict.app, 'bob')
  })

  it('holds under concurrent logins: of 10 at once, as many pass as the limit allows (atomic in the write)', async () => {
    const strict = await node('burst-refuse:', { maxSessionsPerUser: 2, onSessionLimit: 'refuse' })
    const statuses = await Promise.all(
      Array.from(
        { length: 10 },
        async () => (await new Client(strict.app.url).login('dee')).status,
      ),
    )
    expect(statuses.filter((status) => status === 200)).toHaveLength(2)
    expect(statuses.filter((status) => status === 409)).toHaveLength(8)
    expect(await strict.store.listUserSessions('dee')).toHaveLength(2)

    const revoking = await node('burst-revoke:', { maxSessionsPerUser: 2 })
    const clients = Array.from({ length: 10 }, () => new Client(revoking.app.url))
    const answers = await Promise.all(
      clients.map(async (client) => (await client.login('eve')).status),
    )
    expect(answers.every((status) => status === 200)).toBe(true)
    const kept = (await revoking.store.listUserSessions('eve')).map((entry) => entry.id)
    expect(kept).toHaveLength(2)
    const limited = revoking.events.filter((e) => e.type === 'destroyed' && e.reason === 'limit')
    expect(limited).toHaveLength(8)
  })

  it('refuses a limit that is not a positive integer, and an unknown policy', () => {
    expect(() => new SessionStore({ maxSessionsPerUser: 0 })).toThrow(/positive integer/)
    expect(
      () =>
        new SessionStore({
          maxSessionsPerUser: 2,
          onSessionLimit: 'drop' as unknown as 'refuse',
        }),
    ).toThrow(/onSessionLimit must be/)
  })
})
