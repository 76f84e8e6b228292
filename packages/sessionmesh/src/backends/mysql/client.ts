// The shapes of a mysql2 promise pool and its connections that the backend uses:
// structural, so that the package does not depend on `mysql2`.

/** A connection of a mysql2 promise pool (`PoolConnection` of `mysql2/promise`). */
export interface MysqlConnectionLike {
  query(sql: string, values?: unknown[]): Promise<[unknown, unknown]>
  /** A prepared statement (mysql2 prepares it once per connection); used when present. */
  execute?(sql: string, values?: Array<string | null>): Promise<[unknown, unknown]>
  release(): void
}

/** The part of a `mysql2/promise` pool this backend uses. */
export interface MysqlPoolLike {
  query(sql: string, values?: unknown[]): Promise<[unknown, unknown]>
  /** A prepared statement (mysql2 prepares it once per connection); used when present. */
  execute?(sql: string, values?: Array<string | null>): Promise<[unknown, unknown]>
  getConnection(): Promise<MysqlConnectionLike>
}
