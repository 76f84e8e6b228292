import { InvalidOptionError } from '../core/errors.js'
import { type MysqlPoolLike, migrateMysql, mysqlBackend } from './mysql/index.js'
import { migratePostgres, type PgPoolLike, postgresBackend } from './postgres/index.js'
import type { SqlBackend, SqlBackendOptions } from './sql-common.js'

// What a command line needs to run the SQL backends from a URL or the usual
// environment variables: `sessionmesh migrate` and `sessionmesh up --store …` call
// these, so the CLI never has to know node-postgres or mysql2.

/** The SQL databases sessionmesh can keep sessions in. */
export type SqlStoreKind = 'postgres' | 'mysql'

/** Where to connect, and which table. */
export interface SqlConnectionOptions {
  store: SqlStoreKind
  /**
   * `postgres://…` or `mysql://…`.
   * @default from the environment, see {@link sqlConnectionUrl}
   */
  url?: string
  /**
   * The sessions table, optionally schema- or database-qualified.
   * @default 'sessionmesh_sessions'
   */
  table?: string
  /**
   * Environment to read the connection from when `url` is not given.
   * @default process.env
   */
  env?: Record<string, string | undefined>
}

/**
 * The connection URL from the environment: `SESSIONMESH_DATABASE_URL`, then
 * `DATABASE_URL` (and `MYSQL_URL` for MySQL). `undefined` for PostgreSQL lets
 * node-postgres read `PGHOST`, `PGUSER`, `PGDATABASE`… itself.
 */
export function sqlConnectionUrl(
  store: SqlStoreKind,
  env: Record<string, string | undefined> = process.env,
): string | undefined {
  const url =
    env.SESSIONMESH_DATABASE_URL ??
    (store === 'mysql' ? env.MYSQL_URL : undefined) ??
    env.DATABASE_URL
  if (url === undefined && store === 'mysql') {
    throw new InvalidOptionError(
      'no MySQL connection: pass a URL or set SESSIONMESH_DATABASE_URL, MYSQL_URL or DATABASE_URL',
    )
  }
  return url
}

/** A pool opened from a URL, with the way to end it. */
export interface OpenedPool {
  store: SqlStoreKind
  pool: PgPoolLike | MysqlPoolLike
  end(): Promise<void>
}

/** Opens a node-postgres or mysql2 pool (both optional peer dependencies, loaded on demand). */
export async function openSqlPool(options: SqlConnectionOptions): Promise<OpenedPool> {
  const url = options.url ?? sqlConnectionUrl(options.store, options.env)
  if (options.store === 'postgres') {
    const { default: pg } = await import('pg')
    const pool = new pg.Pool(url === undefined ? {} : { connectionString: url })
    // An idle client's error (a server restart) must not crash the process; the
    // next query reconnects.
    pool.on('error', () => {})
    return { store: 'postgres', pool, end: () => pool.end() }
  }
  if (options.store === 'mysql') {
    const { default: mysql } = await import('mysql2/promise')
    const pool = mysql.createPool(url ?? '')
    return { store: 'mysql', pool, end: () => pool.end() }
  }
  throw new InvalidOptionError(`unknown SQL store ${JSON.stringify(options.store)}`)
}

/**
 * Creates the sessions table (idempotent). What `sessionmesh migrate --store postgres`
 * runs; call it from a deploy script the same way.
 *
 * @example
 * await migrate({ store: 'postgres', url: process.env.DATABASE_URL })
 */
export async function migrate(options: SqlConnectionOptions): Promise<void> {
  const opened = await openSqlPool(options)
  const table = options.table === undefined ? {} : { table: options.table }
  try {
    if (opened.store === 'postgres') await migratePostgres(opened.pool as PgPoolLike, table)
    else await migrateMysql(opened.pool as MysqlPoolLike, table)
  } finally {
    await opened.end()
  }
}

/** A backend over a pool it opened itself; `close()` ends both. */
export interface OpenedSqlBackend {
  backend: SqlBackend
  close(): Promise<void>
}

/**
 * Opens a pool and a backend over it, for a CLI or a quick start.
 *
 * @example
 * const { backend, close } = await openSqlBackend({ store: 'mysql', url })
 */
export async function openSqlBackend(
  options: SqlConnectionOptions & Omit<SqlBackendOptions, 'table'>,
): Promise<OpenedSqlBackend> {
  const opened = await openSqlPool(options)
  const { store: _store, url: _url, env: _env, ...backendOptions } = options
  const backend =
    opened.store === 'postgres'
      ? postgresBackend({ ...backendOptions, pool: opened.pool as PgPoolLike })
      : mysqlBackend({ ...backendOptions, pool: opened.pool as MysqlPoolLike })
  return {
    backend,
    close: async () => {
      await backend.close()
      await opened.end()
    },
  }
}
