import { createHash } from 'node:crypto'
import { debuglog } from 'node:util'
import {
  type CallOptions,
  type IndexedSession,
  LateCallError,
  type LimitedWriteResult,
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
import type { MysqlConnectionLike, MysqlPoolLike } from './client.js'
import { quoteTable } from './schema.js'
import { expiryParams, INT, int, jsonPath, onTimeParams, onTimeSql } from './sql.js'

export type { CleanupResult, SqlBackend, SqlBackendOptions } from '../sql-common.js'
export type { MysqlConnectionLike, MysqlPoolLike } from './client.js'
export { type MysqlMigrationOptions, migrateMysql, mysqlSchema } from './schema.js'

const debug = debuglog('sessionmesh:mysql')

/** Options of {@link mysqlBackend}. */
export interface MysqlBackendOptions extends SqlBackendOptions {
  /** A `mysql2/promise` pool (`mysql.createPool(…)` from `mysql2/promise`). The backend never ends it. */
  pool: MysqlPoolLike
  /**
   * Run the session read, the touch and the update of an existing session (the
   * statements of nearly every request) as prepared statements (the pool's
   * `execute`), parsed once per connection: a little off each, about a tenth of a
   * read-modify-write (bench/sql-statements.mjs mysql). Turn it off behind a proxy
   * that cannot keep prepared statements.
   * @default true
   */
  prepare?: boolean
}

interface OkPacket {
  affectedRows: number
  insertId: number | string
}

/** The server's answer to a lost deadlock: the statement was rolled back and may be retried. */
const ER_LOCK_DEADLOCK = 1213

/**
 * Sessions in a MySQL (8.0+) or MariaDB (10.5+) table. A write is one statement:
 * the changed keys merged with `JSON_MERGE_PATCH`/`JSON_REMOVE`, the expiry and the
 * user id column (the user index), atomically, in one round trip. Create the table
 * first with {@link migrateMysql} (or the SQL of {@link mysqlSchema}). There is no
 * change feed: use the tiered backend over Redis when nodes need invalidation.
 *
 * @example
 * const pool = mysql.createPool(process.env.DATABASE_URL) // from 'mysql2/promise'
 * await migrateMysql(pool) // once, at deploy time
 * const store = new SessionStore({ backend: mysqlBackend({ pool }) })
 */
export function mysqlBackend(options: MysqlBackendOptions): SqlBackend {
  return new MysqlBackend(options)
}

class MysqlBackend implements SqlBackend {
  readonly kind = 'mysql'
  readonly table: string
  readonly #pool: MysqlPoolLike
  readonly #options: ResolvedSqlOptions
  readonly #t: string
  readonly #prepare: boolean
  readonly #stopCleanup: () => void

  constructor(options: MysqlBackendOptions) {
    if (
      typeof options.pool?.query !== 'function' ||
      typeof options.pool.getConnection !== 'function'
    ) {
      throw new InvalidOptionError('mysqlBackend needs `pool`: a pool from mysql2/promise')
    }
    this.#pool = options.pool
    this.#options = resolveSqlOptions(options)
    this.table = this.#options.table
    this.#t = quoteTable(this.table)
    this.#prepare = options.prepare !== false && typeof options.pool.execute === 'function'
    this.#stopCleanup = scheduleCleanup(
      this.#options.cleanupInterval,
      () => this.cleanup(),
      (error) => debug('cleanup failed: %s', error),
    )
  }

  /**
   * A statement whose text holds no values (every one a parameter): prepared on
   * `db`, unless `prepare` is off or `db` cannot. Integers go as their decimal
   * strings, which MySQL converts exactly (a JS number would be sent as a DOUBLE);
   * the SQL casts them where a string would compare as text (LEAST).
   */
  #run(
    db: Pick<MysqlPoolLike, 'query' | 'execute'>,
    sql: string,
    values: Array<string | number | null>,
  ): Promise<[unknown, unknown]> {
    if (!this.#prepare || !db.execute) return db.query(sql, values)
    return db.execute(
      sql,
      values.map((value) => (typeof value === 'number' ? String(value) : value)),
    )
  }

  async get(sid: string): Promise<StoredSession | null> {
    const [rows] = await this.#run(
      this.#pool,
      `SELECT fields, created_at, last_seen_at, expires_at, user_id, user_agent, ip FROM ${this.#t}
       WHERE id = ? AND fields IS NOT NULL AND expires_at > ?`,
      [sid, int(Date.now())],
    )
    const row = (rows as SessionRow[])[0]
    return row ? decodeRow(row) : null
  }

  write(sid: string, write: SessionWrite): Promise<WriteResult> {
    return this.#write(this.#pool, (run) => this.#retry(run), sid, write)
  }

  /**
   * The write and the session limit in one transaction, the user's logins taking
   * turns under a named lock (`GET_LOCK`, waited for until the call's deadline), so
   * each counts what the previous one left. The oldest are the first created. A
   * deadlock rolls the whole transaction back, and it is run again.
   */
  writeLimited(
    sid: string,
    write: SessionWrite,
    limit: SessionLimitRule,
  ): Promise<LimitedWriteResult> {
    return this.#retry(async () => {
      const connection = await this.#pool.getConnection()
      const name = `sessionmesh:${createHash('sha1')
        .update(`${this.table}\0${String(write.userId)}`)
        .digest('hex')}`
      const wait =
        write.deadline === undefined ? 5 : Math.max(0, (write.deadline - Date.now()) / 1000)
      try {
        const [locked] = await connection.query('SELECT GET_LOCK(?, ?) AS ok', [name, wait])
        if (Number((locked as Array<{ ok: unknown }>)[0]?.ok) !== 1) {
          throw new LateCallError(this.kind, 'login under the session limit')
        }
        try {
          await connection.query('START TRANSACTION')
          try {
            const outcome = await this.#limited(connection, sid, write, limit)
            await connection.query(outcome.result === 'ok' ? 'COMMIT' : 'ROLLBACK')
            return outcome
          } catch (error) {
            await connection.query('ROLLBACK').catch(() => {})
            throw error
          }
        } finally {
          await connection.query('SELECT RELEASE_LOCK(?)', [name]).catch(() => {})
        }
      } finally {
        connection.release()
      }
    })
  }

  async #limited(
    connection: MysqlConnectionLike,
    sid: string,
    write: SessionWrite,
    limit: SessionLimitRule,
  ): Promise<LimitedWriteResult> {
    const [rows] = await connection.query(
      `SELECT id FROM ${this.#t}
       WHERE user_id = ? AND fields IS NOT NULL AND expires_at > ${int(write.now)} AND id <> ?
       ORDER BY created_at, id`,
      [String(write.userId), sid],
    )
    const others = (rows as Array<{ id: unknown }>).map((row) => String(row.id))
    const revoked = overLimit(others, limit)
    if (revoked === 'full') return { result: 'full' }
    const once = <T>(run: () => Promise<T>) => run()
    if ((await this.#write(connection, once, sid, write)) === 'gone') return { result: 'gone' }
    const said: CallOptions = write.deadline === undefined ? {} : { deadline: write.deadline }
    for (const id of revoked) await this.#destroy(connection, once, id, said)
    return { result: 'ok', revoked }
  }

  async #write(
    db: Pick<MysqlPoolLike, 'query' | 'execute'>,
    retry: <T>(run: () => Promise<T>) => Promise<T>,
    sid: string,
    write: SessionWrite,
  ): Promise<WriteResult> {
    const now = int(write.now)
    const capped = (created: string) =>
      write.maxLifetime > 0
        ? `LEAST(${int(write.expiresAt)}, ${created} + ${int(write.maxLifetime)})`
        : `${int(write.expiresAt)}`
    const fresh: Record<string, string> = { ...write.set }
    for (const key of write.unset) delete fresh[key]
    const paths = write.unset.map(jsonPath)
    const merged =
      paths.length > 0
        ? `JSON_REMOVE(JSON_MERGE_PATCH(fields, ?), ${paths.map(() => '?').join(', ')})`
        : 'JSON_MERGE_PATCH(fields, ?)'
    const setJson = JSON.stringify(write.set)
    const userId = write.userId ?? null
    const onTime = onTimeSql(write.deadline)

    if (write.mode === 'update') {
      let fields = write.replace ? '?' : merged
      let fieldValues = write.replace ? [JSON.stringify(fresh)] : [setJson, ...paths]
      const reseal = Object.entries(write.reseal ?? {})
      if (reseal.length > 0 && !write.replace) {
        // Sealed again only if every such key still holds what was loaded: all or
        // none, so a concurrent change is never undone (a later write reseals them).
        const same = reseal.map(() => 'JSON_UNQUOTE(JSON_EXTRACT(fields, ?)) <=> ?').join(' AND ')
        const again = JSON.stringify(Object.fromEntries(reseal.map(([key, { to }]) => [key, to])))
        fields = `IF(${same}, JSON_MERGE_PATCH(${merged}, ?), ${merged})`
        fieldValues = [
          ...reseal.flatMap(([key, { from }]) => [jsonPath(key), from]),
          ...fieldValues,
          again,
          ...fieldValues,
        ]
      }
      // LAST_INSERT_ID(x) makes the server's reply carry x back: it is evaluated only
      // for a row that matched, whatever the connection's FOUND_ROWS flag says.
      // Every value a parameter, so the text depends only on the write's shape
      // (how many keys it removes or reseals): prepared once per shape and connection.
      const [expires, expiresValues] = expiryParams(write.expiresAt, write.maxLifetime)
      const [onTimeParam, deadline] = onTimeParams(write.deadline)
      const [result] = await retry(() =>
        this.#run(
          db,
          `UPDATE ${this.#t} SET
            fields = ${fields},
            user_id = ?,
            user_agent = COALESCE(?, user_agent),
            ip = COALESCE(?, ip),
            last_seen_at = LAST_INSERT_ID(${INT}),
            expires_at = ${expires}
          WHERE id = ? AND fields IS NOT NULL AND expires_at > ${INT} AND ${onTimeParam}`,
          [
            ...fieldValues,
            userId,
            // An update writes the device fields it carries (sealed again after a key rotation).
            write.device.userAgent ?? null,
            write.device.ip ?? null,
            now,
            ...expiresValues,
            sid,
            now,
            ...deadline,
          ],
        ),
      )
      if (Number((result as OkPacket).insertId) === write.now) return 'ok'
      if (isLate(write.deadline)) throw new LateCallError(this.kind, 'write')
      return 'gone'
    }

    // Assignments of ON DUPLICATE KEY UPDATE run left to right and see the columns
    // already assigned, so `fields` and `expires_at` (which the conditions read)
    // come last. `writable`: a live session, or an expired session or tombstone to
    // start afresh. A live tombstone keeps every column, and LAST_INSERT_ID marks
    // the reply so the caller learns the write was refused. The row to insert is
    // selected only while the server's clock is before the deadline: a statement
    // that arrives late selects nothing, so neither inserts nor updates.
    const writable = `(fields IS NOT NULL OR expires_at <= ${now})`
    const expired = `(expires_at <= ${now})`
    const [result] = await retry(() =>
      db.query(
        `INSERT INTO ${this.#t} (id, fields, created_at, last_seen_at, expires_at, user_id, user_agent, ip)
        SELECT * FROM (SELECT ? AS n_id, ? AS n_fields, ${now} AS n_created, ${now} AS n_seen,
          ${capped(String(now))} AS n_expires, ? AS n_user, ? AS n_agent, ? AS n_ip) AS fresh
        WHERE ${onTime}
        ON DUPLICATE KEY UPDATE
          created_at = IF(${writable}, IF(${expired}, VALUES(created_at), created_at), LAST_INSERT_ID(created_at)),
          user_agent = IF(${writable} AND ${expired}, VALUES(user_agent), user_agent),
          ip = IF(${writable} AND ${expired}, VALUES(ip), ip),
          user_id = IF(${writable}, VALUES(user_id), user_id),
          last_seen_at = IF(${writable}, VALUES(last_seen_at), last_seen_at),
          fields = IF(${writable}, IF(${expired} OR ${write.replace ? 'TRUE' : 'FALSE'}, VALUES(fields), ${merged}), fields),
          expires_at = IF(${writable}, IF(${expired}, VALUES(expires_at), ${capped('created_at')}), expires_at)`,
        [
          sid,
          JSON.stringify(fresh),
          userId,
          write.device.userAgent ?? null,
          write.device.ip ?? null,
          setJson,
          ...paths,
        ],
      ),
    )
    const { affectedRows, insertId } = result as OkPacket
    if (affectedRows === 0 && isLate(write.deadline)) throw new LateCallError(this.kind, 'write')
    return Number(insertId) === 0 ? 'ok' : 'gone'
  }

  async touch(sid: string, touch: SessionTouch): Promise<WriteResult> {
    const now = int(touch.now)
    const [expires, expiresValues] = expiryParams(touch.expiresAt, touch.maxLifetime)
    const [result] = await this.#retry(() =>
      this.#run(
        this.#pool,
        `UPDATE ${this.#t} SET last_seen_at = LAST_INSERT_ID(${INT}), expires_at = ${expires}
         WHERE id = ? AND fields IS NOT NULL AND expires_at > ${INT}`,
        [now, ...expiresValues, sid, now],
      ),
    )
    return Number((result as OkPacket).insertId) === touch.now ? 'ok' : 'gone'
  }

  destroy(sid: string, options: CallOptions = {}): Promise<void> {
    return this.#destroy(this.#pool, (run) => this.#retry(run), sid, options)
  }

  async #destroy(
    db: Pick<MysqlPoolLike, 'query'>,
    retry: <T>(run: () => Promise<T>) => Promise<T>,
    sid: string,
    options: CallOptions,
  ): Promise<void> {
    const now = int(Date.now())
    const [result] = await retry(() =>
      db.query(
        `INSERT INTO ${this.#t} (id, fields, created_at, last_seen_at, expires_at)
         SELECT * FROM (SELECT ? AS n_id, NULL AS n_fields, ${now} AS n_created, ${now} AS n_seen,
           ${now + int(this.#options.tombstoneTtl)} AS n_expires) AS tomb
         WHERE ${onTimeSql(options.deadline)}
         ON DUPLICATE KEY UPDATE fields = NULL, user_id = NULL, user_agent = NULL, ip = NULL,
           last_seen_at = VALUES(last_seen_at), expires_at = VALUES(expires_at)`,
        [sid],
      ),
    )
    if ((result as OkPacket).affectedRows === 0 && isLate(options.deadline)) {
      throw new LateCallError(this.kind, 'destroy')
    }
  }

  async listUser(userId: string, now: number): Promise<IndexedSession[]> {
    const [rows] = await this.#pool.query(
      `SELECT id, created_at, last_seen_at, expires_at, user_id, user_agent, ip FROM ${this.#t}
       WHERE user_id = ? AND fields IS NOT NULL AND expires_at > ${int(now)}
       ORDER BY created_at, id`,
      [userId],
    )
    return (rows as Array<SessionRow & { id: string }>).map((row) => ({
      id: String(row.id),
      meta: rowMeta(row),
    }))
  }

  async destroyUser(userId: string, except?: string, options: CallOptions = {}): Promise<string[]> {
    // MySQL has no RETURNING. One UPDATE tombstones the user's sessions (atomic, and
    // refused as a whole when it arrives after the deadline, which a transaction's
    // late COMMIT would not be) and collects the ids it changed in a variable of
    // this connection, read back afterwards. Rows are taken in id order so that two
    // revocations of one user cannot deadlock.
    return this.#retry(async () => {
      const connection = await this.#pool.getConnection()
      try {
        const now = int(Date.now())
        await connection.query('SET @sessionmesh_revoked = JSON_ARRAY()')
        await connection.query(
          `UPDATE ${this.#t} SET
             last_seen_at = IF((@sessionmesh_revoked := JSON_ARRAY_APPEND(@sessionmesh_revoked, '$',
               IF(expires_at > ${now}, id, NULL))) IS NULL, ${now}, ${now}),
             fields = NULL, user_id = NULL, user_agent = NULL, ip = NULL,
             expires_at = ${now + int(this.#options.tombstoneTtl)}
           WHERE user_id = ? AND fields IS NOT NULL AND id <> ? AND ${onTimeSql(options.deadline)}
           ORDER BY id`,
          [userId, except ?? ''],
        )
        const [rows] = await connection.query('SELECT @sessionmesh_revoked AS ids')
        const ids = (rows as Array<{ ids: unknown }>)[0]?.ids
        const list: unknown = typeof ids === 'string' ? JSON.parse(ids) : ids
        return Array.isArray(list) ? list.filter((id): id is string => typeof id === 'string') : []
      } finally {
        connection.release()
      }
    })
  }

  async count(): Promise<number> {
    const [rows] = await this.#pool.query(
      `SELECT COUNT(*) AS n FROM ${this.#t} WHERE fields IS NOT NULL AND expires_at > ${int(Date.now())}`,
    )
    return Number((rows as Array<{ n: unknown }>)[0]?.n ?? 0)
  }

  async ids(): Promise<string[]> {
    const [rows] = await this.#pool.query(
      `SELECT id FROM ${this.#t} WHERE fields IS NOT NULL AND expires_at > ${int(Date.now())}`,
    )
    return (rows as Array<{ id: unknown }>).map((row) => String(row.id))
  }

  async clear(): Promise<void> {
    await this.#pool.query(`DELETE FROM ${this.#t}`)
  }

  async cleanup(): Promise<CleanupResult> {
    const connection = await this.#pool.getConnection()
    // GET_LOCK is per connection and server-wide; the name is hashed to fit its
    // 64-character limit. If this process dies, its connection and the lock go.
    const lock = `sessionmesh:${createHash('sha1').update(`cleanup:${this.table}`).digest('hex')}`
    try {
      const [rows] = await connection.query('SELECT GET_LOCK(?, 0) AS ok', [lock])
      if (Number((rows as Array<{ ok: unknown }>)[0]?.ok) !== 1)
        return { acquired: false, deleted: 0 }
      let deleted = 0
      try {
        for (;;) {
          const [result] = await this.#retry(() =>
            connection.query(
              `DELETE FROM ${this.#t} WHERE expires_at <= ${int(Date.now())}
               ORDER BY expires_at LIMIT ${int(this.#options.cleanupBatch)}`,
            ),
          )
          const affected = (result as OkPacket).affectedRows
          deleted += affected
          if (affected < this.#options.cleanupBatch) break
        }
      } finally {
        await connection.query('SELECT RELEASE_LOCK(?)', [lock])
      }
      debug('cleanup deleted %d expired rows of %s', deleted, this.table)
      return { acquired: true, deleted }
    } finally {
      connection.release()
    }
  }

  isOutage(error: unknown): boolean {
    return isMysqlOutage(error)
  }

  async close(): Promise<void> {
    this.#stopCleanup()
  }

  /** Every statement here is atomic and idempotent in effect, so a lost deadlock is retried. */
  async #retry<T>(run: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await run()
      } catch (error) {
        if (attempt >= 3 || (error as { errno?: unknown }).errno !== ER_LOCK_DEADLOCK) throw error
        debug('deadlock, retrying (attempt %d)', attempt)
      }
    }
  }
}

/**
 * True unless the server answered: an SQL error reply (it has a `sqlState`) means the
 * server is up, except "too many connections" and "shutdown in progress"; a fatal
 * error (the connection is gone) is an outage.
 */
export function isMysqlOutage(error: unknown): boolean {
  if (!(error instanceof Error)) return true
  const { code, errno, sqlState, fatal } = error as {
    code?: unknown
    errno?: unknown
    sqlState?: unknown
    fatal?: unknown
  }
  if (fatal === true) return true
  if (typeof code === 'string' && NETWORK_ERRORS.has(code)) return true
  if (typeof sqlState === 'string' && typeof errno === 'number') {
    return errno === 1040 || errno === 1053
  }
  return true
}
