// What a request loaded and what a write leaves: the snapshot the engine diffs
// against and the near cache keeps. Below both (engine/index.ts, near-cache.ts),
// so that neither imports the other.
import { randomBytes } from 'node:crypto'
import {
  cappedExpiry,
  type SessionMeta,
  type SessionWrite,
  type StoredSession,
} from '../backend.js'
import type { SessionData } from '../codec.js'
import type { Reseal } from '../encrypted-backend.js'
import { debug } from '../telemetry.js'

/**
 * The stored top-level key that holds the version of the last write: a random
 * nonce, new on every write. A node's near cache may serve a session only to a
 * client that presents the version the cached copy contains (see near-cache.ts).
 * It is stripped from the session the application sees.
 */
export const VERSION_KEY = '__smv'

/**
 * The stored top-level key a rotated-to session carries (`req.session.rotate` in
 * `sessionmesh/express`): until when, in epoch ms, a request presenting the old
 * id is served this session. Stripped from what the application sees, and never
 * removed by a delta (it is not in {@link Snapshot.fields}).
 */
export const ROTATED_KEY = '__smr'

/** What a request loaded: the base of its delta, and of the near cache's bookkeeping. */
export interface Snapshot {
  /** The stored fields, without {@link VERSION_KEY}. Never mutated: shared with the near cache. */
  readonly fields: Readonly<Record<string, string>>
  meta: SessionMeta
  /** The version stored with these fields, if any. */
  version: string | undefined
  /** Versions whose writes these fields are known to contain (the near cache's check). */
  versions: readonly string[]
  /** The near cache's change counter when the load began. */
  loadSeq: number
  /** With encryption: what was sealed with an older key, for the next write to seal again. */
  reseal?: Reseal
  /** Set on a session made by a rotation: see {@link ROTATED_KEY}. */
  rotatedUntil?: number | undefined
}

/** A session as loaded: the data the application gets, and what it was loaded from. */
export interface Loaded {
  data: SessionData
  snapshot: Snapshot
}

/** Where a new session comes from, recorded when the write creates it. */
export interface Device {
  userAgent?: string
  ip?: string
}

/** A snapshot of a stored session: its version and rotation marker taken out of the fields. */
export function snapshotOf(stored: StoredSession, loadSeq: number): Snapshot {
  const { [VERSION_KEY]: encodedVersion, [ROTATED_KEY]: rotated, ...fields } = stored.fields
  const version = parseVersion(encodedVersion)
  const snapshot: Snapshot = {
    fields,
    meta: stored.meta,
    version,
    versions: version === undefined ? [] : [version],
    loadSeq,
  }
  if (rotated !== undefined) snapshot.rotatedUntil = Number(rotated)
  return snapshot
}

/**
 * `snapshot` with `write` applied (`fields`: every field of the session as saved,
 * `version`: the one the write stored): what the backend now holds when no other
 * write came in between.
 */
export function nextSnapshot(
  snapshot: Snapshot | undefined,
  write: SessionWrite,
  fields: Record<string, string>,
  version: string,
): Snapshot {
  const { now, userId, device } = write
  const createdAt = snapshot?.meta.createdAt ?? now
  const meta: SessionMeta = {
    ...snapshot?.meta,
    createdAt,
    lastSeenAt: now,
    expiresAt: cappedExpiry(write.expiresAt, createdAt, write.maxLifetime),
  }
  if (userId === undefined) delete meta.userId
  else meta.userId = userId
  if (device.userAgent !== undefined && !snapshot) meta.userAgent = device.userAgent
  if (device.ip !== undefined && !snapshot) meta.ip = device.ip
  const versions = snapshot ? [...snapshot.versions.slice(-KNOWN_VERSIONS), version] : [version]
  // A rotation's marker is written once, with the whole session; kept out of the
  // snapshot, no later delta removes it.
  const { [ROTATED_KEY]: rotated, ...kept } = fields
  const next: Snapshot = { fields: kept, meta, version, versions, loadSeq: 0 }
  if (rotated !== undefined) next.rotatedUntil = Number(rotated)
  else if (snapshot?.rotatedUntil !== undefined) next.rotatedUntil = snapshot.rotatedUntil
  return next
}

/**
 * The session as a write left it, read back in the same step because another
 * write came first. It contains every write the request's snapshot did, the one
 * the backend held before (`previous`, and `knownIn(previous)`: what the near
 * cache knows that one contained), and this one (`version`).
 */
export function freshSnapshot(
  stored: StoredSession,
  version: string,
  snapshot: Snapshot | undefined,
  previous: string | undefined,
  knownIn: (version: string) => readonly string[],
): Snapshot {
  const next = snapshotOf(stored, 0)
  if (next.version !== version) return next
  const before = parseVersion(previous)
  const known = new Set(snapshot?.versions)
  if (before !== undefined) {
    for (const v of knownIn(before)) known.add(v)
    known.add(before)
  }
  known.delete(version)
  next.versions = [...[...known].slice(-KNOWN_VERSIONS), version]
  return next
}

/** How many earlier versions a snapshot remembers containing (besides its own). */
const KNOWN_VERSIONS = 15

/**
 * 48 random bits: unique per write for all practical purposes, 8 cookie-safe
 * characters. Taken from a pool filled 1,024 versions at a time: a call into the
 * system's generator per write cost more than the rest of a write's work here.
 */
export function newVersion(): string {
  if (versionsAt + VERSION_BYTES > versionPool.length) {
    versionPool = randomBytes(VERSION_BYTES * 1024)
    versionsAt = 0
  }
  const version = versionPool.toString('base64url', versionsAt, versionsAt + VERSION_BYTES)
  versionsAt += VERSION_BYTES
  return version
}
const VERSION_BYTES = 6
let versionPool = Buffer.alloc(0)
let versionsAt = 0

/** A stored version as {@link newVersion} writes it: a JSON string of base64url characters. */
const WRITTEN_VERSION = /^"[\w-]*"$/

/** The version in a stored {@link VERSION_KEY} value; `undefined` for none or an unreadable one. */
export function parseVersion(encoded: string | undefined): string | undefined {
  if (encoded === undefined) return undefined
  // Read on every load: the common case without a JSON parse.
  if (WRITTEN_VERSION.test(encoded)) return encoded.slice(1, -1)
  try {
    const version: unknown = JSON.parse(encoded)
    return typeof version === 'string' ? version : undefined
  } catch {
    debug('ignoring an unreadable session version')
    return undefined
  }
}
