import { Redis } from 'ioredis'
import { createSentinel } from 'redis'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll } from 'vitest'
import { backendContract } from '../support/contract.js'
import { SentinelGroup } from '../support/redis-topologies.js'

// The backend contract on a primary found through Sentinel (a primary, a replica
// and three sentinels, private to this file), through both client libraries.

let group: SentinelGroup
beforeAll(async () => {
  group = await SentinelGroup.start()
}, 60_000)
afterAll(async () => {
  await group?.stop()
})

backendContract('redis sentinel via node-redis', async () => {
  const client = createSentinel({ name: group.name, sentinelRootNodes: group.sentinels })
  client.on('error', () => {})
  await client.connect()
  const prefix = 'nrs:'
  return {
    backend: redisBackend({ client, prefix }),
    corrupt: async (sid) => {
      await client.del(`${prefix}s:${sid}`)
      await client.set(`${prefix}s:${sid}`, '{"cookie":{}}')
    },
    cleanup: async () => {
      await client.destroy()
    },
  }
})

backendContract('redis sentinel via ioredis', async () => {
  const client = new Redis({ sentinels: group.sentinels, name: group.name })
  const prefix = 'ios:'
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
