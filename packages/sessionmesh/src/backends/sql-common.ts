import type { Backend, SessionMeta, StoredSession } from '../core/backend.js'
import { MalformedRecordError } from '../core/backend.js'
import { InvalidOptionError } from '../core/errors.js'

// What the PostgreSQL and MySQL backends share: the row layout, option defaults,
// decoding a row, and the expiry sweep's timer. Nothing here speaks SQL.
//
// One table holds sessions and tombstones. A tombstone is a row whose `fields`
// is NULL; its `expires_at` is then when the id may be used again. Keeping both
// in one table makes a destroy and a concurrent create of the same id meet on the
// primary key, so the database serializes them; with a separate tombstone table a
// create that read "no tombstone" could still insert after a destroy committed.

/** Options every SQL backend takes. */
export interface SqlBackendOptions {
  /**
   * Table of sessions and tombstones, optionally schema-qualified (`app.sessions`).
   * Create it with the migration first; the backend never creates it on its own.
   * @default 'sessionmesh_sessions'
   */
  table?: string
  /**
   * How long a destroyed session's id stays refused, in ms.
   * @default 3_600_000 (one hour)
   */
  tombstoneTtl?: number
  /**
   * How often this process tries to delete expired rows, in ms, with ±20% jitter so
   * that a fleet started together does not sweep in lockstep. Only one process of the
   * fleet sweeps at a time (a database lock); the others skip their turn. 0 turns the
   * timer off (run {@link SqlBackend.cleanup} yourself, e.g. from cron). The timer
   * does not keep the process alive.
   * @default 300_000 (five minutes)
   */
  cleanupInterval?: number
  /**
   * Rows one cleanup statement deletes at most; a sweep repeats until fewer are left.
   * @default 1000
   */
  cleanupBatch?: number
}

/** What one sweep of expired rows did. */
export interface CleanupResult {
  /** False when another process held the cleanup lock, so this one did nothing. */
  acquired: boolean
  /** Expired sessions and tombstones this call deleted. */
  deleted: number
}

/** A backend over a SQL table: the {@link Backend} contract plus the expiry sweep. */
export interface SqlBackend extends Backend {
  /** The table, as configured. */
  readonly table: string
  /**
   * Deletes expired sessions and tombstones in batches, if no other process is doing
   * it right now. Safe to call from many processes at once.
   */
  cleanup(): Promise<CleanupResult>
}

/** The default table name of the SQL backends. */
export const DEFAULT_TABLE = 'sessionmesh_sessions'

export interface ResolvedSqlOptions {
  table: string
  tombstoneTtl: number
  cleanupInterval: number
  cleanupBatch: number
}

export function resolveSqlOptions(options: SqlBackendOptions): ResolvedSqlOptions {
  const resolved = {
    table: options.table ?? DEFAULT_TABLE,
    tombstoneTtl: options.tombstoneTtl ?? 3_600_000,
    cleanupInterval: options.cleanupInterval ?? 300_000,
    cleanupBatch: options.cleanupBatch ?? 1000,
  }
  tableParts(resolved.table)
  if (!(resolved.cleanupBatch >= 1)) throw new InvalidOptionError('cleanupBatch must be at least 1')
  return resolved
}

/**
 * Splits `schema.table` and checks each part is a plain identifier: table names are
 * spliced into SQL text (they cannot be bound), so only safe names are accepted.
 */
export function tableParts(table: string): { schema?: string; name: string } {
  const parts = table.split('.')
  const valid = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/
  if (parts.length > 2 || !parts.every((part) => valid.test(part))) {
    throw new InvalidOptionError(
      `table ${JSON.stringify(table)} must be a plain identifier, optionally schema-qualified`,
    )
  }
  const [first = '', second] = parts
  return second === undefined ? { name: first } : { schema: first, name: second }
}

/** `table` (a name, or `schema.name`) as SQL, each part quoted with the database's `quote`. */
export function quotedTable(table: string, quote: (identifier: string) => string): string {
  const { schema, name } = tableParts(table)
  return schema === undefined ? quote(name) : `${quote(schema)}.${quote(name)}`
}

/** A row as both backends select it (timestamps may come back as strings). */
export interface SessionRow {
  fields: unknown
  created_at: unknown
  last_seen_at: unknown
  expires_at: unknown
  user_id: unknown
  user_agent: unknown
  ip: unknown
}

/** The meta columns of a row. */
export function rowMeta(row: Omit<SessionRow, 'fields'>): SessionMeta {
  const meta: SessionMeta = {
    createdAt: Number(row.created_at),
    lastSeenAt: Number(row.last_seen_at),
    expiresAt: Number(row.expires_at),
  }
  if (typeof row.user_id === 'string') meta.userId = row.user_id
  if (typeof row.user_agent === 'string') meta.userAgent = row.user_agent
  if (typeof row.ip === 'string') meta.ip = row.ip
  return meta
}

/** Reads a row into a session; `fields` may arrive parsed (jsonb) or as text (MySQL JSON). */
export function decodeRow(row: SessionRow): StoredSession {
  let fields = row.fields
  if (typeof fields === 'string' || Buffer.isBuffer(fields)) {
    try {
      fields = JSON.parse(String(fields))
    } catch (cause) {
      throw new MalformedRecordError('the fields column is not JSON', { cause })
    }
  }
  if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) {
    throw new MalformedRecordError('the fields column is not a JSON object')
  }
  for (const [key, value] of Object.entries(fields)) {
    if (typeof value !== 'string') {
      throw new MalformedRecordError(`field ${JSON.stringify(key)} is not an encoded string`)
    }
  }
  const meta = rowMeta(row)
  if (![meta.createdAt, meta.lastSeenAt, meta.expiresAt].every(Number.isFinite)) {
    throw new MalformedRecordError('the row lacks its created/last-seen/expiry columns')
  }
  return { fields: fields as Record<string, string>, meta }
}

/**
 * Runs `sweep` every `interval` ms (±20%), never two at once in this process.
 * Returns the function that stops it.
 */
export function scheduleCleanup(
  interval: number,
  sweep: () => Promise<unknown>,
  onError: (error: unknown) => void,
): () => void {
  if (interval <= 0) return () => {}
  let timer: NodeJS.Timeout | undefined
  let stopped = false
  const next = () => {
    if (stopped) return
    timer = setTimeout(run, interval * (0.8 + Math.random() * 0.4))
    timer.unref()
  }
  const run = () => {
    sweep().catch(onError).finally(next)
  }
  next()
  return () => {
    stopped = true
    clearTimeout(timer)
  }
}

/**
 * True once `deadline` (epoch ms) has passed on this process's clock: a write the
 * database refused for its deadline is then reported as late, not as `gone`.
 */
export function isLate(deadline: number | undefined): boolean {
  return deadline !== undefined && Date.now() >= deadline
}

/** Node's socket-level failures: the server is unreachable, not answering an error. */
export const NETWORK_ERRORS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
])
