import { createHash } from 'node:crypto'
import { DEFAULT_TABLE, quotedTable, tableParts } from '../sql-common.js'
import type { PgPoolLike } from './client.js'

/** Options of {@link migratePostgres} and {@link postgresSchema}. */
export interface PostgresMigrationOptions {
  /**
   * The table to create, optionally schema-qualified (the schema must exist).
   * @default 'sessionmesh_sessions'
   */
  table?: string
}

/**
 * The SQL that creates the sessions table and its indexes, idempotent, for
 * applications that run their own migration tool.
 */
export function postgresSchema(options: PostgresMigrationOptions = {}): string {
  const table = options.table ?? DEFAULT_TABLE
  const { name } = tableParts(table)
  const t = quoteTable(table)
  return `CREATE TABLE IF NOT EXISTS ${t} (
  id text PRIMARY KEY,
  fields jsonb,
  created_at bigint NOT NULL,
  last_seen_at bigint NOT NULL,
  expires_at bigint NOT NULL,
  user_id text,
  user_agent text,
  ip text
);
CREATE INDEX IF NOT EXISTS ${quote(`${name}_user_idx`)} ON ${t} (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ${quote(`${name}_expires_idx`)} ON ${t} (expires_at);
`
}

/**
 * Creates the sessions table and its indexes if they do not exist. Run it at deploy
 * time (or `sessionmesh migrate`); safe to run from several processes at once.
 *
 * @example
 * await migratePostgres(pool, { table: 'app.sessions' })
 */
export async function migratePostgres(
  pool: Pick<PgPoolLike, 'query'>,
  options: PostgresMigrationOptions = {},
): Promise<void> {
  const table = options.table ?? DEFAULT_TABLE
  // A multi-statement string runs as one transaction; the lock keeps two
  // concurrent migrations from racing on CREATE TABLE IF NOT EXISTS.
  await pool.query(
    `SELECT pg_advisory_xact_lock(${lockKey(`migrate:${table}`)});\n${postgresSchema({ table })}`,
  )
}

/** A double-quoted SQL identifier. */
export function quote(identifier: string): string {
  return `"${identifier.replaceAll('"', '""')}"`
}

/** The sessions table as SQL, quoted. */
export function quoteTable(table: string): string {
  return quotedTable(table, quote)
}

/** A stable 64-bit advisory lock key for `name`, as SQL text. */
export function lockKey(name: string): string {
  const key = createHash('sha1').update(`sessionmesh:${name}`).digest().readBigInt64BE(0)
  return `${key}::bigint`
}
