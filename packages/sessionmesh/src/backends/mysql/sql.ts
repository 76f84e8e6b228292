// Pieces of the backend's SQL: the deadline check, the capped expiry, integers
// and JSON paths, as text or as prepared-statement parameters.
import { InvalidOptionError } from '../../core/errors.js'

/**
 * True while the server's clock is before `deadline`; TRUE when there is none.
 * SYSDATE(), not NOW(): the time the server evaluates it, not the statement's start.
 */
export function onTimeSql(deadline: number | undefined): string {
  return deadline === undefined ? 'TRUE' : `${SERVER_MS} < ${int(deadline)}`
}

export const SERVER_MS = 'UNIX_TIMESTAMP(SYSDATE(3)) * 1000'
/** A parameter read as an integer: prepared statements send integers as decimal strings. */
export const INT = 'CAST(? AS SIGNED)'

/** {@link onTimeSql} for a prepared statement: the condition and its parameters. */
export function onTimeParams(deadline: number | undefined): [string, number[]] {
  return deadline === undefined ? ['TRUE', []] : [`${SERVER_MS} < ${INT}`, [int(deadline)]]
}

/** The expiry a write or touch sets, capped at created_at + maxLifetime when there is one: SQL and parameters. */
export function expiryParams(expiresAt: number, maxLifetime: number): [string, number[]] {
  return maxLifetime > 0
    ? [`LEAST(${INT}, created_at + ${INT})`, [int(expiresAt), int(maxLifetime)]]
    : [INT, [int(expiresAt)]]
}

/** Numbers are spliced into the SQL text only after this check. */
export function int(value: number): number {
  const n = Math.floor(value)
  if (!Number.isSafeInteger(n)) throw new InvalidOptionError(`not an integer: ${value}`)
  return n
}

/** The JSON path of a top-level key, quoted so that any key name is a single member. */
export function jsonPath(key: string): string {
  return `$."${key.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`
}
