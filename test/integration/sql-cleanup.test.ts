import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { migrate, type SqlStoreKind } from 'sessionmesh/migrate'
import { describe, expect, it } from 'vitest'
import { MYSQL_URL, mysqlDatabase, PG_URL, pgSchema } from '../support/sql.js'

const WORKERS = 4
const EXPIRED = 6000
const LIVE = 300

interface WorkerReport {
  deleted: number
  sweeps: Array<[number, number]>
  errors: string[]
}

// Each worker runs the backend's cleanup in a loop until one of its own sweeps finds
// nothing left; it reports what it deleted and when it held the lock. The pool is
// watched: the lock is surely held from the reply to the lock query until the
// unlock query is sent, so those windows of two workers must never overlap.
const WORKER = `
import pg from 'pg'
import mysql from 'mysql2/promise'
import { postgresBackend } from 'sessionmesh/postgres'
import { mysqlBackend } from 'sessionmesh/mysql'
const { store, url, table, start } = JSON.parse(process.env.SM_WORKER)
const report = { deleted: 0, sweeps: [], errors: [] }
const now = () => performance.timeOrigin + performance.now()
let heldFrom = 0
const watch = (connection) => Object.assign(Object.create(connection), {
  query: async (sql, values) => {
    if (/RELEASE_LOCK|pg_advisory_unlock/.test(sql)) report.sweeps.push([heldFrom, now()])
    const result = await connection.query(sql, values)
    if (/GET_LOCK|pg_try_advisory_lock/.test(sql)) heldFrom = now()
    return result
  },
  release: (error) => connection.release(error),
})
let pool, backend
if (store === 'postgres') {
  pool = new pg.Pool({ connectionString: url, max: 2 })
  const connect = pool.connect.bind(pool)
  backend = postgresBackend({ table, cleanupInterval: 0, cleanupBatch: 200,
    pool: { query: pool.query.bind(pool), connect: async () => watch(await connect()) } })
} else {
  pool = mysql.createPool({ uri: url, connectionLimit: 2 })
  const getConnection = pool.getConnection.bind(pool)
  backend = mysqlBackend({ table, cleanupInterval: 0, cleanupBatch: 200,
    pool: { query: pool.query.bind(pool), getConnection: async () => watch(await getConnection()) } })
}
while (Date.now() < start) await new Promise((r) => setTimeout(r, 1))
const deadline = Date.now() + 20000
while (Date.now() < deadline) {
  try {
    const result = await backend.cleanup()
    if (result.acquired) {
      report.deleted += result.deleted
      if (result.deleted === 0) break
    }
  } catch (error) {
    report.errors.push(String(error))
  }
  await new Promise((r) => setTimeout(r, Math.random() * 5))
}
await backend.close()
await pool.end()
process.stdout.write(JSON.stringify(report))
`

function runWorker(
  env: object,
): Promise<{ code: number | null; report: WorkerReport; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', WORKER], {
      cwd: process.cwd(),
      env: { ...process.env, SM_WORKER: JSON.stringify(env) },
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => {
      stdout += chunk
    })
    child.stderr.on('data', (chunk) => {
      stderr += chunk
    })
    child.once('error', reject)
    child.once('exit', (code) => {
      try {
        resolve({ code, report: JSON.parse(stdout) as WorkerReport, stderr })
      } catch {
        reject(new Error(`worker exited ${code}: ${stderr || stdout}`))
      }
    })
  })
}

async function race(
  store: SqlStoreKind,
  url: string,
  table: string,
  query: (sql: string) => Promise<Array<Record<string, unknown>>>,
): Promise<void> {
  await migrate({ store, url, table })
  // Expired sessions, expired tombstones (fields NULL) and live sessions.
  const now = Date.now()
  const rows: string[] = []
  for (let i = 0; i < EXPIRED; i++) {
    const fields = i % 3 === 0 ? 'NULL' : `'{"a":"1"}'`
    rows.push(`('${randomUUID()}', ${fields}, ${now - 5000}, ${now - 5000}, ${now - 1000 - i})`)
  }
  for (let i = 0; i < LIVE; i++) {
    rows.push(`('live-${i}', '{"a":"1"}', ${now}, ${now}, ${now + 3_600_000})`)
  }
  for (let i = 0; i < rows.length; i += 1000) {
    await query(
      `INSERT INTO ${table} (id, fields, created_at, last_seen_at, expires_at) VALUES ${rows.slice(i, i + 1000).join(',')}`,
    )
  }

  const start = Date.now() + 1500
  const results = await Promise.all(
    Array.from({ length: WORKERS }, () => runWorker({ store, url, table, start })),
  )

  for (const { code, report, stderr } of results) {
    expect(code, stderr).toBe(0)
    expect(report.errors).toEqual([])
  }
  // Each expired row was deleted once: the deletions add up to exactly the expired rows.
  const total = results.reduce((sum, { report }) => sum + report.deleted, 0)
  expect(total).toBe(EXPIRED)
  const [left] = await query(`SELECT COUNT(*) AS n FROM ${table}`)
  expect(Number(left?.n)).toBe(LIVE)
  // One process at a time: no two workers' lock windows overlap. The windows are
  // read from each process's own clock (timeOrigin + performance.now()), which can
  // disagree between processes by a few ms: allow that much, far below a sweep.
  const CLOCK_SLACK_MS = 20
  const sweeps = results.flatMap(({ report }, worker) =>
    report.sweeps.map(([from, to]) => ({ worker, from, to })),
  )
  expect(sweeps.length).toBeGreaterThan(0)
  sweeps.sort((a, b) => a.from - b.from)
  for (let i = 1; i < sweeps.length; i++) {
    const [previous, current] = [sweeps[i - 1], sweeps[i]]
    if (previous && current && previous.worker !== current.worker) {
      expect(current.from).toBeGreaterThanOrEqual(previous.to - CLOCK_SLACK_MS)
    }
  }
}

describe('expiry cleanup with 4 processes at once', () => {
  it('postgres: deletes each expired row once, one sweeper at a time, no errors', async () => {
    const { pool, schema, drop } = await pgSchema()
    try {
      await race(
        'postgres',
        PG_URL,
        `${schema}.sessions`,
        async (sql) => (await pool.query(sql)).rows,
      )
    } finally {
      await drop()
    }
  }, 60_000)

  it('mysql: deletes each expired row once, one sweeper at a time, no errors', async () => {
    const { pool, database, drop } = await mysqlDatabase()
    try {
      await race('mysql', MYSQL_URL, `${database}.sessions`, async (sql) => {
        const [rows] = await pool.query(sql)
        return rows as Array<Record<string, unknown>>
      })
    } finally {
      await drop()
    }
  }, 60_000)
})
