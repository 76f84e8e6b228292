#!/usr/bin/env node
// Runs one node of the demo: `node server.js`, configured by the environment that
// `sessionmesh up` (or pm2) sets: SESSIONMESH_NODE_ID, PORT, REDIS_URL (redis://,
// redis+cluster:// or redis+sentinel://, see redis.js), SESSION_SECRET;
// optionally HOST, DEMO_PASSWORD, SESSION_MAX_AGE_MS (idle session lifetime), LOG_LEVEL,
// SESSIONMESH_ADAPTER = streams (default) or classic (the chat's socket.io adapter),
// TRUST_PROXY (the nginx address(es) whose X-Forwarded-* count, comma-separated;
// default loopback), SESSIONMESH_TIMEOUT_MS (longest wait for one store call) and
// SESSIONMESH_SESSION_HEADER (e.g. x-session-id or authorization: clients without
// cookies send the session token there, and the chat accepts auth: { session }),
// SESSIONMESH_ENCRYPTION_KEYS (encryption at rest: id:base64key,… current key first).
// Where sessions live: SESSIONMESH_STORE = redis (default), postgres, mysql, tiered
// or memcached (servers in MEMCACHED_SERVERS, default 127.0.0.1:11211),
// with SESSIONMESH_DATABASE_URL (else DATABASE_URL, MYSQL_URL, PG*), SESSIONMESH_TABLE,
// and for tiered SESSIONMESH_DURABLE = postgres (default) or mysql. The table must
// exist: `sessionmesh migrate` (or `sessionmesh up`, which runs it) creates it.

import { randomBytes } from 'node:crypto'
import { realpathSync } from 'node:fs'
import { createServer } from 'node:http'
import { Server as NetServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import pino from 'pino'
import { collectDefaultMetrics, Registry } from 'prom-client'
import { parseEncryptionKeys, SessionStore } from 'sessionmesh'
import { memcachedBackend } from 'sessionmesh/memcached'
import { openSqlBackend } from 'sessionmesh/migrate'
import { redisBackend } from 'sessionmesh/redis'
import { tieredBackend } from 'sessionmesh/tiered'
import { createApp, demoUsers } from './app.js'
import { attachChat } from './chat.js'
import { connectSessionClient } from './redis.js'

/**
 * nginx keeps idle upstream connections for 60 s (`keepalive_timeout` in the
 * generated config). The node keeps them longer, so that nginx, not the node,
 * closes an idle one: a node closing it could race a request nginx is sending on it.
 */
const KEEP_ALIVE_MS = 65_000
/** How long a draining node keeps idle connections open for nginx to stop using them. */
const DRAIN_GRACE_MS = 1_000
/** Longest wait for in-flight requests at shutdown before the process exits anyway. */
const SHUTDOWN_TIMEOUT_MS = 10_000
/**
 * How long after listening a node under pm2 waits to report ready. nginx counts its
 * 1 s fail_timeout in whole seconds, so it may skip a node that refused a connection
 * for up to 2 s after it is back; half a second more for the first request to reach it.
 */
const READY_HOLD_MS = 2_500
/** Longest wait for the chat and the store to close once requests are done. */
const CLEANUP_TIMEOUT_MS = 2_000
/** The stores whose writes go to a database, and their default store timeout. */
const SQL_STORES = ['postgres', 'mysql', 'tiered']
const SQL_TIMEOUT_MS = 1_000
/** The stores a node can keep sessions in. */
const STORES = ['redis', 'postgres', 'mysql', 'tiered', 'memcached']

/**
 * The session backend for `store`, over the node's Redis client and, for the SQL
 * stores, a pool of its own; `close()` ends that pool.
 *
 * @param {{ store: string, client: import('sessionmesh/redis').RedisLike, database?: object }} options
 */
async function openBackend({ store, client, database = {} }) {
  if (store === 'redis') return { backend: redisBackend({ client }), close: async () => {} }
  if (store === 'memcached') {
    const backend = memcachedBackend({ servers: database.memcached ?? '127.0.0.1:11211' })
    return { backend, close: () => backend.close() }
  }
  const kind = store === 'tiered' ? (database.durable ?? 'postgres') : store
  const sql = await openSqlBackend({
    store: kind,
    ...(database.url ? { url: database.url } : {}),
    ...(database.table ? { table: database.table } : {}),
  })
  if (store !== 'tiered') return sql
  return {
    backend: tieredBackend({ cache: redisBackend({ client }), durable: sql.backend }),
    close: sql.close,
  }
}

/**
 * Starts one node: connects to Redis, builds the app and listens. SIGTERM and SIGINT
 * drain it: it stops accepting connections at once (nginx moves on to other nodes),
 * answers what it already has with `Connection: close`, then exits.
 *
 * @param {object} options
 * @param {number} options.port
 * @param {string} [options.host] default 127.0.0.1: only nginx on this host talks to the node
 * @param {string} options.nodeId
 * @param {string} options.redisUrl
 * @param {string} [options.store] redis (default), postgres, mysql, tiered or memcached
 * @param {{ url?: string, table?: string, durable?: string, memcached?: string }} [options.database]
 *   for the SQL stores; `memcached`: the servers for that store
 * @param {string} options.secret
 * @param {import('pino').Logger} options.logger
 * @param {string} [options.password] the demo accounts' password
 * @param {number} [options.sessionMaxAge] idle lifetime of a session in ms
 * @param {'streams' | 'classic'} [options.adapter] the chat's socket.io Redis adapter
 * @param {string} [options.trustProxy] Express's `trust proxy`: nginx's address(es); default loopback
 * @param {number} [options.timeout] the store's longest wait for one backend call, in ms
 * @param {string} [options.sessionHeader] the request header that may carry the session token
 * @param {import('sessionmesh').EncryptionOptions} [options.encryption] encryption at rest
 */
export async function startNode(options) {
  const { logger, nodeId } = options
  const store = options.store ?? 'redis'
  if (!STORES.includes(store)) {
    throw new Error(`SESSIONMESH_STORE must be one of ${STORES.join(', ')}, not ${store}`)
  }
  let redisDown = false
  // As the cache of the tiered backend, a command queued during an outage could
  // land after newer writes to the database: fail it at once, and the request is
  // served by the database instead.
  const redis = await connectSessionClient(options.redisUrl, {
    noOfflineQueue: store === 'tiered',
    onError: (error) => {
      if (!redisDown) logger.warn({ err: error.message }, 'redis connection lost')
      redisDown = true
    },
    onReady: () => {
      if (redisDown) logger.info('redis connection back')
      redisDown = false
    },
  })
  const client = redis.client
  logger.info({ redis: redis.kind }, 'redis connected')

  const sessions = await openBackend({ store, client, database: options.database })
  // Prometheus metrics of this node: sessionmesh_* and the process's own.
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  const sessionStore = new SessionStore({
    backend: sessions.backend,
    metrics: { registry },
    ...(options.encryption ? { encryption: options.encryption } : {}),
    // A database write waits for a pooled connection and the session's row lock:
    // concurrent writes to one session queue there, so the SQL stores get a second
    // where Redis gets the store's 300 ms default.
    ...(options.timeout
      ? { timeout: options.timeout }
      : SQL_STORES.includes(store)
        ? { timeout: SQL_TIMEOUT_MS }
        : {}),
  })
  logger.info({ store, backend: sessions.backend.kind }, 'session store ready')
  let draining = false
  const { app, sessionMiddleware } = createApp({
    store: sessionStore,
    nodeId,
    logger,
    secret: options.secret,
    users: demoUsers(options.password),
    draining: () => draining,
    ...(options.trustProxy ? { trustProxy: options.trustProxy } : {}),
    ...(options.sessionMaxAge ? { sessionMaxAge: options.sessionMaxAge } : {}),
    ...(options.sessionHeader ? { sessionHeader: options.sessionHeader } : {}),
  })
  // Scraped on each node's own port; nginx (which sets X-Forwarded-For) does not pass it on.
  app.get('/metrics', async (req, res, next) => {
    if (req.headers['x-forwarded-for'] !== undefined) return next()
    res.type(registry.contentType).send(await registry.metrics())
  })
  const server = createServer(app)
  server.keepAliveTimeout = KEEP_ALIVE_MS
  server.headersTimeout = KEEP_ALIVE_MS + 1_000
  // Before listening: the first socket.io request may come as soon as nginx sees the port.
  // The chat closes a revoked session's sockets on every node when the backend
  // publishes the revocation; MySQL publishes nothing, so with it the demo serves
  // the HTTP app alone rather than a chat that would keep revoked users connected.
  // Memcached publishes nothing either, but the binding re-reads its sessions instead.
  const chat =
    sessions.backend.subscribe || store === 'memcached'
      ? await attachChat({
          server,
          sessionMiddleware,
          store: sessionStore,
          nodeId,
          redisUrl: options.redisUrl,
          logger,
          ...(options.adapter ? { adapter: options.adapter } : {}),
        })
      : noChat(logger, store)
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port, options.host ?? '127.0.0.1', () => resolve(undefined))
  })
  logger.info({ port: options.port }, 'listening')

  let closing
  const close = () => {
    closing ??= new Promise((resolve) => {
      draining = true
      // http.Server#close would also drop idle keepalive connections at once, and
      // nginx may be writing a request on one right now: close only the listener.
      NetServer.prototype.close.call(server, () => resolve(undefined))
      // Open WebSockets would keep the listener from closing: end them now, and
      // their clients reconnect through nginx to another node.
      chat.disconnectAll()
      setTimeout(() => server.closeIdleConnections(), DRAIN_GRACE_MS).unref()
      setTimeout(() => server.closeAllConnections(), SHUTDOWN_TIMEOUT_MS).unref()
    }).then(async () => {
      // With the store down, closing the chat's adapter or a pool can wait for it
      // forever: give them a bounded time, then let go.
      const cleanup = (async () => {
        await chat.close()
        await sessionStore.close()
        await sessions.close()
      })()
      const bound = new Promise((resolve) =>
        setTimeout(resolve, CLEANUP_TIMEOUT_MS, 'timeout').unref(),
      )
      const outcome = await Promise.race([
        cleanup.then(
          () => 'closed',
          (error) => error,
        ),
        bound,
      ])
      if (outcome !== 'closed')
        logger.warn({ err: String(outcome) }, 'closing the store did not finish; exiting anyway')
      // Nothing is in flight any more; close() would wait for a Redis that may be gone.
      redis.close()
    })
    return closing
  }
  return { server, store: sessionStore, client, app, chat, close }
}

/** The chat's place when the backend has no change feed: nothing to attach or close. */
function noChat(logger, store) {
  logger.warn(
    { store },
    'chat off: this backend publishes no session events, so a revoked session could keep its sockets; use --store tiered (Redis over the database) for the chat',
  )
  return { io: undefined, disconnectAll() {}, async close() {} }
}

async function main() {
  const nodeId = process.env.SESSIONMESH_NODE_ID ?? `node-${process.pid}`
  const logger = pino({
    level: process.env.LOG_LEVEL ?? 'info',
    base: { node: nodeId, pid: process.pid },
  })
  const port = Number(process.env.PORT ?? 3000)
  let secret = process.env.SESSION_SECRET
  if (!secret) {
    // Fine for one process; nodes behind one nginx must share a secret.
    secret = randomBytes(32).toString('base64url')
    logger.warn('SESSION_SECRET is not set: using a random one, valid for this process only')
  }
  const node = await startNode({
    port,
    nodeId,
    secret,
    logger,
    redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    store: process.env.SESSIONMESH_STORE || 'redis',
    database: {
      ...(process.env.SESSIONMESH_DATABASE_URL
        ? { url: process.env.SESSIONMESH_DATABASE_URL }
        : {}),
      ...(process.env.SESSIONMESH_TABLE ? { table: process.env.SESSIONMESH_TABLE } : {}),
      ...(process.env.SESSIONMESH_DURABLE ? { durable: process.env.SESSIONMESH_DURABLE } : {}),
      ...(process.env.MEMCACHED_SERVERS ? { memcached: process.env.MEMCACHED_SERVERS } : {}),
    },
    ...(process.env.HOST ? { host: process.env.HOST } : {}),
    ...(process.env.SESSIONMESH_ADAPTER ? { adapter: process.env.SESSIONMESH_ADAPTER } : {}),
    ...(process.env.DEMO_PASSWORD ? { password: process.env.DEMO_PASSWORD } : {}),
    ...(process.env.SESSION_MAX_AGE_MS
      ? { sessionMaxAge: Number(process.env.SESSION_MAX_AGE_MS) }
      : {}),
    // nginx on another host: only its address may say who the client is and
    // that it used https (which makes the session cookie Secure).
    ...(process.env.TRUST_PROXY ? { trustProxy: process.env.TRUST_PROXY } : {}),
    ...(process.env.SESSIONMESH_TIMEOUT_MS
      ? { timeout: Number(process.env.SESSIONMESH_TIMEOUT_MS) }
      : {}),
    ...(process.env.SESSIONMESH_SESSION_HEADER
      ? { sessionHeader: process.env.SESSIONMESH_SESSION_HEADER }
      : {}),
    ...(process.env.SESSIONMESH_ENCRYPTION_KEYS
      ? { encryption: parseEncryptionKeys(process.env.SESSIONMESH_ENCRYPTION_KEYS) }
      : {}),
  })
  // pm2 (`wait_ready` in the file `sessionmesh pm2` prints) counts the node as up,
  // and `pm2 reload` takes down the next node, once this says ready. nginx still
  // avoids a node for up to 2 s after it refused a connection while it was down:
  // say ready only after that, so that nginx is never left with no node.
  if (process.env.pm_id !== undefined && process.send) {
    setTimeout(() => process.send?.('ready'), READY_HOLD_MS)
  }
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.once(signal, async () => {
      logger.info({ signal }, 'draining')
      await node.close()
      logger.info('stopped')
      process.exit(0)
    })
  }
}

// Run as a program, not imported by a test. Under pm2, argv[1] is pm2's own
// container script, which imports this file; pm2 names the app's file in pm_exec_path.
const entry = process.env.pm_exec_path ?? process.argv[1]
if (entry && realpathSync(entry) === fileURLToPath(import.meta.url)) {
  main().catch((error) => {
    console.error(error)
    process.exit(1)
  })
}
