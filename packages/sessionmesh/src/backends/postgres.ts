import { createHash } from 'node:crypto'
import { debuglog } from 'node:util'
import {
  type BusState,
  type CallOptions,
  formatEvent,
  type IndexedSession,
  LateCallError,
  type LimitedWriteResult,
  parseEvent,
  resealPairs,
  type SessionEvent,
  type SessionLimitRule,
  type SessionTouch,
  type SessionWrite,
  type StoredSession,
  type WriteResult,
} from '../core/backend.js'
import { InvalidOptionError } from '../core/errors.js'
import { overLimit } from '../core/session-limit.js'
import {
  type CleanupResult,
  DEFAULT_TABLE,
  decodeRow,
  isLate,
  NETWORK_ERRORS,
  type ResolvedSqlOptions,
  resolveSqlOptions,
  rowMeta,
  type SessionRow,
  type SqlBackend,
  type SqlBackendOptions,
  scheduleCleanup,
  tableParts,
} from './sql-common.js'

export type { CleanupResult, SqlBackend, SqlBackendOptions } from './sql-common.js'

const debug = debuglog('sessionmesh:postgres')

/** What a node-postgres query answers, as far as this backend reads it. */
export interface PgResult {
  rows: Array<Record<string, unknown>>
  rowCount: number | null
}

/** A connection checked out of a node-postgres `Pool` (`PoolClient`). */
export interface PgClientLike {
  query(text: string, values?: unknown[]): Promise<PgResult>
  release(error?: Error | boolean): void
  // One loose signature: node-postgres declares `on` as a generic over its events,
  // which no list of overloads in a structural type can match.
  on(event: 'notification' | 'error' | 'end', listener: (...args: never[]) => void): unknown
  removeAllListeners(event?: string): unknown
}

/** The part of a node-postgres `Pool` this backend uses. */
export interface PgPoolLike {
  query(text: string, values?: unknown[]): Promise<PgResult>
  connect(): Promise<PgClientLike>
}

/** A pool or a checked-out connection: where a statement runs. */
type PgQueryable = Pick<PgPoolLike, 'query'>

/** Options of {@link postgresBackend}. */
export interface PostgresBackendOptions extends SqlBackendOptions {
  /** A node-postgres `Pool`. The backend never ends it. */
  pool: PgPoolLike
  /**
   * Publish every change and destroy with `pg_notify`, in the same statement as the
   * write, so that {@link SqlBackend.subscribe} works on a PostgreSQL-only deployment.
   * NOTIFY serializes committing transactions on a database-wide lock: turn it off
   * when nothing subscribes (no near cache, no socket binding). The tiered backend
   * takes its events from here when this is on, from its cache otherwise.
   * @default true
   */
  notify?: boolean
  /**
   * The LISTEN/NOTIFY channel.
   * @default `${table}_events`
   */
  channel?: string
}

/**
 * Sessions in a PostgreSQL table, shared by every process using the same table.
 * Each write is one statement: the changed keys merged into a `jsonb` column, the
 * expiry, the user id column (the user index) and the change notification,
 * atomically, in one round trip. Create the table first with
 * {@link migratePostgres} (or the SQL of {@link postgresSchema}).
 *
 * @example
 * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL })
 * await migratePostgres(pool) // once, at deploy time
 * const store = new SessionStore({ backend: postgresBackend({ pool }) })
 */
export function postgresBackend(options: PostgresBackendOptions): SqlBackend {
  return new PostgresBackend(options)
}

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

class PostgresBackend implements SqlBackend {
  readonly kind = 'postgres'
  readonly table: string
  readonly #pool: PgPoolLike
  readonly #options: ResolvedSqlOptions
  readonly #channel: string | undefined
  readonly #sql: ReturnType<typeof statements>
  readonly #stopCleanup: () => void

  constructor(options: PostgresBackendOptions) {
    if (typeof options.pool?.query !== 'function' || typeof options.pool.connect !== 'function') {
      throw new InvalidOptionError('postgresBackend needs `pool`: a node-postgres Pool')
    }
    this.#pool = options.pool
    this.#options = resolveSqlOptions(options)
    this.table = this.#options.table
    this.#channel =
      options.notify === false ? undefined : (options.channel ?? `${this.table}_events`)
    this.#sql = statements(quoteTable(this.table), this.#channel !== undefined)
    this.#stopCleanup = scheduleCleanup(
      this.#options.cleanupInterval,
      () => this.cleanup(),
      (error) => debug('cleanup failed: %s', error),
    )
  }

  async get(sid: string): Promise<StoredSession | null> {
    const { rows } = await this.#pool.query(this.#sql.get, [sid, Date.now()])
    const row = rows[0]
    return row ? decodeRow(row as unknown as SessionRow) : null
  }

  write(sid: string, write: SessionWrite): Promise<WriteResult> {
    return this.#write(this.#pool, sid, write)
  }

  /**
   * The write and the session limit in one transaction, under a lock per user
   * (`pg_advisory_xact_lock`): concurrent logins of one user take turns, so each
   * counts what the previous one left. The oldest are the first created.
   */
  async writeLimited(
    sid: string,
    write: SessionWrite,
    limit: SessionLimitRule,
  ): Promise<LimitedWriteResult> {
    const client = await this.#pool.connect()
    let broken: Error | undefined
    try {
      await client.query('BEGIN')
      try {
        const user = String(write.userId)
        await client.query(
          `SELECT pg_advisory_xact_lock(${lockKey(`limit:${this.table}:${user}`)})`,
        )
        const { rows } = await client.query(this.#sql.others, [user, write.now, sid])
        const others = rows.map((row) => String(row.id))
        const revoked = overLimit(others, limit)
        if (revoked === 'full') {
          await client.query('ROLLBACK')
          return { result: 'full' }
        }
        if ((await this.#write(client, sid, write)) === 'gone') {
          await client.query('ROLLBACK')
          return { result: 'gone' }
        }
        for (const id of revoked) {
          const said: CallOptions = { reason: 'limit', by: write.by }
          if (write.deadline !== undefined) said.deadline = write.deadline
          await this.#destroy(client, id, said)
        }
        await client.query('COMMIT')
        return { result: 'ok', revoked }
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {})
        throw error
      }
    } catch (error) {
      broken = error instanceof Error ? error : new Error(String(error))
      throw error
    } finally {
      client.release(broken)
    }
  }

  async #write(db: PgQueryable, sid: string, write: SessionWrite): Promise<WriteResult> {
    const common = [
      sid,
      JSON.stringify(write.set),
      write.unset,
      write.replace,
      write.now,
      Math.floor(write.expiresAt),
      write.maxLifetime,
      write.userId ?? null,
      write.device.userAgent ?? null,
      write.device.ip ?? null,
      write.deadline ?? null,
    ]
    const values: unknown[] = common
    if (write.mode === 'update') values.push(JSON.stringify(resealPairs(write)))
    if (this.#channel !== undefined) values.push(this.#channel, formatEvent('changed', sid))
    const sql = write.mode === 'create' ? this.#sql.create : this.#sql.update
    const { rows } = await db.query(sql, values)
    if (rows.length > 0) return 'ok'
    if (isLate(write.deadline)) throw new LateCallError(this.kind, 'write')
    return 'gone'
  }

  async touch(sid: string, touch: SessionTouch): Promise<WriteResult> {
    const values = [sid, touch.now, Math.floor(touch.expiresAt), touch.maxLifetime]
    const { rows } = await this.#pool.query(this.#sql.touch, values)
    return rows.length > 0 ? 'ok' : 'gone'
  }

  destroy(sid: string, options: CallOptions = {}): Promise<void> {
    return this.#destroy(this.#pool, sid, options)
  }

  async #destroy(db: PgQueryable, sid: string, options: CallOptions): Promise<void> {
    const values: unknown[] = [
      sid,
      Date.now(),
      this.#options.tombstoneTtl,
      options.deadline ?? null,
    ]
    if (this.#channel !== undefined) {
      values.push(this.#channel, formatEvent('destroyed', sid, options))
    }
    const { rows } = await db.query(this.#sql.destroy, values)
    if (rows.length === 0) throw new LateCallError(this.kind, 'destroy')
  }

  async listUser(userId: string, now: number): Promise<IndexedSession[]> {
    const { rows } = await this.#pool.query(this.#sql.listUser, [userId, now])
    return rows.map((row) => ({
      id: String(row.id),
      meta: rowMeta(row as unknown as SessionRow),
    }))
  }

  async destroyUser(userId: string, except?: string, options: CallOptions = {}): Promise<string[]> {
    const values: unknown[] = [
      userId,
      except ?? null,
      Date.now(),
      this.#options.tombstoneTtl,
      options.deadline ?? null,
    ]
    if (this.#channel !== undefined) {
      values.push(this.#channel, options.reason ?? null, options.by ?? null)
    }
    const { rows } = await this.#pool.query(this.#sql.destroyUser, values)
    return rows.filter((row) => row.live === true).map((row) => String(row.id))
  }

  async count(): Promise<number> {
    const { rows } = await this.#pool.query(this.#sql.count, [Date.now()])
    return Number(rows[0]?.n ?? 0)
  }

  async ids(): Promise<string[]> {
    const { rows } = await this.#pool.query(this.#sql.ids, [Date.now()])
    return rows.map((row) => String(row.id))
  }

  async clear(): Promise<void> {
    await this.#pool.query(this.#sql.clear)
  }

  async cleanup(): Promise<CleanupResult> {
    const client = await this.#pool.connect()
    let broken: Error | undefined
    try {
      // A session-level lock on this connection: if this process dies mid-sweep,
      // the connection drops and the lock goes with it.
      const key = lockKey(`cleanup:${this.table}`)
      const { rows } = await client.query(`SELECT pg_try_advisory_lock(${key}) AS ok`)
      if (rows[0]?.ok !== true) return { acquired: false, deleted: 0 }
      let deleted = 0
      try {
        for (;;) {
          const result = await client.query(this.#sql.sweep, [
            Date.now(),
            this.#options.cleanupBatch,
          ])
          deleted += result.rowCount ?? 0
          if ((result.rowCount ?? 0) < this.#options.cleanupBatch) break
        }
      } finally {
        await client.query(`SELECT pg_advisory_unlock(${key})`)
      }
      debug('cleanup deleted %d expired rows of %s', deleted, this.table)
      return { acquired: true, deleted }
    } catch (error) {
      broken = error instanceof Error ? error : new Error(String(error))
      throw error
    } finally {
      client.release(broken)
    }
  }

  async subscribe(
    listener: (event: SessionEvent) => void,
    onGap?: (state: BusState) => void,
  ): Promise<() => Promise<void>> {
    const channel = this.#channel
    if (channel === undefined) {
      throw new InvalidOptionError('subscribe needs the postgres backend’s `notify` option on')
    }
    const pool = this.#pool
    let client: PgClientLike | undefined
    let stopped = false
    const deliver = (message: { channel: string; payload?: string }) => {
      if (message.channel !== channel) return
      const event = parseEvent(message.payload ?? '')
      if (event) listener(event)
      else debug('ignoring a notification on %s that is not a session event', channel)
    }
    // The LISTEN connection is held for as long as the subscription: one fewer in the pool.
    const listen = async (): Promise<void> => {
      const next = await pool.connect()
      next.on('notification', deliver)
      // A dedicated connection lost means missed events: reconnect, and say so.
      const lost = (error?: Error) => {
        if (client !== next) return
        client = undefined
        next.removeAllListeners('notification')
        next.release(error ?? true)
        if (stopped) return
        debug('listen connection lost (%s); reconnecting', error ?? 'ended')
        onGap?.('lost')
        const retry = () => {
          if (stopped) return
          listen().then(
            () => onGap?.('restored'),
            (failure: unknown) => {
              debug('listen reconnect failed: %s', failure)
              setTimeout(retry, 1000).unref()
            },
          )
        }
        setTimeout(retry, 100).unref()
      }
      next.on('error', lost)
      next.on('end', () => lost())
      client = next
      await next.query(`LISTEN ${quote(channel)}`)
    }
    await listen()
    return async () => {
      stopped = true
      const current = client
      client = undefined
      if (!current) return
      try {
        await current.query(`UNLISTEN ${quote(channel)}`)
        current.removeAllListeners('notification')
        current.release()
      } catch (error) {
        current.release(error instanceof Error ? error : true)
      }
    }
  }

  isOutage(error: unknown): boolean {
    return isPgOutage(error)
  }

  async close(): Promise<void> {
    this.#stopCleanup()
  }
}

/**
 * True unless the server answered: an SQL error reply (it has a `severity`) means the
 * database is up, except connection-class errors, shutdowns and "too many clients".
 */
export function isPgOutage(error: unknown): boolean {
  if (!(error instanceof Error)) return true
  const { code, severity } = error as { code?: unknown; severity?: unknown }
  if (typeof severity === 'string' && typeof code === 'string') {
    return /^(08|57P0|53300)/.test(code)
  }
  if (typeof code === 'string' && NETWORK_ERRORS.has(code)) return true
  // node-postgres's own failures ("Connection terminated", connect timeouts) carry no code.
  return true
}

function statements(t: string, notify: boolean) {
  // `$n` after the common parameters: the channel and the payload, when notifying.
  const announce = (from: string, channelAt: number) =>
    notify
      ? `SELECT pg_notify($${channelAt}::text, $${channelAt + 1}::text) FROM ${from}`
      : `SELECT 1 FROM ${from}`
  // True while the server's clock is before the call's deadline (a parameter, NULL
  // for none). Checked where the row is decided on, so that a statement that sat
  // in a stalled connection or queue past its deadline applies nothing.
  const onTime = (n: number) =>
    `($${n}::float8 IS NULL OR extract(epoch FROM clock_timestamp()) * 1000 < $${n}::float8)`
  const capped = (created: string) =>
    `CASE WHEN $7::bigint > 0 THEN LEAST($6::bigint, ${created} + $7::bigint) ELSE $6::bigint END`
  // Parameters of a write: 1 id, 2 set (jsonb), 3 unset, 4 replace, 5 now,
  // 6 expiresAt, 7 maxLifetime, 8 userId, 9 user agent, 10 ip, 11 deadline,
  // [12 reseal (update only),] then channel and payload. An update writes the
  // device fields it is given and keeps the others, and rewrites each reseal key
  // that still holds its `from` (both: the encryption layer, after a key rotation).
  const expired = 's.expires_at <= $5::bigint'
  return {
    get: `SELECT fields, created_at, last_seen_at, expires_at, user_id, user_agent, ip FROM ${t}
      WHERE id = $1 AND fields IS NOT NULL AND expires_at > $2::bigint`,
    // An expired row (session or tombstone) is replaced as if absent; a live
    // tombstone fails the conflict's WHERE, so nothing is written and no row returns.
    create: `WITH w AS (
      INSERT INTO ${t} AS s (id, fields, created_at, last_seen_at, expires_at, user_id, user_agent, ip)
      SELECT $1::text, $2::jsonb - $3::text[], $5::bigint, $5::bigint, ${capped('$5::bigint')},
        $8::text, $9::text, $10::text
      WHERE ${onTime(11)}
      ON CONFLICT (id) DO UPDATE SET
        fields = CASE WHEN ${expired} OR $4::boolean THEN EXCLUDED.fields
          ELSE (s.fields || $2::jsonb) - $3::text[] END,
        created_at = CASE WHEN ${expired} THEN EXCLUDED.created_at ELSE s.created_at END,
        user_agent = CASE WHEN ${expired} THEN EXCLUDED.user_agent ELSE s.user_agent END,
        ip = CASE WHEN ${expired} THEN EXCLUDED.ip ELSE s.ip END,
        last_seen_at = EXCLUDED.last_seen_at,
        expires_at = CASE WHEN ${expired} THEN EXCLUDED.expires_at ELSE ${capped('s.created_at')} END,
        user_id = EXCLUDED.user_id
      WHERE (s.fields IS NOT NULL OR ${expired}) AND ${onTime(11)}
      RETURNING s.id
    ) ${announce('w', 12)}`,
    update: `WITH w AS (
      UPDATE ${t} AS s SET
        fields = (CASE WHEN $4::boolean THEN $2::jsonb ELSE s.fields || $2::jsonb END - $3::text[])
          || COALESCE((SELECT jsonb_object_agg(r.key, r.value->1) FROM jsonb_each($12::jsonb) r
            WHERE s.fields->r.key = r.value->0), '{}'::jsonb),
        last_seen_at = $5::bigint,
        expires_at = ${capped('s.created_at')},
        user_id = $8,
        user_agent = COALESCE($9::text, s.user_agent),
        ip = COALESCE($10::text, s.ip)
      WHERE s.id = $1 AND s.fields IS NOT NULL AND s.expires_at > $5::bigint AND ${onTime(11)}
      RETURNING s.id
    ) ${announce('w', 13)}`,
    // Parameters: 1 id, 2 now, 3 expiresAt, 4 maxLifetime.
    touch: `UPDATE ${t} SET last_seen_at = $2::bigint,
        expires_at = CASE WHEN $4::bigint > 0 THEN LEAST($3::bigint, created_at + $4::bigint) ELSE $3::bigint END
      WHERE id = $1 AND fields IS NOT NULL AND expires_at > $2::bigint
      RETURNING 1`,
    // Parameters: 1 id, 2 now, 3 tombstone ttl, 4 deadline [, channel, payload].
    destroy: `WITH d AS (
      INSERT INTO ${t} AS s (id, fields, created_at, last_seen_at, expires_at)
      SELECT $1::text, NULL::jsonb, $2::bigint, $2::bigint, $2::bigint + $3::bigint
      WHERE ${onTime(4)}
      ON CONFLICT (id) DO UPDATE SET fields = NULL, user_id = NULL, user_agent = NULL, ip = NULL,
        last_seen_at = EXCLUDED.last_seen_at, expires_at = EXCLUDED.expires_at
      WHERE ${onTime(4)}
      RETURNING s.id
    ) ${announce('d', 5)}`,
    listUser: `SELECT id, created_at, last_seen_at, expires_at, user_id, user_agent, ip FROM ${t}
      WHERE user_id = $1 AND fields IS NOT NULL AND expires_at > $2::bigint ORDER BY created_at, id`,
    // Parameters: 1 user, 2 now, 3 the session logging in. Oldest first.
    others: `SELECT id FROM ${t}
      WHERE user_id = $1 AND fields IS NOT NULL AND expires_at > $2::bigint AND id <> $3
      ORDER BY created_at, id`,
    // Parameters: 1 user, 2 except, 3 now, 4 tombstone ttl, 5 deadline [, channel, reason, caller].
    // Rows are locked in id order so that two revocations of one user cannot deadlock.
    destroyUser: `WITH victims AS (
      SELECT id, expires_at FROM ${t}
      WHERE user_id = $1 AND fields IS NOT NULL AND id IS DISTINCT FROM $2::text AND ${onTime(5)}
      ORDER BY id FOR UPDATE
    ), d AS (
      UPDATE ${t} AS s SET fields = NULL, user_id = NULL, user_agent = NULL, ip = NULL,
        last_seen_at = $3::bigint, expires_at = $3::bigint + $4::bigint
      FROM victims WHERE s.id = victims.id
      RETURNING s.id, victims.expires_at > $3::bigint AS live
    ) SELECT id, live${
      notify
        ? `, pg_notify($6::text, json_strip_nulls(json_build_object('v', 1, 'type', 'destroyed', 'sid', id, 'reason', $7::text, 'by', $8::text))::text)`
        : ''
    } FROM d`,
    count: `SELECT count(*) AS n FROM ${t} WHERE fields IS NOT NULL AND expires_at > $1::bigint`,
    ids: `SELECT id FROM ${t} WHERE fields IS NOT NULL AND expires_at > $1::bigint`,
    clear: `DELETE FROM ${t}`,
    // SKIP LOCKED: a row a request is writing right now is left for the next sweep
    // rather than waited on; the outer condition re-checks it under the lock.
    sweep: `DELETE FROM ${t} WHERE id IN (
      SELECT id FROM ${t} WHERE expires_at <= $1::bigint LIMIT $2::int FOR UPDATE SKIP LOCKED
    ) AND expires_at <= $1::bigint`,
  }
}

function quote(identifier: string): string {
  return `"${identifier.replaceAll('"', '""')}"`
}

function quoteTable(table: string): string {
  const { schema, name } = tableParts(table)
  return schema === undefined ? quote(name) : `${quote(schema)}.${quote(name)}`
}

/** A stable 64-bit advisory lock key for `name`, as SQL text. */
function lockKey(name: string): string {
  const key = createHash('sha1').update(`sessionmesh:${name}`).digest().readBigInt64BE(0)
  return `${key}::bigint`
}
