import type { AddressInfo } from 'node:net'
import express from 'express'
import { Registry } from 'prom-client'
import { createClient } from 'redis'
import { SessionStore } from 'sessionmesh'
import { session } from 'sessionmesh/express'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Browser } from '../support/cluster.js'
import { Client, startApp, type TestApp } from '../support/express-app.js'
import { RedisServer } from '../support/redis-server.js'

// The sessionmesh_* metrics, scraped from a prom-client registry as Prometheus
// would, against a private redis-server.

let redis: RedisServer
let client: ReturnType<typeof createClient>
let app: TestApp
const registry = new Registry()
let store: SessionStore
const cleanups: Array<() => Promise<void>> = []

/** One sample of the scraped text exposition, 0 when it is absent. */
async function sample(from: Registry, name: string, labels: Record<string, string> = {}) {
  const text = await from.metrics()
  const wanted = Object.entries(labels).map(([key, value]) => `${key}="${value}"`)
  for (const line of text.split('\n')) {
    const match = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!match || match[1] !== name) continue
    const have = (match[2] ?? '').split(',')
    if (wanted.every((pair) => have.includes(pair))) return Number(match[3])
  }
  return 0
}

beforeAll(async () => {
  redis = await RedisServer.start()
  client = createClient({ url: redis.url })
  client.on('error', () => {})
  await client.connect()
  store = new SessionStore({
    backend: redisBackend({ client, prefix: 'metrics:' }),
    metrics: { registry },
    maxBytes: 2_000,
  })
  app = await startApp(store)
})
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup()
  await app?.close()
  await store?.close()
  client?.destroy()
  await redis?.stop()
})

describe('metrics: { registry }', () => {
  it('counts logins, logouts and revocations, and times the backend calls', async () => {
    const created = await sample(registry, 'sessionmesh_sessions_created_total')
    const sets = await sample(registry, 'sessionmesh_backend_call_duration_seconds_count', {
      operation: 'set',
      outcome: 'ok',
    })
    const browsers = [new Client(app.url), new Client(app.url), new Client(app.url)]
    for (const browser of browsers) expect((await browser.login('ann')).status).toBe(200)
    expect(await sample(registry, 'sessionmesh_sessions_created_total')).toBe(created + 3)
    expect(
      await sample(registry, 'sessionmesh_backend_call_duration_seconds_count', {
        operation: 'set',
        outcome: 'ok',
      }),
    ).toBeGreaterThanOrEqual(sets + 3)

    const [first, second] = browsers
    expect((await first?.request('POST', '/logout'))?.status).toBe(204)
    // passport's logout regenerates (destroying the stored session), then the app
    // destroys the fresh id, which was never stored: nothing to count for it.
    expect(
      await sample(registry, 'sessionmesh_sessions_destroyed_total', { reason: 'regenerated' }),
    ).toBe(1)
    expect(
      await sample(registry, 'sessionmesh_sessions_destroyed_total', { reason: 'logout' }),
    ).toBe(0)
    await store.revokeSession(second?.sid ?? '')
    await store.revokeUserSessions('ann')
    expect(
      await sample(registry, 'sessionmesh_sessions_destroyed_total', { reason: 'revoked' }),
    ).toBe(2)
    expect(
      await sample(registry, 'sessionmesh_backend_call_duration_seconds_count', {
        operation: 'revokeUserSessions',
        outcome: 'ok',
      }),
    ).toBe(1)
  })

  it('counts refused writes: too large, and gone after a revocation', async () => {
    const browser = new Client(app.url)
    expect((await browser.login('bea')).status).toBe(200)
    expect((await browser.request('PUT', '/kv/big', 'x'.repeat(3_000))).status).toBe(500)
    expect(
      await sample(registry, 'sessionmesh_refused_writes_total', { reason: 'too_large' }),
    ).toBe(1)

    const loaded = await store.get(browser.sid)
    expect(loaded).not.toBeNull()
    await store.revokeSession(browser.sid)
    await store.set(browser.sid, { ...loaded, more: 1 })
    // A whole-session save of an id with a tombstone is refused too: a create must not resurrect it.
    expect(await sample(registry, 'sessionmesh_refused_writes_total', { reason: 'gone' })).toBe(1)
  })

  it('shows the breaker open while the backend is down, and the failed calls', async () => {
    const own = new Registry()
    const doomed = await RedisServer.start()
    const doomedClient = createClient({ url: doomed.url, socket: { reconnectStrategy: () => 50 } })
    doomedClient.on('error', () => {})
    await doomedClient.connect()
    const failing = new SessionStore({
      backend: redisBackend({ client: doomedClient }),
      metrics: { registry: own },
      timeout: 200,
      retryAfter: 60_000,
    })
    cleanups.push(async () => {
      await failing.close()
      doomedClient.destroy()
    })
    expect(await failing.get('some-session-id-here')).toBeNull()
    expect(await sample(own, 'sessionmesh_breaker_open', { backend: 'redis' })).toBe(0)
    await doomed.stop()
    await expect(failing.get('some-session-id-here')).rejects.toMatchObject({
      code: 'SESSIONMESH_STORE_UNAVAILABLE',
    })
    expect(await sample(own, 'sessionmesh_breaker_open', { backend: 'redis' })).toBe(1)
    expect(
      await sample(own, 'sessionmesh_backend_call_duration_seconds_count', {
        operation: 'get',
        outcome: 'unavailable',
      }),
    ).toBe(1)
    // Nothing of it reached the first registry.
    expect(await sample(registry, 'sessionmesh_breaker_open', { backend: 'redis' })).toBe(0)
  })

  it('counts near cache hits, misses and evictions of the sessionmesh/express middleware', async () => {
    const own = new Registry()
    // Two nodes, each with its near cache, over one Redis and one registry.
    const node = async () => {
      const middleware = session({
        backend: redisBackend({ client, prefix: 'metrics-near:' }),
        secret: 'test secret',
        name: 'sid',
        nearCache: true,
        metrics: { registry: own },
      })
      await middleware.ready
      const server = express()
        .use(middleware)
        .get('/n', (req, res) => {
          const data = req.session as unknown as { n?: number }
          if (req.query.write) data.n = (data.n ?? 0) + 1
          res.json({ n: data.n ?? 0 })
        })
        .listen(0, '127.0.0.1')
      await new Promise((resolve) => server.once('listening', resolve))
      cleanups.push(async () => {
        await middleware.close()
        await new Promise((resolve) => server.close(resolve))
      })
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    }
    const [one, two] = [await node(), await node()]
    const browser = new Browser(one)
    // The same browser (its cookies so far) sending to one node or the other.
    const at = (base: string) => {
      const copy = new Browser(base)
      for (const [name, value] of browser.cookies) copy.cookies.set(name, value)
      return copy
    }
    const count = (name: string) => sample(own, `sessionmesh_near_cache_${name}_total`)

    expect((await browser.request('GET', '/n?write=1')).body).toEqual({ n: 1 })
    const before = { hits: await count('hits'), misses: await count('misses') }
    expect((await at(two).request('GET', '/n')).body).toEqual({ n: 1 })
    expect(await count('misses')).toBe(before.misses + 1)
    for (let i = 0; i < 5; i++) expect((await at(two).request('GET', '/n')).body).toEqual({ n: 1 })
    expect(await count('hits')).toBe(before.hits + 5)

    // A write on node one evicts node two's copy, through the bus.
    const evictions = await count('evictions')
    expect((await at(one).request('GET', '/n?write=1')).body).toEqual({ n: 2 })
    await expect.poll(() => count('evictions')).toBeGreaterThan(evictions)
  })
})
