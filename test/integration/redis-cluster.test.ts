import { SessionStore } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { clusterClient, type Library, type TestClient } from '../support/cluster-clients.js'
import { Client, startApp, type TestApp } from '../support/express-app.js'
import { command, primaryOf, startCluster } from '../support/redis-topologies.js'

// express-session and passport over SessionStore on a real Redis Cluster (3
// primaries, 3 replicas), through both client libraries: the store's promises,
// over HTTP, with every shard involved.

let cluster: Awaited<ReturnType<typeof startCluster>>
beforeAll(async () => {
  cluster = await startCluster()
}, 60_000)
afterAll(async () => {
  await cluster?.dispose()
})

describe.each<Library>(['node-redis', 'ioredis'])('a Redis Cluster through %s', (library) => {
  const prefix = `${library === 'ioredis' ? 'io' : 'nr'}:`
  let redis: TestClient
  let store: SessionStore
  let app: TestApp
  beforeAll(async () => {
    redis = await clusterClient(library, cluster)
    // A generous timeout: this file checks the promises, not latency, on a shared 2-core machine.
    store = new SessionStore({
      backend: redisBackend({ client: redis.client, prefix }),
      timeout: 2_000,
    })
    app = await startApp(store)
  })
  afterAll(async () => {
    await app?.close()
    await redis?.close()
  })

  it('keeps all 100 keys that 100 concurrent requests set on one session', async () => {
    const browser = new Client(app.url)
    await browser.login('hundred')
    const writes = await Promise.all(
      Array.from({ length: 100 }, (_, i) => browser.request('PUT', `/kv/k${i}`, i)),
    )
    expect(writes.map((r) => r.status).every((s) => s === 204)).toBe(true)
    const pairs = await (await browser.request('GET', '/kv')).json()
    for (let i = 0; i < 100; i++) expect(pairs[`k${i}`]).toBe(i)
  })

  it('regression: a request in flight during logout cannot bring the session back', async () => {
    const browser = new Client(app.url)
    await browser.login('racer')
    const sid = browser.sid
    const slow = browser.request('PUT', '/slow/late', 'written after logout')
    await app.gate.waiting
    expect((await browser.request('POST', '/logout')).status).toBe(204)
    app.gate.release()
    await slow
    expect(await store.get(sid)).toBeNull()
    expect((await browser.request('GET', '/me')).status).toBe(401)
    expect(await store.listUserSessions('racer')).toEqual([])
  })

  it('lists and revokes each of 200 users whose sessions and indexes span every shard', async () => {
    const users = Array.from({ length: 200 }, (_, i) => `user-${library}-${i}`)
    const browsers = new Map<string, [Client, Client]>()
    await inBatches(users, 10, async (user) => {
      const pair: [Client, Client] = [
        new Client(app.url, 'Laptop/1'),
        new Client(app.url, 'Phone/1'),
      ]
      for (const browser of pair) expect((await browser.login(user)).status).toBe(200)
      browsers.set(user, pair)
    })
    // Sessions and index buckets really are spread over all three primaries.
    const sessionShards = new Set<number>()
    const bucketShards = new Set<number>()
    for (const user of users.slice(0, 40)) {
      const [laptop] = browsers.get(user) ?? []
      sessionShards.add(await primaryOf(cluster, `${prefix}s:${laptop?.sid}`))
    }
    for (let n = 0; n < 40; n++) bucketShards.add(await primaryOf(cluster, `${prefix}ix:${n}`))
    expect(sessionShards.size).toBe(3)
    expect(bucketShards.size).toBe(3)

    await inBatches(users, 10, async (user) => {
      const [laptop, phone] = browsers.get(user) ?? []
      if (!laptop || !phone) throw new Error('missing browsers')
      const listed = await store.listUserSessions(user)
      expect(listed.map((s) => s.id).sort()).toEqual([laptop.sid, phone.sid].sort())
      expect(await store.revokeUserSessions(user, { except: laptop.sid })).toEqual([phone.sid])
      expect((await phone.request('GET', '/me')).status).toBe(401)
      expect((await laptop.request('GET', '/me')).status).toBe(200)
      await store.revokeSession(laptop.sid)
      expect((await laptop.request('GET', '/me')).status).toBe(401)
      expect(await store.listUserSessions(user)).toEqual([])
    })
  }, 120_000)

  it('counts and clears the sessions of every primary', async () => {
    const before = await store.length()
    expect(before).toBeGreaterThan(0)
    const browser = new Client(app.url)
    await browser.login('counted')
    expect(await store.length()).toBe(before + 1)
    await store.clear()
    expect(await store.length()).toBe(0)
    expect((await browser.request('GET', '/me')).status).toBe(401)
  })
})

/** Runs `each` over `items`, `size` at a time: many users, not a load test. */
async function inBatches<T>(
  items: T[],
  size: number,
  each: (item: T) => Promise<void>,
): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(each))
}

it('ran the whole file without a single CROSSSLOT error on any node', async () => {
  let crossSlot = 0
  let calls = 0
  for (const node of cluster.nodes) {
    const errors = await command('redis-cli', node.port, 'INFO', 'errorstats')
    crossSlot += Number(/errorstat_CROSSSLOT:count=(\d+)/.exec(errors)?.[1] ?? 0)
    const stats = await command('redis-cli', node.port, 'INFO', 'commandstats')
    calls += Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0)
  }
  expect(calls).toBeGreaterThan(1_000) // the scripts did run on the cluster
  expect(crossSlot).toBe(0)
})
