import { randomUUID } from 'node:crypto'
import mysql from 'mysql2/promise'
import { migrateMysql, mysqlBackend } from 'sessionmesh/mysql'
import { describe, expect, it } from 'vitest'
import { backendContract, createWrite, updateWrite } from '../support/contract.js'
import { mariadbDump } from '../support/dump.js'
import { mysqlDatabase } from '../support/sql.js'

// A corrupt record: the fields column holds a JSON array instead of an object of strings.
backendContract('mysql (MariaDB)', async () => {
  const { pool, database, drop } = await mysqlDatabase()
  await migrateMysql(pool, { table: 'sessions' })
  const backend = mysqlBackend({ pool, table: 'sessions', cleanupInterval: 0 })
  return {
    backend,
    dump: () => mariadbDump(database, 'sessions'),
    corrupt: async (sid) => {
      await pool.query(`UPDATE sessions SET fields = '[1, 2]' WHERE id = ?`, [sid])
    },
    cleanup: async () => {
      await backend.close()
      await drop()
    },
  }
})

const sid = () => randomUUID().replaceAll('-', '')

describe('mysql backend', () => {
  it('session ids are case-sensitive (binary collation)', async () => {
    const { pool, drop } = await mysqlDatabase()
    try {
      await migrateMysql(pool)
      const backend = mysqlBackend({ pool, cleanupInterval: 0 })
      await backend.write('AbC', createWrite({ set: { who: '"upper"' } }))
      expect(await backend.get('abc')).toBeNull()
      expect(await backend.write('abc', createWrite({ set: { who: '"lower"' } }))).toBe('ok')
      expect((await backend.get('AbC'))?.fields).toEqual({ who: '"upper"' })
    } finally {
      await drop()
    }
  })

  it('reads, touches and updates through prepared statements; not with prepare: false', async () => {
    const { uri, drop } = await mysqlDatabase()
    // One connection each: the session status counters are that connection's own.
    const prepared = mysql.createPool({ uri, connectionLimit: 1 })
    const plain = mysql.createPool({ uri, connectionLimit: 1 })
    const executed = async (pool: mysql.Pool) => {
      const [rows] = await pool.query("SHOW SESSION STATUS LIKE 'Com_stmt_execute'")
      return Number((rows as Array<{ Value: string }>)[0]?.Value)
    }
    try {
      await migrateMysql(prepared)
      for (const [pool, prepare] of [
        [prepared, true],
        [plain, false],
      ] as const) {
        const backend = mysqlBackend({ pool, cleanupInterval: 0, prepare })
        const id = sid()
        const write = createWrite({ set: { a: '"1"' } })
        expect(await backend.write(id, write)).toBe('ok')
        const before = await executed(pool)
        for (let i = 0; i < 3; i++) expect((await backend.get(id))?.fields).toEqual({ a: '"1"' })
        const touch = { now: write.now + 1000, expiresAt: write.expiresAt + 1000, maxLifetime: 0 }
        expect(await backend.touch(id, touch)).toBe('ok')
        expect((await backend.get(id))?.meta).toMatchObject({
          lastSeenAt: touch.now,
          expiresAt: touch.expiresAt,
        })
        expect(await backend.touch(sid(), touch)).toBe('gone')
        expect(await backend.write(id, updateWrite({ b: '"2"' }, ['a']))).toBe('ok')
        expect((await backend.get(id))?.fields).toEqual({ b: '"2"' })
        // Three reads, two touches, a read, an update and a read.
        expect(await executed(pool)).toBe(before + (prepare ? 8 : 0))
      }
    } finally {
      await prepared.end()
      await plain.end()
      await drop()
    }
  })

  it('deletes keys whose names need quoting in a JSON path', async () => {
    const { pool, drop } = await mysqlDatabase()
    try {
      await migrateMysql(pool)
      const backend = mysqlBackend({ pool, cleanupInterval: 0 })
      const id = sid()
      const odd = { 'a.b': '1', 'q"uote': '2', 'back\\slash': '3', keep: '4' }
      await backend.write(id, createWrite({ set: odd }))
      expect(
        await backend.write(id, updateWrite({ new: '5' }, ['a.b', 'q"uote', 'back\\slash'])),
      ).toBe('ok')
      expect((await backend.get(id))?.fields).toEqual({ keep: '4', new: '5' })
    } finally {
      await drop()
    }
  })

  it('reports "ok" whatever the connection flags (no FOUND_ROWS)', async () => {
    const { uri, drop } = await mysqlDatabase()
    const pool = mysql.createPool({ uri, flags: ['-FOUND_ROWS'] })
    try {
      await migrateMysql(pool)
      const backend = mysqlBackend({ pool, cleanupInterval: 0 })
      const id = sid()
      const write = createWrite()
      expect(await backend.write(id, write)).toBe('ok')
      // The same values again: the row does not change, and it is still a success.
      expect(await backend.write(id, { ...write, mode: 'update', replace: false })).toBe('ok')
      expect(await backend.touch(id, write)).toBe('ok')
      expect(await backend.touch(id, write)).toBe('ok')
      await backend.destroy(id)
      expect(await backend.write(id, write)).toBe('gone')
    } finally {
      await pool.end()
      await drop()
    }
  })

  it('tells an outage (nothing listening) from an SQL error', async () => {
    const dead = mysql.createPool({ uri: 'mysql://root@127.0.0.1:1/test' })
    const backend = mysqlBackend({ pool: dead, cleanupInterval: 0 })
    const refused = await backend.get('x').catch((error: unknown) => error)
    expect(backend.isOutage?.(refused)).toBe(true)
    await dead.end()

    const { pool, drop } = await mysqlDatabase()
    try {
      const missing = mysqlBackend({ pool, table: 'nope', cleanupInterval: 0 })
      const sqlError = await missing.get('x').catch((error: unknown) => error)
      expect(sqlError).toBeInstanceOf(Error)
      expect(missing.isOutage?.(sqlError)).toBe(false)
    } finally {
      await drop()
    }
  })
})
