import { Redis } from 'ioredis'
import { createClient } from 'redis'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll } from 'vitest'
import { backendContract } from '../support/contract.js'
import { redisCliDump } from '../support/dump.js'
import { RedisServer } from '../support/redis-server.js'

let server: RedisServer
beforeAll(async () => {
  server = await RedisServer.start()
})
afterAll(async () => {
  await server.stop()
})

// A corrupt record: the session key holds a string (as connect-redis writes them),
// or a hash without its metadata.
backendContract('redis via node-redis', async () => {
  const client = await createClient({ url: server.url }).connect()
  const prefix = 'nr:'
  return {
    backend: redisBackend({ client, prefix }),
    dump: () => redisCliDump(server.url, prefix),
    corrupt: async (sid) => {
      await client.del(`${prefix}s:${sid}`)
      await client.set(`${prefix}s:${sid}`, '{"cookie":{}}')
    },
    cleanup: async () => {
      client.destroy()
    },
  }
})

backendContract('redis via ioredis', async () => {
  const client = new Redis(server.url)
  const prefix = 'io:'
  return {
    backend: redisBackend({ client, prefix }),
    dump: () => redisCliDump(server.url, prefix),
    corrupt: async (sid) => {
      await client.hdel(`${prefix}s:${sid}`, 'c', 'e')
    },
    cleanup: async () => {
      client.disconnect()
    },
  }
})
