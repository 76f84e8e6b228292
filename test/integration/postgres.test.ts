import { randomUUID } from 'node:crypto'
import type { SessionEvent } from 'sessionmesh'
import {
  migratePostgres,
  type PgNamedStatement,
  type PgPoolLike,
  postgresBackend,
} from 'sessionmesh/postgres'
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
      // The change events' statement names no table: one for both.
      await expect.poll(() => names(prepared)).toHaveLength(5)
      const seen = await names(prepared)
      expect(seen.filter((name) => name.startsWith('sessionmesh_create_'))).toHaveLength(2)
      expect(seen.filter((name) => name.startsWith('sessionmesh_get_'))).toHaveLength(2)
      expect(seen.filter((name) => name.startsWith('sessionmesh_notifyChanged_'))).toHaveLength(1)

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

  describe('change events, sent after the commit', () => {
    /**
     * The statements a pool ran, by text. The first `failNotify` statements of
     * change events (the only ones with `unnest`) fail; each takes `slowNotify` ms more.
     */
    function recording(pool: PgPoolLike, failNotify = 0, slowNotify = 0) {
      const texts: string[] = []
      let failures = failNotify
      const query = async (statement: string | PgNamedStatement, values?: unknown[]) => {
        const text = typeof statement === 'string' ? statement : statement.text
        texts.push(text)
        if (text.includes('unnest(')) {
          await new Promise((resolve) => setTimeout(resolve, slowNotify))
          if (failures-- > 0) throw new Error('connection lost')
        }
        return typeof statement === 'string' ? pool.query(statement, values) : pool.query(statement)
      }
      const wrapped = { query, connect: () => pool.connect() } as PgPoolLike
      return { pool: wrapped, texts }
    }

    /** A table, a backend listening on it, and the events it heard; `run` writes with `pool`. */
    async function listening(
      run: (table: string, events: SessionEvent[], pool: PgPoolLike) => Promise<void>,
    ) {
      const { pool, schema, drop } = await pgSchema()
      const table = `${schema}.sessions`
      await migratePostgres(pool, { table })
      const listener = postgresBackend({ pool, table, cleanupInterval: 0 })
      const events: SessionEvent[] = []
      const unsubscribe = await listener.subscribe?.((event) => events.push(event))
      try {
        await run(table, events, pool)
      } finally {
        await unsubscribe?.()
        await drop()
      }
    }

    it('every write is announced, in batches: no write statement notifies', async () => {
      await listening(async (table, events, shared) => {
        const { pool, texts } = recording(shared)
        const writer = postgresBackend({ pool, table, cleanupInterval: 0 })
        const ids = Array.from({ length: 200 }, sid)
        const results = await Promise.all(ids.map((id) => writer.write(id, createWrite())))
        expect(results.every((result) => result === 'ok')).toBe(true)
        await expect.poll(() => new Set(events.map((e) => e.sid)).size, { timeout: 5000 }).toBe(200)
        expect(events.every((e) => e.type === 'changed' && ids.includes(e.sid))).toBe(true)
        const writes = texts.filter((text) => text.includes('INSERT INTO'))
        const notifies = texts.filter((text) => text.includes('pg_notify'))
        expect(writes).toHaveLength(200)
        expect(writes.some((text) => text.includes('pg_notify'))).toBe(false)
        // 200 writes in flight at once: their events share statements.
        expect(notifies.length).toBeGreaterThan(0)
        expect(notifies.length).toBeLessThan(50)
        await writer.close()
      })
    })

    it('writes of one session sent in one statement are one event each (PostgreSQL merges equal payloads)', async () => {
      await listening(async (table, events, shared) => {
        // The create's event takes 200 ms to send: the five updates' events wait, and go together.
        const { pool, texts } = recording(shared, 0, 200)
        const notifies = () => texts.filter((text) => text.includes('pg_notify')).length
        const writer = postgresBackend({ pool, table, cleanupInterval: 0 })
        const id = sid()
        expect(await writer.write(id, createWrite())).toBe('ok')
        await new Promise((resolve) => setImmediate(resolve))
        expect(notifies()).toBe(1)
        const updates = Array.from({ length: 5 }, (_, i) => updateWrite({ n: String(i) }))
        await Promise.all(updates.map((write) => writer.write(id, write)))
        expect(notifies()).toBe(1)
        await expect.poll(() => events.length, { timeout: 5000 }).toBe(6)
        await new Promise((resolve) => setTimeout(resolve, 300))
        expect(events).toHaveLength(6)
        expect(notifies()).toBe(2)
        await writer.close()
      })
    })

    it('a destroy waits for a change event already on its way', async () => {
      await listening(async (table, events, shared) => {
        // The change's statement takes 200 ms: it has left the queue when the destroy comes.
        const { pool, texts } = recording(shared, 0, 200)
        const writer = postgresBackend({ pool, table, cleanupInterval: 0 })
        const id = sid()
        expect(await writer.write(id, createWrite())).toBe('ok')
        await new Promise((resolve) => setImmediate(resolve))
        expect(texts.filter((text) => text.includes('pg_notify'))).toHaveLength(1)
        await writer.destroy(id)
        await expect
          .poll(() => events.filter((e) => e.sid === id).map((e) => e.type))
          .toEqual(['changed', 'destroyed'])
        await writer.close()
      })
    })

    it('close sends the events still waiting; a failed send is tried again; a destroy comes after the change', async () => {
      await listening(async (table, events, shared) => {
        const { pool, texts } = recording(shared, 1)
        const writer = postgresBackend({ pool, table, cleanupInterval: 0 })
        const first = sid()
        expect(await writer.write(first, createWrite())).toBe('ok')
        // Nothing is sent yet: the batch waits for the writes of this moment.
        expect(texts.filter((text) => text.includes('pg_notify'))).toHaveLength(0)
        await writer.close()
        // The first attempt failed; the second reached PostgreSQL before close returned.
        expect(texts.filter((text) => text.includes('pg_notify'))).toHaveLength(2)
        await expect.poll(() => events.map((e) => e.sid)).toEqual([first])

        const second = sid()
        expect(await writer.write(second, createWrite())).toBe('ok')
        await writer.destroy(second)
        await expect
          .poll(() => events.filter((e) => e.sid === second).map((e) => e.type))
          .toEqual(['changed', 'destroyed'])
      })
    })
  })
})
