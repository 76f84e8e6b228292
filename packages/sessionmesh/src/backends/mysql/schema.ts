import { DEFAULT_TABLE, quotedTable, tableParts } from '../sql-common.js'
import type { MysqlPoolLike } from './client.js'

/** Options of {@link migrateMysql} and {@link mysqlSchema}. */
export interface MysqlMigrationOptions {
  /**
   * The table to create, optionally qualified with its database.
   * @default 'sessionmesh_sessions'
   */
  table?: string
}

/**
 * The SQL that creates the sessions table and its indexes, idempotent, for
 * applications that run their own migration tool. Binary collation: session ids
 * and user ids are case-sensitive.
 */
export function mysqlSchema(options: MysqlMigrationOptions = {}): string {
  const table = options.table ?? DEFAULT_TABLE
  const { name } = tableParts(table)
  return `CREATE TABLE IF NOT EXISTS ${quoteTable(table)} (
  id VARCHAR(255) NOT NULL,
  fields JSON NULL,
  created_at BIGINT NOT NULL,
  last_seen_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  user_id VARCHAR(255) NULL,
  user_agent VARCHAR(1024) NULL,
  ip VARCHAR(64) NULL,
  PRIMARY KEY (id),
  KEY ${quote(`${name}_user_idx`)} (user_id),
  KEY ${quote(`${name}_expires_idx`)} (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`
}

/**
 * Creates the sessions table if it does not exist. Run it at deploy time (or
 * `sessionmesh migrate`); safe to run from several processes at once.
 *
 * @example
 * await migrateMysql(pool, { table: 'sessions' })
 */
export async function migrateMysql(
  pool: Pick<MysqlPoolLike, 'query'>,
  options: MysqlMigrationOptions = {},
): Promise<void> {
  await pool.query(mysqlSchema(options))
}

/** A backquoted SQL identifier. */
export function quote(identifier: string): string {
  return `\`${identifier.replaceAll('`', '``')}\``
}

/** The sessions table as SQL, quoted. */
export function quoteTable(table: string): string {
  return quotedTable(table, quote)
}
