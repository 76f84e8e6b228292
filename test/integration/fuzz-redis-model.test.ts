import { createClient } from 'redis'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll, describe, it } from 'vitest'
import { modelFuzz } from '../support/model-fuzz.js'
import { RedisServer } from '../support/redis-server.js'

// The model-based fuzz of the backend contract on a private redis-server: two
// clients, two backends, two stores, as two processes would have.

let server: RedisServer
const clients: Array<Awaited<ReturnType<typeof connect>>> = []

async function connect() {
  const client = createClient({ url: server.url })
  client.on('error', () => {})
  return client.connect()
}

beforeAll(async () => {
  server = await RedisServer.start()
  clients.push(await connect(), await connect())
})
afterAll(async () => {
  for (const client of clients) client.destroy()
  await server?.stop()
})

describe('fuzz: the backend contract against a model, redis backend', () => {
  it('random set/unset/touch/destroy/revoke through two processes agree with the model after every step', async () => {
    const [one, two] = clients.map((client) => redisBackend({ client, prefix: 'fuzz:' }))
    if (!one || !two) throw new Error('clients missing')
    await modelFuzz(() => [one, two], 150)
  }, 60_000)
})
