import { randomBytes } from 'node:crypto'
import mysql from 'mysql2/promise'
import pg from 'pg'

/** The machine's PostgreSQL (trust auth), overridable with PG_TEST_URL. */
export const PG_URL = process.env.PG_TEST_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
/** The machine's MariaDB/MySQL, overridable with MYSQL_TEST_URL. */
export const MYSQL_URL = process.env.MYSQL_TEST_URL ?? 'mysql://root@127.0.0.1:3306/test'

/** A name no other test run uses. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`
}

/** A schema of its own in the test database, and a pool; `drop()` removes both. */
export async function pgSchema(): Promise<{
  pool: pg.Pool
  schema: string
  drop(): Promise<void>
}> {
  const schema = uniqueName('sm_test')
  const pool = new pg.Pool({ connectionString: PG_URL, max: 10 })
  await pool.query(`CREATE SCHEMA ${schema}`)
  return {
    pool,
    schema,
    drop: async () => {
      await pool.query(`DROP SCHEMA ${schema} CASCADE`)
      await pool.end()
    },
  }
}

/** A database of its own on the test server, and a pool on it; `drop()` removes both. */
export async function mysqlDatabase(): Promise<{
  pool: mysql.Pool
  database: string
  uri: string
  drop(): Promise<void>
}> {
  const database = uniqueName('sm_test')
  const admin = await mysql.createConnection(MYSQL_URL)
  await admin.query(`CREATE DATABASE ${database}`)
  await admin.end()
  const uri = MYSQL_URL.replace(/\/[^/]*$/, `/${database}`)
  const pool = mysql.createPool({ uri, connectionLimit: 10 })
  return {
    pool,
    database,
    uri,
    drop: async () => {
      await pool.query(`DROP DATABASE ${database}`)
      await pool.end()
    },
  }
}
