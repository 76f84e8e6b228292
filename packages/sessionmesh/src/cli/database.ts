import { DEFAULT_TABLE } from '../backends/sql-common.js'
import { redactUrl, type StoreKind } from './args.js'
import { UsageError } from './system.js'

/** A database the CLI keeps sessions in, resolved from the flags and the environment. */
export interface Database {
  /** Which SQL backend: for `--store tiered`, the one under the Redis cache. */
  kind: 'postgres' | 'mysql'
  /** `undefined` only for PostgreSQL configured by `PG*` variables, which node-postgres reads. */
  url: string | undefined
  /** The sessions table. */
  table: string
}

/** A database that could not be reached or migrated: exit 1, not a usage error. */
export class DatabaseError extends Error {
  override name = 'DatabaseError'
}

/** How long the migration may take to connect and run before `up` gives up. */
const MIGRATION_TIMEOUT_MS = 15_000

// The variables node-postgres reads when it has no connection string.
const PG_VARIABLES = ['PGHOST', 'PGHOSTADDR', 'PGPORT', 'PGUSER', 'PGDATABASE', 'PGSERVICE']

/**
 * Where the sessions of `store` live: `--database-url`, else `SESSIONMESH_DATABASE_URL`,
 * `DATABASE_URL` (and `MYSQL_URL` for MySQL), else for PostgreSQL the `PG*` variables.
 * The kind of a tiered store's database comes from the URL's scheme. Throws a
 * {@link UsageError} that names the flag and the variables when nothing is set.
 */
export function resolveDatabase(
  options: {
    store: Exclude<StoreKind, 'redis' | 'memcached'>
    url: string | undefined
    table: string | undefined
  },
  env: Record<string, string | undefined> = process.env,
): Database {
  const url =
    options.url ??
    env.SESSIONMESH_DATABASE_URL ??
    (options.store !== 'postgres' ? env.MYSQL_URL : undefined) ??
    env.DATABASE_URL
  const kind =
    options.store === 'tiered'
      ? url && /^(mysql|mariadb):/.test(url)
        ? 'mysql'
        : 'postgres'
      : options.store
  if (url !== undefined) {
    const scheme = /^(mysql|mariadb):/.test(url) ? 'mysql' : 'postgres'
    if (scheme !== kind) {
      throw new UsageError(
        `--store ${options.store} needs a ${kind}:// URL, not ${JSON.stringify(redactUrl(url))}`,
      )
    }
  } else if (kind === 'mysql' || !PG_VARIABLES.some((name) => env[name])) {
    const example =
      kind === 'mysql'
        ? 'mysql://user:password@127.0.0.1:3306/app'
        : 'postgres://user:password@127.0.0.1:5432/app'
    const variables =
      kind === 'mysql'
        ? 'SESSIONMESH_DATABASE_URL, MYSQL_URL or DATABASE_URL'
        : 'SESSIONMESH_DATABASE_URL or DATABASE_URL (or PGHOST, PGUSER, PGDATABASE…)'
    throw new UsageError(
      `--store ${options.store} needs a ${kind === 'mysql' ? 'MySQL/MariaDB' : 'PostgreSQL'} database: ` +
        `pass --database-url ${example}, or set ${variables}`,
    )
  }
  return { kind, url, table: options.table ?? DEFAULT_TABLE }
}

/** How a database appears in logs and messages: no password. */
export function describeDatabase(database: Database): string {
  return database.url === undefined ? 'PostgreSQL from the PG* variables' : redactUrl(database.url)
}

/**
 * Creates the sessions table if it is missing: the documented, idempotent
 * migration (`sessionmesh migrate`). Throws a {@link DatabaseError} saying which
 * database could not be reached or migrated.
 */
export async function migrateDatabase(database: Database): Promise<void> {
  // Loaded here so that `up --store redis` never loads the SQL code.
  const { migrate } = await import('../backends/migrate.js')
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no answer within ${MIGRATION_TIMEOUT_MS / 1000} s`)),
      MIGRATION_TIMEOUT_MS,
    )
  })
  try {
    await Promise.race([
      migrate({
        store: database.kind,
        table: database.table,
        ...(database.url === undefined ? {} : { url: database.url }),
      }),
      timeout,
    ])
  } catch (error) {
    throw new DatabaseError(
      `cannot migrate the sessions table ${database.table} on ${describeDatabase(database)}: ${reason(error)}`,
      { cause: error },
    )
  } finally {
    clearTimeout(timer)
  }
}

/** Why `error` happened, in a few words. node-postgres reports a refused connection as an AggregateError with an empty message. */
export function reason(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) return reason(error.errors[0])
  if (error instanceof Error)
    return error.message || (error as { code?: string }).code || error.name
  return String(error)
}
