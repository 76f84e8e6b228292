import mysql from 'mysql2/promise'
import pg from 'pg'
import { type Backend, SessionStore, StoreUnavailableError } from 'sessionmesh'
import { memoryBackend } from 'sessionmesh/memory'
import { migrateMysql, mysqlBackend } from 'sessionmesh/mysql'
import { migratePostgres, postgresBackend } from 'sessionmesh/postgres'
import { tieredBackend } from 'sessionmesh/tiered'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MYSQL_URL, mysqlDatabase, PG_URL, pgSchema } from '../support/sql.js'
import { StallProxy } from '../support/stall-proxy.js'

// Issue 11, item 1, for the SQL and tiered backends: a write, destroy or
// revocation the store reported as failed (its timeout passed while the
// database connection was stalled) must not be applied when the connection
// comes back. The connections go through a TCP proxy the test freezes with
// SIGSTOP: the statements wait in the proxy, as over a stalled link.

interface Subject {
  /** The proxy every stalled connection goes through. */
  proxy: StallProxy
  /** A backend whose connections (one per call) go through the proxy. */
  stalled(): Promise<Backend>
  /** The same table, directly: what is really stored. */
  direct: Backend
  /** Resolves once everything queued on the stalled connections has been answered. */
  drain(): Promise<void>
  cleanup(): Promise<void>
}

const cookie = { originalMaxAge: 3_600_000, path: '/' }

function stallSuite(name: string, make: () => Promise<Subject>): void {
  describe(`${name}: a call reported as failed is not applied later`, () => {
    let subject: Subject

    beforeAll(async () => {
      subject = await make()
    })
    afterAll(async () => {
      await subject?.proxy.stop()
      await subject?.cleanup()
    })

    it('a timed-out write, destroy and revocation change nothing once the link is back (they used to)', async () => {
      // One store per call, each with its own backend and connection, so that each
      // statement is on the wire when the link stalls (and no breaker interferes).
      const [writer, destroyer, revoker] = await Promise.all(
        [0, 1, 2].map(
          async () => new SessionStore({ backend: await subject.stalled(), timeout: 1_000 }),
        ),
      )
      await writer?.set('deadline-a', { cookie, n: 1 })
      await destroyer?.set('deadline-b', { cookie, n: 1 })
      await revoker?.set('deadline-c', { cookie, n: 1, passport: { user: 'deadline-user' } })

      const { proxy } = subject
      proxy.pause()
      const failures = await Promise.allSettled([
        writer?.set('deadline-a', { cookie, n: 2 }),
        destroyer?.destroy('deadline-b'),
        revoker?.revokeUserSessions('deadline-user'),
      ])
      for (const failure of failures) {
        expect(failure.status).toBe('rejected')
        expect((failure as PromiseRejectedResult).reason).toBeInstanceOf(StoreUnavailableError)
      }
      proxy.resume()
      await subject.drain()

      expect((await subject.direct.get('deadline-a'))?.fields.n).toBe('1')
      expect(await subject.direct.get('deadline-b')).not.toBeNull()
      expect(await subject.direct.get('deadline-c')).not.toBeNull()
      expect((await subject.direct.listUser('deadline-user', Date.now())).map((s) => s.id)).toEqual(
        ['deadline-c'],
      )
      // And the link works again: a call in time is applied.
      // (A new store: the stalled ones' breakers are open for their retryAfter.)
      const after = new SessionStore({ backend: await subject.stalled(), timeout: 5_000 })
      await after.set('deadline-a', { cookie, n: 3 })
      expect((await subject.direct.get('deadline-a'))?.fields.n).toBe('3')
    })
  })
}

async function postgresSubject(tiered: boolean): Promise<Subject> {
  const { pool, schema, drop } = await pgSchema()
  const table = `${schema}.sessions`
  await migratePostgres(pool, { table })
  const url = new URL(PG_URL)
  const pools: pg.Pool[] = []
  const started = await StallProxy.start(Number(url.port || 5432), url.hostname)
  return {
    proxy: started,
    direct: postgresBackend({ pool, table, cleanupInterval: 0 }),
    stalled: async () => {
      const stalledPool = new pg.Pool({
        connectionString: PG_URL.replace(`:${url.port || 5432}/`, `:${started.port}/`),
        max: 1,
      })
      stalledPool.on('error', () => {})
      pools.push(stalledPool)
      const durable = postgresBackend({ pool: stalledPool, table, cleanupInterval: 0 })
      return tiered ? tieredBackend({ cache: memoryBackend(), durable }) : durable
    },
    drain: async () => {
      // One connection per pool: this query runs after whatever was queued on it.
      await Promise.all(pools.map((p) => p.query('SELECT 1')))
    },
    cleanup: async () => {
      await Promise.all(pools.map((p) => p.end()))
      await drop()
    },
  }
}

async function mysqlSubject(tiered: boolean): Promise<Subject> {
  const { pool, database, drop } = await mysqlDatabase()
  const table = 'sessions'
  await migrateMysql(pool, { table })
  const url = new URL(MYSQL_URL)
  const started = await StallProxy.start(Number(url.port || 3306), url.hostname)
  const pools: mysql.Pool[] = []
  return {
    proxy: started,
    direct: mysqlBackend({ pool, table, cleanupInterval: 0 }),
    stalled: async () => {
      const stalledPool = mysql.createPool({
        host: '127.0.0.1',
        port: started.port,
        user: decodeURIComponent(url.username) || 'root',
        database,
        connectionLimit: 1,
      })
      pools.push(stalledPool)
      const durable = mysqlBackend({ pool: stalledPool, table, cleanupInterval: 0 })
      return tiered ? tieredBackend({ cache: memoryBackend(), durable }) : durable
    },
    drain: async () => {
      await Promise.all(pools.map((p) => p.query('SELECT 1')))
    },
    cleanup: async () => {
      await Promise.all(pools.map((p) => p.end()))
      await drop()
    },
  }
}

for (const [name, make] of [
  ['postgres', () => postgresSubject(false)],
  ['mysql (MariaDB)', () => mysqlSubject(false)],
  ['tiered (memory over postgres)', () => postgresSubject(true)],
  ['tiered (memory over mysql)', () => mysqlSubject(true)],
] as const) {
  stallSuite(name, make)
}
