import { randomUUID } from 'node:crypto'
import type { SessionEvent } from 'sessionmesh'
import { migratePostgres, postgresBackend } from 'sessionmesh/postgres'
import { describe, expect, it } from 'vitest'
import { backendContract, createWrite, updateWrite } from '../support/contract.js'
import { pgDump } from '../support/dump.js'
import { PG_URL, pgSchema } from '../support/sql.js'

// A corrupt record: the fields column holds an array instead of an object of strings.
backendContract('postgres', async () => {
  const { pool, schema, drop } = await pgSchema()
  const table = `${schema}.sessions`
  await migratePostgres(pool, { table })
  const backend = postgresBackend({ pool, table, cleanupInterval: 0 })
  return {
    backend,
    dump: () => pgDump(table),
    corrupt: async (sid) => {
      await pool.query(`UPDATE ${table} SET fields = '[1, 2]'::jsonb WHERE id = $1`, [sid])
    },
    cleanup: async () => {
      await backend.close()
      await drop()
    },
  }
})

const sid = () => randomUUID().replaceAll('-', '')

describe('postgres backend', () => {
  it('migration is idempotent and safe to run from several callers at once', async () => {
    const { pool, schema, drop } = await pgSchema()
    try {
      const table = `${schema}.sessions`
      await Promise.all([1, 2, 3, 4].map(() => migratePostgres(pool, { table })))
      await migratePostgres(pool, { table })
      const backend = postgresBackend({ pool, table, cleanupInterval: 0 })
      expect(await backend.write(sid(), createWrite())).toBe('ok')
      expect(await backend.count()).toBe(1)
    } finally {
      await drop()
    }
  })

  it('prepares each statement once per connection, under a name of its own; not with prepare: false', async () => {
    const pg = (await import('pg')).default
    const { pool, schema, drop } = await pgSchema()
    // One connection each: pg_prepared_statements lists that connection's own.
    const prepared = new pg.Pool({ connectionString: PG_URL, max: 1 })
    const plain = new pg.Pool({ connectionString: PG_URL, max: 1 })
    const names = async (on: typeof pool) =>
      (
        await on.query<{ name: string }>(
          "SELECT name FROM pg_prepared_statements WHERE name LIKE 'sessionmesh\\_%' ORDER BY name",
        )
      ).rows.map((row) => row.name)
    try {
      const tables = [`${schema}.first`, `${schema}.second`]
      for (const table of tables) await migratePostgres(pool, { table })
      // Two tables on one pool: the same statement of each gets a different name.
      for (const table of tables) {
        const backend = postgresBackend({ pool: prepared, table, cleanupInterval: 0 })
        const id = sid()
        for (let i = 0; i < 3; i++) {
          expect(await backend.write(id, createWrite({ set: { n: String(i) } }))).toBe('ok')
        }
        expect((await backend.get(id))?.fields).toEqual({ n: '2' })
      }
      const seen = await names(prepared)
      expect(seen).toHaveLength(4)
      expect(seen.filter((name) => name.startsWith('sessionmesh_create_'))).toHaveLength(2)
      expect(seen.filter((name) => name.startsWith('sessionmesh_get_'))).toHaveLength(2)

      const unprepared = postgresBackend({
        pool: plain,
        table: tables[0] as string,
        cleanupInterval: 0,
        prepare: false,
      })
      const id = sid()
      expect(await unprepared.write(id, createWrite({ set: { a: '1' } }))).toBe('ok')
      expect(await unprepared.write(id, updateWrite({ a: '2' }))).toBe('ok')
      expect((await unprepared.get(id))?.fields).toEqual({ a: '2' })
      expect(await names(plain)).toEqual([])
    } finally {
      await prepared.end()
      await plain.end()
      await drop()
    }
  })

  it('a create on an expired session starts it afresh, without the old keys', async () => {
    const { pool, schema, drop } = await pgSchema()
    try {
      const table = `${schema}.sessions`
      await migratePostgres(pool, { table })
      const backend = postgresBackend({ pool, table, cleanupInterval: 0 })
      const id = sid()
      const past = Date.now() - 10_000
      await backend.write(id, createWrite({ now: past, expiresAt: past + 1000, set: { old: '1' } }))
      expect(await backend.write(id, updateWrite({ a: '1' }))).toBe('gone')
      const write = createWrite({ set: { fresh: '2' }, replace: false })
      expect(await backend.write(id, write)).toBe('ok')
      const stored = await backend.get(id)
      expect(stored?.fields).toEqual({ fresh: '2' })
      expect(stored?.meta.createdAt).toBe(write.now)
    } finally {
      await drop()
    }
  })

  it('tells an outage (nothing listening) from an SQL error', async () => {
    const pg = (await import('pg')).default
    const dead = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:1/test' })
    const backend = postgresBackend({ pool: dead, cleanupInterval: 0 })
    const refused = await backend.get('x').catch((error: unknown) => error)
    expect(backend.isOutage?.(refused)).toBe(true)
    await dead.end()

    const { pool, schema, drop } = await pgSchema()
    try {
      const missing = postgresBackend({ pool, table: `${schema}.nope`, cleanupInterval: 0 })
      const sqlError = await missing.get('x').catch((error: unknown) => error)
      expect(sqlError).toBeInstanceOf(Error)
      expect(missing.isOutage?.(sqlError)).toBe(false)
    } finally {
      await drop()
    }
  })

  it('delivers events across pools (processes), and again after the listening connection is killed', async () => {
    const pg = (await import('pg')).default
    const { pool, schema, drop } = await pgSchema()
    const other = new pg.Pool({ connectionString: PG_URL })
    other.on('error', () => {})
    try {
      const table = `${schema}.sessions`
      await migratePostgres(pool, { table })
      const listener = postgresBackend({ pool: other, table, cleanupInterval: 0 })
      const writer = postgresBackend({ pool, table, cleanupInterval: 0 })
      const events: SessionEvent[] = []
      const unsubscribe = await listener.subscribe?.((event) => events.push(event))
      const first = sid()
      await writer.write(first, createWrite())
      await expect.poll(() => events.map((e) => e.sid)).toContain(first)
      const killed = await pool.query(
        'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1',
        [`LISTEN "${table}_events"`],
      )
      expect(killed.rowCount).toBe(1)
      const second = sid()
      await expect
        .poll(
          async () => {
            await writer.destroy(second)
            return events.some((e) => e.sid === second && e.type === 'destroyed')
          },
          { timeout: 5000, interval: 200 },
        )
        .toBe(true)
      await unsubscribe?.()
    } finally {
      await other.end()
      await drop()
    }
  })
})
