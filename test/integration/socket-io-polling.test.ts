import { SessionStore } from 'sessionmesh'
import { memcachedBackend } from 'sessionmesh/memcached'
import { type SessionBinding, shareSession } from 'sessionmesh/socket.io'
import { Server } from 'socket.io'
import { type Socket as ClientSocket, io as connect } from 'socket.io-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { RunningMemcached } from '../../packages/sessionmesh/src/cli/memcached.js'
import { Client, startApp, type TestApp } from '../support/express-app.js'
import { memcachedServer } from '../support/memcached-server.js'
import { closedByServer, connected } from '../support/sockets.js'

// Two nodes sharing sessions in Memcached, which publishes no session events: a
// revocation reaches the other node's sockets through the binding's re-check.

interface Node {
  app: TestApp
  store: SessionStore
  binding: SessionBinding
  io: Server
}

let memcached: RunningMemcached
const nodes: Node[] = []
const sockets: ClientSocket[] = []

async function startNode(): Promise<Node> {
  const store = new SessionStore({ backend: memcachedBackend({ servers: memcached.servers }) })
  const app = await startApp(store)
  const io = new Server(app.server)
  const binding = await shareSession(io, {
    session: app.sessionMiddleware,
    store,
    revocationCheckInterval: 200,
  })
  const node = { app, store, binding, io }
  nodes.push(node)
  return node
}

function open(node: Node, browser: Client): ClientSocket {
  const socket = connect(node.app.url, {
    transports: ['websocket'],
    reconnection: false,
    extraHeaders: browser.cookie ? { cookie: browser.cookie } : {},
  })
  sockets.push(socket)
  return socket
}

beforeAll(async () => {
  memcached = await memcachedServer()
})
afterAll(async () => {
  for (const socket of sockets) socket.disconnect()
  for (const node of nodes) {
    await node.binding.close()
    node.io.close()
    await node.app.close()
    await node.store.close()
  }
  await memcached?.stop()
})

describe('socket.io over a backend without session events (Memcached)', () => {
  it('a logout on one node closes the session’s sockets on the other by the re-check, not a push', async () => {
    const [a, b] = [await startNode(), await startNode()]
    const frank = new Client(a.app.url)
    await frank.login('frank')
    const grace = new Client(a.app.url)
    await grace.login('grace')
    const onB = open(b, frank)
    const bystander = open(b, grace)
    await Promise.all([connected(onB), connected(bystander)])
    const closed = closedByServer(onB)
    expect((await frank.request('POST', '/logout')).status).toBe(204)
    expect((await closed).reason).toBe('revoked/io server disconnect')
    // Another user's socket on the same node is left alone.
    expect(bystander.connected).toBe(true)
  })
})
