// The shapes of node-postgres's pool and connections that the backend uses:
// structural, so that the package does not depend on `pg`.

/** What a node-postgres query answers, as far as this backend reads it. */
export interface PgResult {
  rows: Array<Record<string, unknown>>
  rowCount: number | null
}

/** A statement node-postgres prepares once per connection under `name`, and then only executes. */
export interface PgNamedStatement {
  name: string
  text: string
  values: unknown[]
}

/** A connection checked out of a node-postgres `Pool` (`PoolClient`). */
export interface PgClientLike {
  query(text: string, values?: unknown[]): Promise<PgResult>
  /** A named statement: prepared on the connection the first time, then only executed. */
  query(statement: PgNamedStatement): Promise<PgResult>
  release(error?: Error | boolean): void
  // One loose signature: node-postgres declares `on` as a generic over its events,
  // which no list of overloads in a structural type can match.
  on(event: 'notification' | 'error' | 'end', listener: (...args: never[]) => void): unknown
  removeAllListeners(event?: string): unknown
}

/** The part of a node-postgres `Pool` this backend uses. */
export interface PgPoolLike {
  query(text: string, values?: unknown[]): Promise<PgResult>
  /** A named statement: prepared on the connection the first time, then only executed. */
  query(statement: PgNamedStatement): Promise<PgResult>
  connect(): Promise<PgClientLike>
}

/** A pool or a checked-out connection: where a statement runs. */
export type PgQueryable = Pick<PgPoolLike, 'query'>
