import { Cluster } from 'ioredis'
import { createCluster } from 'redis'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll } from 'vitest'
import { backendContract } from '../support/contract.js'
import { startCluster } from '../support/redis-topologies.js'

// The backend contract on a real Redis Cluster of 3 primaries and 3 replicas,
// through both client libraries.

let cluster: Awaited<ReturnType<typeof startCluster>>
beforeAll(async () => {
  cluster = await startCluster()
}, 60_000)
afterAll(async () => {
  await cluster?.dispose()
})

const rootNodes = () => cluster.nodes.map((n) => ({ url: `redis://127.0.0.1:${n.port}` }))

backendContract('redis cluster via node-redis', async () => {
  const client = createCluster({ rootNodes: rootNodes() })
  client.on('error', () => {})
  await client.connect()
  const prefix = 'nrc:'
  return {
    backend: redisBackend({ client, prefix }),
    corrupt: async (sid) => {
      await client.del(`${prefix}s:${sid}`)
      await client.set(`${prefix}s:${sid}`, '{"cookie":{}}')
    },
    cleanup: async () => {
      client.destroy()
    },
  }
})

backendContract('redis cluster via ioredis', async () => {
  const client = new Cluster(cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })))
  const prefix = 'ioc:'
  return {
    backend: redisBackend({ client, prefix }),
    corrupt: async (sid) => {
      await client.hdel(`${prefix}s:${sid}`, 'c', 'e')
    },
    cleanup: async () => {
      client.disconnect()
    },
  }
})
