// The demo's chat: socket.io sharing the HTTP session through sessionmesh, with
// messages crossing nodes through the Redis streams adapter (default) or the
// classic pub/sub one.

import { createAdapter as createClassicAdapter } from '@socket.io/redis-adapter'
import { createAdapter } from '@socket.io/redis-streams-adapter'
import { createClient } from 'redis'
import { parseRedisUrl } from 'sessionmesh/redis'
import { guardPublish, shareSession, socketUser } from 'sessionmesh/socket.io'
import { Server } from 'socket.io'
import { ioredisFor } from './redis.js'

/** Longest chat message, in characters. */
const MAX_TEXT = 500

/**
 * Attaches the chat to a node's HTTP server. Only logged-in sessions may connect;
 * a client emits `chat` `{ text }` and every logged-in socket on every node receives
 * `chat` `{ from, text, node, at }`. On connection each socket is told `welcome`
 * `{ user, node }`.
 *
 * The adapter is chosen for reliability: the streams adapter reads a Redis stream
 * from its last offset, so it picks up again after Redis restarts, where the
 * pub/sub adapter drops what was published while it was reconnecting. It runs on
 * ioredis, which re-sends commands in flight when the connection drops, and
 * `guardPublish` keeps the adapter's unhandled heartbeat rejections during an
 * outage from ending the process.
 *
 * `adapter: 'classic'` uses `@socket.io/redis-adapter` (Redis pub/sub, the most
 * installed one) on node-redis instead: what is published while Redis is away is
 * lost for the other nodes (docs/adapters.md measures how much).
 *
 * @param {object} options
 * @param {import('node:http').Server} options.server
 * @param {import('sessionmesh/socket.io').SessionMiddleware} options.sessionMiddleware
 * @param {import('sessionmesh').SessionStore} options.store
 * @param {string} options.nodeId
 * @param {string} options.redisUrl
 * @param {import('pino').Logger} options.logger
 * @param {'streams' | 'classic'} [options.adapter] default streams
 */
export async function attachChat(options) {
  const { nodeId, logger } = options
  const adapter = options.adapter ?? 'streams'
  if (adapter !== 'streams' && adapter !== 'classic') {
    throw new Error(`SESSIONMESH_ADAPTER must be streams or classic, not ${adapter}`)
  }
  const { adapterFactory, disconnect } =
    adapter === 'classic'
      ? await classicAdapter(options.redisUrl)
      : streamsAdapter(options.redisUrl)
  const io = new Server(options.server, { adapter: adapterFactory })
  const binding = await shareSession(io, {
    session: options.sessionMiddleware,
    store: options.store,
  })

  io.on('connection', (socket) => {
    const user = socketUser(socket)
    socket.emit('welcome', { user, node: nodeId })
    socket.on('chat', (message) => {
      const text = typeof message?.text === 'string' ? message.text.trim().slice(0, MAX_TEXT) : ''
      if (!text) return
      io.emit('chat', { from: user, text, node: nodeId, at: Date.now() })
    })
  })
  logger.info({ adapter }, 'chat ready')

  return {
    io,
    /** Closes every connection without ending sessions: clients reconnect elsewhere. */
    disconnectAll() {
      io.engine.close()
    },
    async close() {
      await binding.close()
      io.close()
      await disconnect()
    },
  }
}

const retryDelay = (times) => Math.min(50 * 2 ** times, 1_000)

/** The streams adapter on ioredis (see {@link attachChat}). */
function streamsAdapter(redisUrl) {
  // On a cluster, an ioredis Cluster: the streams adapter reads its stream there.
  const client = guardPublish(ioredisFor(redisUrl))
  client.on('error', () => {}) // the session client already logs the outage
  return { adapterFactory: createAdapter(client), disconnect: () => client.disconnect() }
}

/**
 * The classic pub/sub adapter on node-redis: a publishing and a subscribed
 * connection. On a cluster or behind Sentinel, on ioredis (classic pub/sub reaches
 * every node of a cluster).
 */
async function classicAdapter(redisUrl) {
  if (parseRedisUrl(redisUrl).kind !== 'standalone') {
    const pub = guardPublish(ioredisFor(redisUrl))
    const sub = pub.duplicate()
    for (const client of [pub, sub]) client.on('error', () => {})
    return {
      adapterFactory: createClassicAdapter(pub, sub),
      // quit(), not disconnect(): the adapter's last UNSUBSCRIBE may be in flight;
      // bounded, since Redis may be gone.
      disconnect: async () => {
        const closed = Promise.allSettled([pub.quit(), sub.quit()])
        await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 1_000).unref())])
        pub.disconnect()
        sub.disconnect()
      },
    }
  }
  const pub = guardPublish(
    createClient({ url: redisUrl, socket: { reconnectStrategy: retryDelay } }),
  )
  const sub = pub.duplicate()
  for (const client of [pub, sub]) client.on('error', () => {})
  await Promise.all([pub.connect(), sub.connect()])
  return {
    adapterFactory: createClassicAdapter(pub, sub),
    // Gracefully while Redis answers: the adapter's last UNSUBSCRIBE is still in
    // flight, and destroy() would reject it with nobody to catch it.
    disconnect: async () => {
      const closed = Promise.allSettled([pub.close(), sub.close()])
      await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 1_000).unref())])
      for (const client of [pub, sub]) if (client.isOpen) client.destroy()
    },
  }
}
