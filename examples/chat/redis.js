// Redis clients for the demo, from the REDIS_URL forms `sessionmesh up` passes:
// redis://H:P (one server), redis+cluster://H1:P1,H2:P2 (a cluster, from any of
// its nodes) and redis+sentinel://S1:P1,S2:P2/NAME (the primary behind Sentinel);
// rediss… for TLS. parseRedisUrl (sessionmesh/redis) reads them.

import { Cluster, Redis } from 'ioredis'
import { createClient } from 'redis'
import { parseRedisUrl } from 'sessionmesh/redis'

/** Backoff between reconnection attempts, capped at a second: Redis may come back at any time. */
const backoff = (attempt) => Math.min(50 * 2 ** attempt, 1_000)

/**
 * The client the session store uses. One server: node-redis, as the docs show.
 * A cluster or Sentinel: ioredis, which follows a failover by itself (it retries
 * through MOVED and CLUSTERDOWN, and asks the sentinels for the new primary);
 * docs/redis-cluster.md says why, and what node-redis needs instead.
 *
 * `noOfflineQueue`: fail commands at once while disconnected (the tiered backend's
 * cache must not apply a write late, after newer ones reached the database).
 *
 * @param {string} url
 * @param {{ noOfflineQueue?: boolean, onError?: (error: Error) => void, onReady?: () => void }} [options]
 * @returns {Promise<{ client: object, kind: string, close(): void }>}
 */
export async function connectSessionClient(url, options = {}) {
  const target = parseRedisUrl(url)
  if (target.kind === 'standalone') {
    const client = createClient({
      url,
      socket: { reconnectStrategy: backoff },
      ...(options.noOfflineQueue ? { disableOfflineQueue: true } : {}),
    })
    if (options.onError) client.on('error', options.onError)
    if (options.onReady) client.on('ready', options.onReady)
    await client.connect()
    return { client, kind: 'redis', close: () => client.destroy() }
  }
  const client = ioredisFor(url, options.noOfflineQueue ? { enableOfflineQueue: false } : {})
  if (options.onError) client.on('error', options.onError)
  if (options.onReady) client.on('ready', options.onReady)
  await new Promise((resolve, reject) => {
    client.once('ready', resolve)
    client.once('error', reject)
  })
  return { client, kind: target.kind, close: () => client.disconnect() }
}

/**
 * An ioredis client (`Redis` or `Cluster`) for any REDIS_URL form, as the chat's
 * socket.io adapter uses it.
 *
 * @param {string} url
 * @param {object} [extra] more ioredis options (for a cluster, per node)
 */
export function ioredisFor(url, extra = {}) {
  const target = parseRedisUrl(url)
  const retryStrategy = (times) => backoff(times)
  if (target.kind === 'standalone') return new Redis(url, { retryStrategy, ...extra })
  const auth = {
    ...(target.username ? { username: target.username } : {}),
    ...(target.password ? { password: target.password } : {}),
    ...(target.tls ? { tls: {} } : {}),
  }
  if (target.kind === 'cluster') {
    return new Cluster(target.nodes, {
      // While a shard fails over, retry instead of failing: the store's timeout
      // still turns a long wait into a 503.
      retryDelayOnFailover: 200,
      retryDelayOnClusterDown: 200,
      clusterRetryStrategy: retryStrategy,
      redisOptions: { ...auth, ...extra },
    })
  }
  return new Redis({
    sentinels: target.sentinels,
    name: target.name,
    sentinelRetryStrategy: retryStrategy,
    retryStrategy,
    // A primary cut off by a silent partition keeps this connection open, and
    // ioredis asks the sentinels again only when it closes: listen to every
    // sentinel's +switch-master and move at once (docs/deploy.md, the Sentinel
    // fleet test). A demotion closes it anyway: the sentinel that demotes a node
    // kills its client connections.
    failoverDetector: true,
    // Moving must not wait on the dead side: closing a connection nobody answers
    // waits disconnectTimeout (2 s by default) for its FIN, and ioredis asks the
    // sentinel that answered last first, the one cut off with the old primary,
    // whose connection attempt lasts connectTimeout (10 s by default).
    disconnectTimeout: 200,
    connectTimeout: 1_000,
    sentinelCommandTimeout: 1_000,
    ...auth,
    ...(target.tls ? { enableTLSForSentinelMode: true } : {}),
    ...extra,
  })
}
