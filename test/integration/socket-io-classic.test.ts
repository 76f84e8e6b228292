import { createAdapter } from '@socket.io/redis-adapter'
import { Redis } from 'ioredis'
import { createClient } from 'redis'
import { SessionStore } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'
import { guardPublish, shareSession, socketUser } from 'sessionmesh/socket.io'
import { Server } from 'socket.io'
import { type Socket as ClientSocket, io as connect } from 'socket.io-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Client, startApp } from '../support/express-app.js'
import { RedisServer } from '../support/redis-server.js'

// The binding with the classic socket.io Redis adapter (@socket.io/redis-adapter,
// pub/sub), on node-redis and on ioredis: two nodes in one process, each with its
// own clients, store, app and socket.io server.

let redis: RedisServer
const closers: Array<() => Promise<void>> = []
const sockets: ClientSocket[] = []

type Library = 'node-redis' | 'ioredis'

async function adapterClients(library: Library) {
  if (library === 'ioredis') {
    const pub = guardPublish(new Redis(redis.url))
    const sub = pub.duplicate()
    // quit(), not disconnect(): the adapter's last UNSUBSCRIBE is still in flight,
    // and disconnect() would reject it with nobody to catch it.
    return {
      pub,
      sub,
      close: async () => void (await Promise.allSettled([pub.quit(), sub.quit()])),
    }
  }
  const pub = guardPublish(createClient({ url: redis.url }))
  const sub = pub.duplicate()
  await Promise.all([pub.connect(), sub.connect()])
  // close(), not destroy(): the adapter's last UNSUBSCRIBE is still in flight.
  return { pub, sub, close: async () => void (await Promise.all([pub.close(), sub.close()])) }
}

async function startNode(name: string, library: Library) {
  const client = await createClient({ url: redis.url }).connect()
  const store = new SessionStore({
    backend: redisBackend({ client, prefix: `classic-${library}:` }),
  })
  const app = await startApp(store)
  const { pub, sub, close } = await adapterClients(library)
  const io = new Server(app.server, { adapter: createAdapter(pub, sub) })
  const binding = await shareSession(io, { session: app.sessionMiddleware, store })
  io.on('connection', (socket) => {
    socket.on('chat', (text: string) =>
      io.emit('chat', { from: socketUser(socket), text, node: name }),
    )
  })
  closers.push(async () => {
    await binding.close()
    io.close()
    await app.close()
    await close()
    client.destroy()
  })
  return { url: app.url }
}

function open(url: string, browser: Client): Promise<ClientSocket> {
  const socket = connect(url, {
    transports: ['websocket'],
    reconnection: false,
    extraHeaders: browser.cookie ? { cookie: browser.cookie } : {},
  })
  sockets.push(socket)
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket))
    socket.once('connect_error', reject)
  })
}

beforeAll(async () => {
  redis = await RedisServer.start()
})
afterAll(async () => {
  for (const socket of sockets) socket.disconnect()
  for (const close of closers) await close()
  await redis?.stop()
})

for (const library of ['node-redis', 'ioredis'] as const) {
  describe(`socket.io with the classic Redis adapter on ${library}`, () => {
    it('broadcasts across nodes, and a logout on one node closes the session’s sockets on the other', async () => {
      const [a, b] = [await startNode('a', library), await startNode('b', library)]
      const alice = new Client(a.url)
      await alice.login(`alice-${library}`)
      const onA = await open(a.url, alice)
      const onB = await open(b.url, alice)
      const received = new Promise((resolve) => onB.once('chat', resolve))
      onA.emit('chat', 'hello over pub/sub')
      expect(await received).toEqual({
        from: `alice-${library}`,
        text: 'hello over pub/sub',
        node: 'a',
      })

      const ended = new Promise((resolve) => onB.once('session:ended', resolve))
      expect((await alice.request('POST', '/logout')).status).toBe(204)
      // passport's logout saves the session without its user, then destroys it:
      // whichever of the two events node b handles first names the reason.
      expect(['revoked', 'logged-out']).toContain(((await ended) as { reason: string }).reason)
    })
  })
}
