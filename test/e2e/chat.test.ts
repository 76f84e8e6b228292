import { io as connect, type Socket } from 'socket.io-client'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { Browser, Cluster, freePortRange, isAlive } from '../support/cluster.js'
import { RedisServer } from '../support/redis-server.js'

// socket.io through a real nginx in front of `sessionmesh up` with 4 nodes, using
// the real socket.io-client over WebSocket. Redis is the test's own, so that it
// can be killed and restarted under the running cluster.

let redis: RedisServer
let cluster: Cluster
const sockets: Socket[] = []

interface ChatMessage {
  from: string
  text: string
  node: string
}

/** A socket.io client carrying the browser's cookies; `welcome` says which node it reached. */
function open(base: string, browser?: Browser): Socket & { node: Promise<string> } {
  const cookie = browser ? [...browser.cookies].map(([n, v]) => `${n}=${v}`).join('; ') : ''
  const socket = connect(base, {
    transports: ['websocket'],
    reconnection: false,
    extraHeaders: cookie ? { cookie } : {},
  }) as Socket & { node: Promise<string> }
  socket.node = new Promise((resolve, reject) => {
    socket.once('welcome', (hello: { node: string }) => resolve(hello.node))
    socket.once('connect_error', reject)
  })
  socket.node.catch(() => {}) // a refused socket is awaited through refused(), not here
  sockets.push(socket)
  return socket
}

function refused(socket: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    socket.once('connect', () => reject(new Error('connected, but should have been refused')))
    socket.once('connect_error', (error) => resolve(error.message))
  })
}

/** Resolves when the server closes the socket: the reason it gave, and when. */
function closedByServer(socket: Socket): Promise<{ reason: string; at: number }> {
  return new Promise((resolve) => {
    let reason = 'none'
    socket.once('session:ended', (event: { reason: string }) => {
      reason = event.reason
    })
    socket.once('disconnect', (why) => resolve({ reason: `${reason}/${why}`, at: Date.now() }))
  })
}

async function loggedIn(user: string, agent = 'e2e-browser'): Promise<Browser> {
  const browser = new Browser(cluster.base, agent)
  const answer = await browser.login(user)
  // A refused login names the node and what its store said, not just the status.
  const unavailable = cluster.logs().filter((line) => line.msg === 'session store unavailable')
  expect(answer.status, JSON.stringify({ answer, unavailable: unavailable.slice(-5) })).toBe(200)
  return browser
}

beforeAll(async () => {
  // Durable, so that the restart below is a restart, not a wipe: sessions survive it.
  redis = await RedisServer.start({ durable: true })
  cluster = await Cluster.start(['--nodes', '4', '--redis', redis.url], await freePortRange(5))
})
afterEach(() => {
  for (const socket of sockets.splice(0)) socket.disconnect()
})
afterAll(async () => {
  await cluster?.stop()
  await redis?.stop()
})

describe('chat over socket.io behind nginx, 4 nodes', () => {
  it('refuses a connection without a session cookie, or without a login', async () => {
    expect(await refused(open(cluster.base))).toBe('unauthorized')
    const anonymous = new Browser(cluster.base)
    expect((await anonymous.login('alice', 'wrong')).status).toBe(401)
    expect(await refused(open(cluster.base, anonymous))).toBe('unauthorized')
  })

  it('20 clients spread over the nodes all receive every chat message', async () => {
    const users = ['alice', 'bob', 'carol']
    const browsers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => loggedIn(users[i % 3] ?? 'alice')),
    )
    const clients = browsers.map((browser) => open(cluster.base, browser))
    const nodes = await Promise.all(clients.map((client) => client.node))
    expect(new Set(nodes).size).toBeGreaterThan(1)

    const inboxes = clients.map(() => [] as ChatMessage[])
    clients.forEach((client, i) => {
      client.on('chat', (m: ChatMessage) => inboxes[i]?.push(m))
    })
    const senders = [0, 7, 13]
    for (const i of senders) clients[i]?.emit('chat', { text: `hello from ${i}` })
    await expect
      .poll(() => inboxes.map((inbox) => inbox.length), { timeout: 5000 })
      .toEqual(clients.map(() => senders.length))
    for (const inbox of inboxes) {
      expect(inbox.map((m) => m.text).sort()).toEqual(senders.map((i) => `hello from ${i}`).sort())
    }
    const first = inboxes[0]?.find((m) => m.text === 'hello from 7')
    expect(first).toMatchObject({ from: users[7 % 3], node: nodes[7] })
  })

  it('logging out in HTTP disconnects that session’s sockets on every node within 1 s', async () => {
    const browser = await loggedIn('alice')
    const mine = Array.from({ length: 8 }, () => open(cluster.base, browser))
    const nodes = await Promise.all(mine.map((socket) => socket.node))
    expect(new Set(nodes).size).toBeGreaterThan(1)
    const bystander = open(cluster.base, await loggedIn('alice'))
    await bystander.node

    const closed = mine.map(closedByServer)
    const started = Date.now()
    expect((await browser.request('POST', '/api/logout')).status).toBe(204)
    for (const { reason, at } of await Promise.all(closed)) {
      expect(reason).toBe('revoked/io server disconnect')
      expect(at - started).toBeLessThan(1000)
    }
    expect(bystander.connected).toBe(true) // another session of the same user stays
    expect(await refused(open(cluster.base, browser))).toBe('unauthorized')
  })

  it('revoking a session from another device disconnects it everywhere, and it cannot reconnect', async () => {
    const laptop = await loggedIn('carol', 'Laptop')
    const phone = await loggedIn('carol', 'Phone')
    const phoneSockets = Array.from({ length: 6 }, () => open(cluster.base, phone))
    const laptopSocket = open(cluster.base, laptop)
    await Promise.all([...phoneSockets, laptopSocket].map((socket) => socket.node))

    const closed = phoneSockets.map(closedByServer)
    const started = Date.now()
    const revoked = await laptop.request('POST', '/api/sessions/revoke-others')
    expect(revoked.status).toBeLessThan(300)
    for (const { reason, at } of await Promise.all(closed)) {
      expect(reason).toBe('revoked/io server disconnect')
      expect(at - started).toBeLessThan(1000)
    }
    expect(laptopSocket.connected).toBe(true)
    expect(await refused(open(cluster.base, phone))).toBe('unauthorized')
    expect((await phone.request('GET', '/api/me')).status).toBe(401)
  })

  it('chat resumes across nodes after Redis restarts, without restarting the app', async () => {
    const browsers = await Promise.all(['alice', 'bob', 'carol', 'bob'].map((u) => loggedIn(u)))
    const clients = browsers.map((browser) => open(cluster.base, browser))
    const nodes = await Promise.all(clients.map((client) => client.node))
    const [sender, ...others] = clients
    const receiver = others.find((_, i) => nodes[i + 1] !== nodes[0])
    expect(receiver).toBeDefined()
    const pids = cluster.nodes.map((node) => node.pid)

    await redis.kill()
    await redis.start() // with its data
    const texts: string[] = []
    receiver?.on('chat', (m: ChatMessage) => texts.push(m.text))
    let n = 0
    await expect
      .poll(
        () => {
          sender?.emit('chat', { text: `after restart ${n++}` })
          return texts.length
        },
        { timeout: 15_000, interval: 250 },
      )
      .toBeGreaterThan(0)
    expect(pids.every(isAlive)).toBe(true)
    expect(cluster.process.exitCode).toBeNull()
    // The sessions survived the restart, so the sockets stay open once the bus is back.
    await new Promise((resolve) => setTimeout(resolve, 600))
    expect(clients.every((client) => client.connected)).toBe(true)
    expect((await browsers[0]?.request('GET', '/api/me'))?.status).toBe(200)
  })
})

describe('session expiry over socket.io', () => {
  let short: Cluster
  beforeAll(async () => {
    short = await Cluster.start(['--nodes', '2'], await freePortRange(3), {
      SESSION_MAX_AGE_MS: '2000',
    })
  })
  afterAll(async () => {
    await short?.stop()
  })

  it('an expired session’s sockets are disconnected', async () => {
    const browser = new Browser(short.base)
    expect((await browser.login('bob')).status).toBe(200)
    const loggedInAt = Date.now()
    const socket = open(short.base, browser)
    await socket.node
    const { reason, at } = await closedByServer(socket)
    expect(reason).toBe('expired/io server disconnect')
    expect(at - loggedInAt).toBeGreaterThanOrEqual(1900)
    expect(at - loggedInAt).toBeLessThan(2000 + 1000)
    expect((await browser.request('GET', '/api/me')).status).toBe(401)
  })
})
