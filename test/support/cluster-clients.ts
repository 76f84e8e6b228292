import { Cluster, Redis } from 'ioredis'
import { createCluster, createSentinel } from 'redis'
import type { RedisLike } from 'sessionmesh/redis'
import type { RunningRedisCluster } from '../../packages/sessionmesh/src/cli/redis-cluster.js'
import type { SentinelGroup } from './redis-topologies.js'

/** A connected client and the way to close it. */
export interface TestClient {
  client: RedisLike
  close(): Promise<void>
}

export type Library = 'node-redis' | 'ioredis'

/**
 * A cluster client of `library`, set up as docs/redis-cluster.md says: ioredis
 * retries through a failover; node-redis gets a reconnect strategy and an error
 * listener.
 */
export async function clusterClient(
  library: Library,
  cluster: RunningRedisCluster,
): Promise<TestClient> {
  if (library === 'ioredis') {
    const client = new Cluster(
      cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })),
      { retryDelayOnFailover: 200, retryDelayOnClusterDown: 200 },
    )
    client.on('error', () => {})
    await new Promise<void>((resolve, reject) => {
      client.once('ready', () => resolve())
      client.once('error', reject)
    })
    return { client, close: async () => client.disconnect() }
  }
  const client = createCluster({
    rootNodes: cluster.nodes.map((n) => ({ url: `redis://127.0.0.1:${n.port}` })),
    defaults: {
      socket: { reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 500) },
    },
  })
  client.on('error', () => {})
  await client.connect()
  return { client, close: async () => client.destroy() }
}

/** A client of `library` on the primary the sentinels of `group` point at. */
export async function sentinelClient(library: Library, group: SentinelGroup): Promise<TestClient> {
  if (library === 'ioredis') {
    const client = new Redis({ sentinels: group.sentinels, name: group.name })
    client.on('error', () => {})
    return { client, close: async () => client.disconnect() }
  }
  const client = createSentinel({ name: group.name, sentinelRootNodes: group.sentinels })
  client.on('error', () => {})
  await client.connect()
  return { client, close: async () => client.destroy() }
}
