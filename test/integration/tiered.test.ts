import { createClient } from 'redis'
import { SessionStore } from 'sessionmesh'
import { migrateMysql, mysqlBackend } from 'sessionmesh/mysql'
import { migratePostgres, postgresBackend } from 'sessionmesh/postgres'
import { redisBackend } from 'sessionmesh/redis'
import { type TieredBackend, tieredBackend } from 'sessionmesh/tiered'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backendContract, createWrite, updateWrite } from '../support/contract.js'
import { pgDump, redisCliDump } from '../support/dump.js'
import { Client, startApp } from '../support/express-app.js'
import { RedisServer } from '../support/redis-server.js'
import { mysqlDatabase, pgSchema } from '../support/sql.js'

let server: RedisServer
beforeAll(async () => {
  server = await RedisServer.start()
})
afterAll(async () => {
  await server.stop()
})

// The cache client fails at once while Redis is away instead of queueing commands.
async function cacheClient() {
  const client = createClient({
    url: server.url,
    disableOfflineQueue: true,
    socket: { reconnectStrategy: () => 50 },
  })
  client.on('error', () => {})
  return client.connect()
}

async function tiered(prefix: string, options: { retryAfter?: number } = {}) {
  const client = await cacheClient()
  const { pool, schema, drop } = await pgSchema()
  const table = `${schema}.sessions`
  await migratePostgres(pool, { table })
  const cache = redisBackend({ client, prefix })
  const durable = postgresBackend({ pool, table, cleanupInterval: 0 })
  const backend = tieredBackend({ cache, durable, retryAfter: options.retryAfter ?? 200 })
  return {
    backend,
    cache,
    client,
    pool,
    table,
    cleanup: async () => {
      await backend.close()
      client.destroy()
      await drop()
    },
  }
}

// A corrupt record: unreadable in the database, and not in the cache (a cached copy
// would be served; the database is the record).
backendContract('tiered (redis over postgres)', async () => {
  const subject = await tiered('ct:')
  return {
    backend: subject.backend,
    // Both tiers: the cache's copy and the database's row.
    dump: async () => `${await redisCliDump(server.url, 'ct:')}\n${await pgDump(subject.table)}`,
    corrupt: async (sid) => {
      await subject.pool.query(`UPDATE ${subject.table} SET fields = '[1]'::jsonb WHERE id = $1`, [
        sid,
      ])
      await subject.client.del(`ct:s:${sid}`)
    },
    cleanup: subject.cleanup,
  }
})

backendContract('tiered (redis over mysql)', async () => {
  const client = await cacheClient()
  const { pool, drop } = await mysqlDatabase()
  await migrateMysql(pool)
  const backend = tieredBackend({
    cache: redisBackend({ client, prefix: 'ctm:' }),
    durable: mysqlBackend({ pool, cleanupInterval: 0 }),
  })
  return {
    backend,
    corrupt: async (sid) => {
      await pool.query(`UPDATE sessionmesh_sessions SET fields = '[1]' WHERE id = ?`, [sid])
      await client.del(`ctm:s:${sid}`)
    },
    cleanup: async () => {
      await backend.close()
      client.destroy()
      await drop()
    },
  }
})

describe('tiered backend over a real Redis and PostgreSQL', () => {
  it('Redis killed and restarted empty: every session still valid, requests served meanwhile', async () => {
    const subject = await tiered('kill:')
    const backend: TieredBackend = subject.backend
    const store = new SessionStore({ backend })
    const app = await startApp(store)
    try {
      const clients = Array.from({ length: 20 }, () => new Client(app.url))
      const first = clients[0] as Client
      for (const [i, client] of clients.entries()) {
        expect((await client.login(`user${i}`)).status).toBe(200)
        expect((await client.request('PUT', '/kv/n', i)).status).toBe(204)
      }
      const leaver = new Client(app.url)
      await leaver.login('leaver')
      const before = backend.stats()
      for (const client of clients) expect((await client.request('GET', '/me')).status).toBe(200)
      expect(backend.stats().cacheHits).toBeGreaterThan(before.cacheHits)

      await server.kill()
      // During the outage: reads, writes and a logout all work, from the database.
      for (const [i, client] of clients.entries()) {
        const me = await client.request('GET', '/me')
        expect(me.status).toBe(200)
        expect((await me.json()).user).toEqual({ id: `user${i}` })
      }
      expect((await first.request('PUT', '/kv/during', 'outage')).status).toBe(204)
      expect((await leaver.request('POST', '/logout')).status).toBe(204)
      expect(backend.stats().durableFallbacks).toBeGreaterThanOrEqual(clients.length)

      await server.start()
      // Redis is back, empty: nobody is logged out, nothing is lost, the logout holds.
      for (const [i, client] of clients.entries()) {
        const me = await client.request('GET', '/me')
        expect(me.status).toBe(200)
        const kv = await (await client.request('GET', '/kv')).json()
        expect(kv.n).toBe(i)
      }
      expect((await (await first.request('GET', '/kv')).json()).during).toBe('outage')
      expect((await leaver.request('GET', '/me')).status).toBe(401)
      // The cache refills: reads are served by Redis again.
      const refilled = backend.stats().cacheHits
      await expect
        .poll(
          async () => {
            for (const client of clients) await client.request('GET', '/me')
            return backend.stats().cacheHits - refilled
          },
          { timeout: 5000 },
        )
        .toBeGreaterThanOrEqual(clients.length)
      expect(await subject.cache.get(first.sid)).not.toBeNull()
      expect(await subject.cache.get(leaver.sid)).toBeNull()
    } finally {
      await app.close()
      await subject.cleanup()
    }
  }, 60_000)

  it('a write while Redis is unreachable but keeps its data never leaves a stale copy served', async () => {
    const subject = await tiered('pause:')
    const backend = subject.backend
    const app = await startApp(new SessionStore({ backend }))
    const admin = await cacheClient()
    try {
      const client = new Client(app.url)
      await client.login('pauser')
      await client.request('PUT', '/kv/a', 1)
      expect((await (await client.request('GET', '/kv')).json()).a).toBe(1)
      expect(await subject.cache.get(client.sid)).not.toBeNull()

      // Redis stops answering this process but keeps the cached copy with a = 1.
      await admin.sendCommand(['CLIENT', 'PAUSE', '1000', 'ALL'])
      expect((await client.request('PUT', '/kv/a', 2)).status).toBe(204)
      expect((await (await client.request('GET', '/kv')).json()).a).toBe(2)
      await client.request('POST', '/logout')
      // Once Redis answers again, the destroyed session must not come back from it.
      await expect
        .poll(async () => (await subject.cache.get(client.sid).catch(() => 'down')) === null, {
          timeout: 5000,
        })
        .toBe(true)
      expect((await client.request('GET', '/me')).status).toBe(401)
    } finally {
      admin.destroy()
      await app.close()
      await subject.cleanup()
    }
  }, 30_000)

  it('a write acknowledged while Redis is paused is what every later read sees', async () => {
    const subject = await tiered('resync:')
    const backend = subject.backend
    const app = await startApp(new SessionStore({ backend }))
    const admin = await cacheClient()
    try {
      const client = new Client(app.url)
      await client.login('resync')
      await client.request('PUT', '/kv/a', 1)
      await client.request('GET', '/kv')
      await admin.sendCommand(['CLIENT', 'PAUSE', '500', 'WRITE'])
      expect((await client.request('PUT', '/kv/a', 2)).status).toBe(204)
      const hits = backend.stats().cacheHits
      await expect
        .poll(
          async () => {
            expect((await (await client.request('GET', '/kv')).json()).a).toBe(2)
            return backend.stats().cacheHits - hits
          },
          { timeout: 5000 },
        )
        .toBeGreaterThan(0)
    } finally {
      admin.destroy()
      await app.close()
      await subject.cleanup()
    }
  }, 30_000)

  it('a write whose cache call timed out is seen by the next read in another process', async () => {
    // Two processes' tiered backends over one Redis and one table. Process A's first
    // cache call times out (Redis paused, as an overloaded event loop or a slow link
    // would make it); its next writes must still reach the cache that B reads.
    const a = await tiered('peer:', { retryAfter: 5000 })
    const bClient = await cacheClient()
    const b = tieredBackend({
      cache: redisBackend({ client: bClient, prefix: 'peer:' }),
      durable: postgresBackend({ pool: a.pool, table: a.table, cleanupInterval: 0 }),
    })
    const admin = await cacheClient()
    try {
      const sid = 'peersession0000000000000000000001'
      expect(await a.backend.write(sid, createWrite({ maxLifetime: 0 }))).toBe('ok')
      expect((await b.get(sid))?.fields).not.toHaveProperty('k0')
      expect(b.stats().cacheHits).toBe(1)

      await admin.sendCommand(['CLIENT', 'PAUSE', '300', 'ALL'])
      expect(await a.backend.write(sid, updateWrite({ k0: '0' }))).toBe('ok')
      expect(a.backend.stats().cacheErrors).toBe(1)
      await new Promise((resolve) => setTimeout(resolve, 400))
      for (let i = 1; i <= 5; i++) {
        expect(await a.backend.write(sid, updateWrite({ [`k${i}`]: `${i}` }))).toBe('ok')
      }

      const read = await b.get(sid)
      expect(b.stats().cacheHits).toBe(2)
      expect(read?.fields).toMatchObject({ k0: '0', k1: '1', k2: '2', k3: '3', k4: '4', k5: '5' })
    } finally {
      admin.destroy()
      await b.close().catch(() => {})
      await a.cleanup()
    }
  }, 30_000)

  it('a refill whose check cannot read the database leaves no cached copy, and is no cache error', async () => {
    // The refill after a cache miss reads the database a second time to check that
    // nothing changed meanwhile. When that read fails, the copy it wrote is unchecked:
    // it goes, and the cache (which answered every call) is still used.
    const client = await cacheClient()
    const { pool, schema, drop } = await pgSchema()
    const table = `${schema}.sessions`
    await migratePostgres(pool, { table })
    const durable = postgresBackend({ pool, table, cleanupInterval: 0 })
    let reads = 0
    let failRead = -1
    // The real PostgreSQL backend, with the one read chosen failing as a dropped connection would.
    const flaky = new Proxy(durable, {
      get(target, name) {
        if (name === 'get') {
          return (sid: string) =>
            reads++ === failRead
              ? Promise.reject(new Error('connection terminated unexpectedly'))
              : target.get(sid)
        }
        const value = Reflect.get(target, name)
        return typeof value === 'function' ? value.bind(target) : value
      },
    })
    const cache = redisBackend({ client, prefix: 'check:' })
    const backend = tieredBackend({ cache, durable: flaky, retryAfter: 60_000 })
    try {
      const sid = 'checksession000000000000000000001'
      expect(await backend.write(sid, createWrite({ set: { k: '"1"' } }))).toBe('ok')
      await client.del(`check:s:${sid}`)

      // The miss reads the row (read 0), refills, and its check (read 1) fails.
      reads = 0
      failRead = 1
      expect((await backend.get(sid))?.fields.k).toBe('"1"')
      expect(reads).toBe(2)
      expect(await cache.get(sid)).toBeNull()
      expect(backend.stats().cacheErrors).toBe(0)

      // The next read still tries the cache (retryAfter is a minute), and refills it.
      failRead = -1
      const before = backend.stats()
      expect((await backend.get(sid))?.fields.k).toBe('"1"')
      expect(backend.stats().cacheMisses).toBe(before.cacheMisses + 1)
      expect(backend.stats().durableFallbacks).toBe(before.durableFallbacks)
      expect((await cache.get(sid))?.fields.k).toBe('"1"')
    } finally {
      await backend.close()
      client.destroy()
      await drop()
    }
  })

  it('a repair that cannot read the database drops the cached copy, with no tombstone or event', async () => {
    // A's write misses the paused cache, so A repairs that session once Redis answers.
    // The table is renamed meanwhile: the repair cannot read the session, and must not
    // destroy it in the cache (a tombstone for an hour, and a 'destroyed' event that,
    // with a durable tier without events, would close the live session's sockets).
    const a = await tiered('repair:', { retryAfter: 300 })
    const admin = await cacheClient()
    const events: string[] = []
    const unsubscribe = await a.cache.subscribe?.((event) => events.push(event.type))
    const moved = `${a.table}_away`
    try {
      const sid = 'repairsession00000000000000000001'
      expect(await a.backend.write(sid, createWrite({ maxLifetime: 0 }))).toBe('ok')
      expect(await a.cache.get(sid)).not.toBeNull()
      await admin.sendCommand(['CLIENT', 'PAUSE', '200', 'ALL'])
      expect(await a.backend.write(sid, updateWrite({ k: '1' }))).toBe('ok')
      await a.pool.query(`ALTER TABLE ${a.table} RENAME TO ${moved.split('.')[1]}`)
      // The repair runs 300 ms after the failure: the cached copy goes, nothing else.
      await expect.poll(() => a.cache.get(sid), { timeout: 5000 }).toBeNull()
      expect(await admin.exists(`repair:t:${sid}`)).toBe(0)
      expect(events).not.toContain('destroyed')

      await a.pool.query(`ALTER TABLE ${moved} RENAME TO ${a.table.split('.')[1]}`)
      await expect
        .poll(async () => (await a.backend.get(sid))?.fields.k, { timeout: 5000 })
        .toBe('1')
    } finally {
      await unsubscribe?.()
      admin.destroy()
      await a.pool.query(`ALTER TABLE IF EXISTS ${moved} RENAME TO ${a.table.split('.')[1]}`)
      await a.cleanup()
    }
  }, 30_000)
})
