// The demo's chat: socket.io sharing the HTTP session through sessionmesh, with
// messages crossing nodes through the Redis streams adapter.

import { createAdapter } from '@socket.io/redis-streams-adapter'
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
 * @param {object} options
 * @param {import('node:http').Server} options.server
 * @param {import('sessionmesh/socket.io').SessionMiddleware} options.sessionMiddleware
 * @param {import('sessionmesh').SessionStore} options.store
 * @param {string} options.nodeId
 * @param {string} options.redisUrl
 * @param {import('pino').Logger} options.logger
 */
export async function attachChat(options) {
  const { nodeId, logger } = options
  // On a cluster, an ioredis Cluster: the streams adapter reads its stream there.
  const adapterClient = guardPublish(ioredisFor(options.redisUrl))
  adapterClient.on('error', () => {}) // the session client already logs the outage
  const io = new Server(options.server, { adapter: createAdapter(adapterClient) })
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
  logger.info('chat ready')

  return {
    io,
    /** Closes every connection without ending sessions: clients reconnect elsewhere. */
    disconnectAll() {
      io.engine.close()
    },
    async close() {
      await binding.close()
      io.close()
      adapterClient.disconnect()
    },
  }
}
