import { createAdapter } from '@socket.io/redis-streams-adapter'
import { Redis } from 'ioredis'
import { createClient } from 'redis'
import { SessionStore } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'
import {
  guardPublish,
  readSession,
  type SessionBinding,
  shareSession,
  socketUser,
  updateSession,
} from 'sessionmesh/socket.io'
import { Server } from 'socket.io'
import { type Socket as ClientSocket, io as connect } from 'socket.io-client'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { Client, startApp } from '../support/express-app.js'
import { RedisServer } from '../support/redis-server.js'
import { closedByServer, connected, refused } from '../support/sockets.js'

// Two nodes in one process, as two processes would be wired: each with its own
// Redis clients, session store, HTTP app and socket.io server, sharing one private
// redis-server; broadcast through the Redis streams adapter.

interface Node {
  name: string
  url: string
  store: SessionStore
  close(): Promise<void>
}

let redis: RedisServer
const ADAPTER_BLOCK_MS = 200

/** Stops a redis-server once the readers of adapters closed just before have let go of it. */
async function stopAfterAdapters(server: RedisServer): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ADAPTER_BLOCK_MS * 2))
  await server.stop()
}
const cleanups: Array<() => Promise<void>> = []
const sockets: ClientSocket[] = []

async function startNode(name: string, cookieMaxAge = 3_600_000, server = redis): Promise<Node> {
  const client = createClient({ url: server.url, socket: { reconnectStrategy: () => 100 } })
  // The adapter on ioredis: it re-sends what was in flight when Redis went away.
  const adapterClient = guardPublish(new Redis(server.url, { retryStrategy: () => 100 }))
  client.on('error', () => {})
  adapterClient.on('error', () => {})
  await client.connect()
  const store = new SessionStore({
    backend: redisBackend({ client, prefix: `sio${cookieMaxAge}:` }),
  })
  const app = await startApp(store, { maxAge: cookieMaxAge })
  // A short blocking read, so that a closed adapter's reader is gone soon after.
  const io = new Server(app.server, {
    adapter: createAdapter(adapterClient, { blockTimeInMs: ADAPTER_BLOCK_MS }),
  })
  const binding: SessionBinding = await shareSession(io, { session: app.sessionMiddleware, store })
  io.on('connection', (socket) => {
    socket.on('chat', (text: string) => {
      io.emit('chat', { from: socketUser(socket), text, node: name })
    })
    socket.on('note', async (value: string, ack: (ok: boolean) => void) => {
      ack(await updateSession(socket, (session) => void Object.assign(session, { note: value })))
    })
    socket.on('read', async (key: string, ack: (value: unknown) => void) => {
      ack((await readSession(socket))?.[key])
    })
  })
  const close = async () => {
    await binding.close()
    io.close()
    await app.close()
    client.destroy()
    adapterClient.disconnect()
  }
  cleanups.push(close)
  return { name, url: app.url, store, close }
}

/** A socket.io client carrying a browser's cookie, or none. */
function open(node: Node, browser?: Client): ClientSocket {
  const socket = connect(node.url, {
    transports: ['websocket'],
    reconnection: false,
    extraHeaders: browser?.cookie ? { cookie: browser.cookie } : {},
  })
  sockets.push(socket)
  return socket
}

beforeAll(async () => {
  redis = await RedisServer.start()
})
afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.disconnect()
  for (const close of cleanups.splice(0)) await close()
})
afterAll(async () => {
  await stopAfterAdapters(redis)
})

describe('socket.io shares the HTTP session', () => {
  it('refuses a socket without a session, or with a session that is not logged in', async () => {
    const a = await startNode('a')
    expect(await refused(open(a))).toBe('unauthorized')
    const anonymous = new Client(a.url)
    await anonymous.request('PUT', '/kv/x', 1) // a session cookie, but no login
    expect(await refused(open(a, anonymous))).toBe('unauthorized')
  })

  it('broadcasts chat to logged-in sockets on every node', async () => {
    const [a, b] = [await startNode('a'), await startNode('b')]
    const alice = new Client(a.url)
    await alice.login('alice')
    const bob = new Client(b.url)
    await bob.login('bob')
    const onA = open(a, alice)
    const onB = open(b, bob)
    await Promise.all([connected(onA), connected(onB)])
    const received = new Promise((resolve) => onB.once('chat', resolve))
    onA.emit('chat', 'hello from a')
    expect(await received).toEqual({ from: 'alice', text: 'hello from a', node: 'a' })
  })

  it('gives handlers the current session and writes their changes as deltas', async () => {
    const [a, b] = [await startNode('a'), await startNode('b')]
    const carol = new Client(a.url)
    await carol.login('carol')
    const socket = open(b, carol)
    await connected(socket)
    // written over HTTP after the handshake: the socket must see it
    await carol.request('PUT', '/kv/theme', 'dark')
    expect(await socket.emitWithAck('read', 'theme')).toBe('dark')
    expect(await socket.emitWithAck('note', 'from the socket')).toBe(true)
    expect(await (await carol.request('GET', '/kv')).json()).toEqual({
      theme: 'dark',
      note: 'from the socket',
    })
  })

  it('logging out over HTTP closes that session’s sockets on every node within 1 s', async () => {
    const [a, b] = [await startNode('a'), await startNode('b')]
    const dan = new Client(a.url)
    await dan.login('dan')
    const onA = open(a, dan)
    const onB = open(b, dan)
    await Promise.all([connected(onA), connected(onB)])
    const closed = [closedByServer(onA), closedByServer(onB)]
    const started = Date.now()
    expect((await dan.request('POST', '/logout')).status).toBe(204)
    for (const { reason, at } of await Promise.all(closed)) {
      // passport's logout saves the session without its user, then destroys it:
      // whichever of the two events a node handles first names the reason.
      expect(['revoked/io server disconnect', 'logged-out/io server disconnect']).toContain(reason)
      expect(at - started).toBeLessThan(1000)
    }
    expect(await refused(open(b, dan))).toBe('unauthorized')
  })

  it('revoking another device closes only that device’s sockets, on every node', async () => {
    const [a, b] = [await startNode('a'), await startNode('b')]
    const laptop = new Client(a.url)
    const phone = new Client(b.url)
    await laptop.login('erin')
    await phone.login('erin')
    const phoneSockets = [open(a, phone), open(b, phone)]
    const laptopSocket = open(b, laptop)
    await Promise.all([...phoneSockets, laptopSocket].map(connected))
    const closed = phoneSockets.map(closedByServer)
    const started = Date.now()
    await a.store.revokeUserSessions('erin', { except: laptop.sid })
    for (const { reason, at } of await Promise.all(closed)) {
      expect(reason).toBe('revoked/io server disconnect')
      expect(at - started).toBeLessThan(1000)
    }
    expect(laptopSocket.connected).toBe(true)
    expect(await refused(open(a, phone))).toBe('unauthorized')
  })

  it('an idle session’s expiry closes its sockets; activity on a socket keeps it alive', async () => {
    const a = await startNode('a', 1500)
    const idle = new Client(a.url)
    const busy = new Client(a.url)
    await idle.login('fay')
    await busy.login('gus')
    const idleSocket = open(a, idle)
    const busySocket = open(a, busy)
    await Promise.all([connected(idleSocket), connected(busySocket)])
    const loggedIn = Date.now()
    const closed = closedByServer(idleSocket)
    const ticker = setInterval(() => busySocket.emit('chat', 'still here'), 100)
    try {
      const { reason, at } = await closed
      expect(reason).toBe('expired/io server disconnect')
      expect(at - loggedIn).toBeGreaterThanOrEqual(1400)
      expect(at - loggedIn).toBeLessThan(1500 + 1000)
      await new Promise((resolve) => setTimeout(resolve, 1000)) // well past the 1.5 s lifetime
      expect(busySocket.connected).toBe(true)
      expect((await busy.request('GET', '/me')).status).toBe(200)
    } finally {
      clearInterval(ticker)
    }
  })

  it('chat resumes across nodes after Redis restarts, without restarting the app', async () => {
    // Its own server: adapters closed by earlier tests keep a blocking read open
    // for a few seconds, and this test must not kill it under them.
    const own = await RedisServer.start({ durable: true })
    const [a, b] = [await startNode('a', 3_600_000, own), await startNode('b', 3_600_000, own)]
    cleanups.push(() => stopAfterAdapters(own)) // after the nodes' own cleanups
    const hal = new Client(a.url)
    await hal.login('hal')
    const onA = open(a, hal)
    const onB = open(b, hal)
    await Promise.all([connected(onA), connected(onB)])
    await own.kill()
    await own.start() // with its data: sessions survive, so the sockets stay
    const texts: string[] = []
    onB.on('chat', (message: { text: string }) => texts.push(message.text))
    // Keep saying something until it comes through: the clients reconnect on their own.
    let n = 0
    await expect
      .poll(
        () => {
          onA.emit('chat', `after restart ${n++}`)
          return texts.length
        },
        { timeout: 10_000, interval: 200 },
      )
      .toBeGreaterThan(0)
    await new Promise((resolve) => setTimeout(resolve, 600)) // past the bus's re-check
    expect(onA.connected && onB.connected).toBe(true)
  })

  it('sessions lost with Redis (restarted empty) end their sockets with reason "ended"', async () => {
    const own = await RedisServer.start()
    const a = await startNode('a', 3_600_000, own)
    cleanups.push(() => stopAfterAdapters(own))
    const ivy = new Client(a.url)
    await ivy.login('ivy')
    const socket = open(a, ivy)
    await connected(socket)
    // A read through the store: its reply comes after the check the server made on
    // connection, so that check is done before Redis goes away.
    await socket.emitWithAck('read', 'cookie')
    const closed = closedByServer(socket)
    await own.kill()
    await own.start() // empty: the session is gone, though nobody destroyed it
    expect((await closed).reason).toBe('ended/io server disconnect')
  })
})
