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
} from '../../core/backend.js'
import { InvalidOptionError } from '../../core/errors.js'
import { overLimit } from '../../core/session-limit.js'
import {
  type CleanupResult,
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
} from '../sql-common.js'
import type { PgClientLike, PgPoolLike, PgQueryable, PgResult } from './client.js'
import { ChangeNotifier } from './notifier.js'
import { lockKey, quote, quoteTable } from './schema.js'
import { type Statements, statementNames, statements } from './statements.js'

export type { CleanupResult, SqlBackend, SqlBackendOptions } from '../sql-common.js'
export type { PgClientLike, PgNamedStatement, PgPoolLike, PgResult } from './client.js'
export { migratePostgres, type PostgresMigrationOptions, postgresSchema } from './schema.js'

const debug = debuglog('sessionmesh:postgres')

/** Options of {@link postgresBackend}. */
export interface PostgresBackendOptions extends SqlBackendOptions {
  /** A node-postgres `Pool`. The backend never ends it. */
  pool: PgPoolLike
  /**
   * Publish every change and destroy with `pg_notify`, so that
   * {@link SqlBackend.subscribe} works on a PostgreSQL-only deployment. A destroy
   * notifies in its own statement; a change just after its write commits, batched
   * with others (notifier.ts). Turn it off when nothing subscribes (no near cache,
   * no socket binding): a write then sends nothing more. The tiered backend takes
   * its events from here when this is on, from its cache otherwise.
   * @default true
   */
  notify?: boolean
  /**
   * The LISTEN/NOTIFY channel.
   * @default `${table}_events`
   */
  channel?: string
  /**
   * Send each statement as a named prepared statement: PostgreSQL parses and plans
   * it once per connection instead of on every call, which takes about a third off
   * a session read or write (bench/sql-statements.mjs postgres). Turn it off behind a pooler
   * that cannot keep prepared statements (PgBouncer in transaction mode before 1.21).
   * @default true
   */
  prepare?: boolean
}

/**
 * Sessions in a PostgreSQL table, shared by every process using the same table.
 * Each write is one statement: the changed keys merged into a `jsonb` column, the
 * expiry and the user id column (the user index), atomically, in one round trip;
 * its change notification follows the commit. Create the table first with
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

class PostgresBackend implements SqlBackend {
  readonly kind = 'postgres'
  readonly table: string
  readonly #pool: PgPoolLike
  readonly #options: ResolvedSqlOptions
  readonly #channel: string | undefined
  readonly #sql: Statements
  /** Each statement's prepared name, unless `prepare` is off. */
  readonly #names: Readonly<Record<keyof Statements, string>> | undefined
  readonly #stopCleanup: () => void
  /** Sends the writes' `changed` events, unless `notify` is off. */
  readonly #notifier: ChangeNotifier | undefined

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
    this.#names = options.prepare === false ? undefined : statementNames(this.#sql)
    const channel = this.#channel
    this.#notifier =
      channel === undefined
        ? undefined
        : new ChangeNotifier((payloads) =>
            this.#query(this.#pool, 'notifyChanged', [channel, payloads]),
          )
    this.#stopCleanup = scheduleCleanup(
      this.#options.cleanupInterval,
      () => this.cleanup(),
      (error) => debug('cleanup failed: %s', error),
    )
  }

  #query(db: PgQueryable, statement: keyof Statements, values: unknown[]): Promise<PgResult> {
    const text = this.#sql[statement]
    const name = this.#names?.[statement]
    return name === undefined ? db.query(text, values) : db.query({ name, text, values })
  }

  async get(sid: string): Promise<StoredSession | null> {
    const { rows } = await this.#query(this.#pool, 'get', [sid, Date.now()])
    const row = rows[0]
    return row ? decodeRow(row as unknown as SessionRow) : null
  }

  async write(sid: string, write: SessionWrite): Promise<WriteResult> {
    const result = await this.#write(this.#pool, sid, write)
    if (result === 'ok') this.#notifier?.changed(sid)
    return result
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
    // The sessions this login may revoke get their destroy after their changes.
    await this.#notifier?.flush()
    const client = await this.#pool.connect()
    let broken: Error | undefined
    try {
      await client.query('BEGIN')
      try {
        const user = String(write.userId)
        await client.query(
          `SELECT pg_advisory_xact_lock(${lockKey(`limit:${this.table}:${user}`)})`,
        )
        const { rows } = await this.#query(client, 'others', [user, write.now, sid])
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
        this.#notifier?.changed(sid)
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
    const { rows } = await this.#query(db, write.mode === 'create' ? 'create' : 'update', values)
    if (rows.length > 0) return 'ok'
    if (isLate(write.deadline)) throw new LateCallError(this.kind, 'write')
    return 'gone'
  }

  async touch(sid: string, touch: SessionTouch): Promise<WriteResult> {
    const values = [sid, touch.now, Math.floor(touch.expiresAt), touch.maxLifetime]
    const { rows } = await this.#query(this.#pool, 'touch', values)
    return rows.length > 0 ? 'ok' : 'gone'
  }

  async destroy(sid: string, options: CallOptions = {}): Promise<void> {
    await this.#notifier?.flush()
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
    const { rows } = await this.#query(db, 'destroy', values)
    if (rows.length === 0) throw new LateCallError(this.kind, 'destroy')
  }

  async listUser(userId: string, now: number): Promise<IndexedSession[]> {
    const { rows } = await this.#query(this.#pool, 'listUser', [userId, now])
    return rows.map((row) => ({
      id: String(row.id),
      meta: rowMeta(row as unknown as SessionRow),
    }))
  }

  async destroyUser(userId: string, except?: string, options: CallOptions = {}): Promise<string[]> {
    await this.#notifier?.flush()
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
    const { rows } = await this.#query(this.#pool, 'destroyUser', values)
    return rows.filter((row) => row.live === true).map((row) => String(row.id))
  }

  async count(): Promise<number> {
    const { rows } = await this.#query(this.#pool, 'count', [Date.now()])
    return Number(rows[0]?.n ?? 0)
  }

  async ids(): Promise<string[]> {
    const { rows } = await this.#query(this.#pool, 'ids', [Date.now()])
    return rows.map((row) => String(row.id))
  }

  async clear(): Promise<void> {
    await this.#query(this.#pool, 'clear', [])
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
          const result = await this.#query(client, 'sweep', [
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

  /** Stops the sweep and sends the change events still waiting. */
  async close(): Promise<void> {
    this.#stopCleanup()
    await this.#notifier?.flush()
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
