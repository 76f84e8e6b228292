import { createHash } from 'node:crypto'
import {
  cappedExpiry,
  MalformedRecordError,
  type SessionMeta,
  type SessionWrite,
  type StoredSession,
} from '../../core/backend.js'

/**
 * A session as its Memcached item holds it (JSON): `f` the fields, then created,
 * last seen, expires (epoch ms), user, user agent, ip. A destroyed session's item
 * is the tombstone `{"t":1}` instead.
 */
export interface SessionRecord {
  f: Record<string, string>
  c: number
  l: number
  e: number
  u?: string
  a?: string
  i?: string
}

/** The value of a tombstone item. */
export const TOMBSTONE = '{"t":1}'

/**
 * A Memcached key for `name`: printable ASCII without spaces, at most 250 bytes.
 * Anything else (a user id with spaces, a very long id) is replaced by its SHA-1.
 */
export function safeKey(prefix: string, kind: string, name: string): string {
  const key = `${prefix}${kind}:${name}`
  if (/^[\x21-\x7e]{1,250}$/.test(key)) return key
  return `${prefix}${kind}#${createHash('sha1').update(name).digest('hex')}`
}

/**
 * Seconds-resolution expiry for Memcached: an absolute Unix time (every value past
 * 30 days is read as one), one second late rather than early. The exact expiry in
 * ms is in the record and checked on every read.
 */
export function exptime(expiresAtMs: number): number {
  return Math.ceil(expiresAtMs / 1000) + 1
}

/** What a session item holds: a live record, a tombstone, or (expired) nothing. */
export type Decoded = { kind: 'live'; record: SessionRecord } | { kind: 'tombstone' }

/** Parses a session item; throws {@link MalformedRecordError} for one this backend did not write. */
export function decodeRecord(value: string): Decoded {
  let parsed: unknown
  try {
    parsed = JSON.parse(value)
  } catch (error) {
    throw new MalformedRecordError('the item is not JSON', { cause: error })
  }
  if (typeof parsed !== 'object' || parsed === null)
    throw new MalformedRecordError('the item is not an object')
  const record = parsed as Partial<SessionRecord> & { t?: unknown }
  if (record.t === 1) return { kind: 'tombstone' }
  if (
    typeof record.f !== 'object' ||
    record.f === null ||
    typeof record.c !== 'number' ||
    typeof record.l !== 'number' ||
    typeof record.e !== 'number' ||
    Object.values(record.f).some((field) => typeof field !== 'string')
  ) {
    throw new MalformedRecordError('the item lacks fields or times (another library’s format?)')
  }
  return { kind: 'live', record: record as SessionRecord }
}

/** The record's metadata as the contract names it. */
export function metaOf(record: SessionRecord): SessionMeta {
  const meta: SessionMeta = { createdAt: record.c, lastSeenAt: record.l, expiresAt: record.e }
  if (record.u !== undefined) meta.userId = record.u
  if (record.a !== undefined) meta.userAgent = record.a
  if (record.i !== undefined) meta.ip = record.i
  return meta
}

/** The record as the contract hands it out. */
export function storedOf(record: SessionRecord): StoredSession {
  return { fields: { ...record.f }, meta: metaOf(record) }
}

/** A session item as this backend reads it for a write: a record it cannot read is overwritten. */
export function readable(value: string): Decoded | undefined {
  try {
    return decodeRecord(value)
  } catch {
    return undefined
  }
}

/** A new session's record. */
export function created(write: SessionWrite): SessionRecord {
  const record: SessionRecord = {
    f: { ...write.set },
    c: write.now,
    l: write.now,
    e: cappedExpiry(write.expiresAt, write.now, write.maxLifetime),
  }
  if (write.userId !== undefined) record.u = write.userId
  if (write.device.userAgent !== undefined) record.a = write.device.userAgent
  if (write.device.ip !== undefined) record.i = write.device.ip
  return record
}

/** `record` with the write's delta applied. */
export function applied(record: SessionRecord, write: SessionWrite): SessionRecord {
  const fields = write.replace ? {} : { ...record.f }
  Object.assign(fields, write.set)
  for (const name of write.unset) delete fields[name]
  if (write.mode === 'update') {
    for (const [name, { from, to }] of Object.entries(write.reseal ?? {})) {
      if (record.f[name] === from) fields[name] = to
    }
  }
  const next: SessionRecord = {
    ...record,
    f: fields,
    l: write.now,
    e: cappedExpiry(write.expiresAt, record.c, write.maxLifetime),
  }
  if (write.userId === undefined) delete next.u
  else next.u = write.userId
  // An update writes the device fields it carries (sealed again after a key rotation);
  // a create of a session that exists keeps the device it was created from.
  if (write.mode === 'update' && write.device.userAgent !== undefined)
    next.a = write.device.userAgent
  if (write.mode === 'update' && write.device.ip !== undefined) next.i = write.device.ip
  return next
}
