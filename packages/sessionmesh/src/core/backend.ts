/**
 * The contract between the store and a backend. A backend is a dumb, atomic
 * key-value layer with a user index: it never parses session values (they arrive
 * JSON-encoded, one string per top-level key) and never decides policy (timeouts,
 * lazy touch, size limits live in the store). Every method is one round trip.
 *
 * All times are epoch milliseconds.
 */

/** What a backend keeps about a session besides its data. */
export interface SessionMeta {
  /** When the session was first written. */
  createdAt: number
  /** The last write or touch that reached the backend (lazy touch: at most `touchAfter` old). */
  lastSeenAt: number
  /** When the backend forgets the session unless it is touched again. */
  expiresAt: number
  /** The user the session belongs to, if any; the key of the user index. */
  userId?: string
  /** The `User-Agent` of the request that created the session. */
  userAgent?: string
  /** The client address of the request that created the session. */
  ip?: string
}

/** A session as a backend holds it: each top-level key of the session JSON-encoded on its own. */
export interface StoredSession {
  fields: Record<string, string>
  meta: SessionMeta
}

/** One atomic change to one session. */
export interface SessionWrite {
  /**
   * `update`: the caller loaded this session; if it is gone (destroyed, revoked,
   * expired) the write must change nothing and report `gone`.
   * `create`: the caller holds a session the backend may not have yet (a new id);
   * it is created if missing, unless it was destroyed (a tombstone exists).
   */
  mode: 'create' | 'update'
  /** Top-level keys to set, each value already JSON-encoded. */
  set: Record<string, string>
  /** Top-level keys to remove. */
  unset: string[]
  /** Remove every stored key that is not in `set` (a whole-session write). */
  replace: boolean
  now: number
  /** Requested expiry; the backend caps it at `createdAt + maxLifetime`. */
  expiresAt: number
  /** Absolute lifetime in ms, counted from `createdAt`; 0 for none. */
  maxLifetime: number
  /** The user the session belongs to after this write (moves it between user indexes). */
  userId: string | undefined
  /**
   * Recorded when the write creates the session. An `update` writes the fields it
   * carries and keeps the others (the encryption layer seals them again after a
   * key rotation); a `create` of a session that exists keeps its device.
   */
  device: { userAgent?: string; ip?: string }
  /**
   * Keys to rewrite only where they still hold `from` exactly: a key changed or
   * removed since (by a concurrent request) is left as it is. Applied with the
   * rest of the write, atomically, on an `update`. The encryption layer seals
   * with the current key what an older one sealed this way, without undoing a
   * concurrent request's change. Never names a key of `set` or `unset`.
   */
  reseal?: Record<string, { from: string; to: string }>
  /** See {@link CallOptions.deadline}. */
  deadline?: number
  /** See {@link CallOptions.by}: on the events of the sessions a session limit destroys. */
  by?: string | undefined
}

/**
 * Why a session ended. `logout`: the app destroyed it (`req.session.destroy`,
 * `store.destroy`); `revoked`: `revokeSession`, `revokeUserSessions` or the
 * `sessionmesh sessions` CLI; `regenerated`: replaced by a new id
 * (`req.session.regenerate`, passport's login, `sessionmesh/express`'s
 * `req.session.rotate`), reported even when the old id had never been saved; `expired`: its lifetime ran out (seen by the socket.io binding,
 * which watches sessions with sockets); `limit`: ended by `maxSessionsPerUser`
 * (`onSessionLimit: 'revoke-oldest'`) when its user logged in once too often;
 * `unknown`: another process ended it without saying why (a release before
 * reasons were carried on the bus, or a backend whose bus carries none).
 */
export type DestroyReason = 'logout' | 'revoked' | 'regenerated' | 'expired' | 'limit' | 'unknown'

const DESTROY_REASONS: ReadonlySet<string> = new Set<DestroyReason>([
  'logout',
  'revoked',
  'regenerated',
  'expired',
  'limit',
  'unknown',
])

/** What the store tells a backend about one call. */
export interface CallOptions {
  /**
   * Epoch ms after which the caller may already have reported this call as failed
   * (its `timeout`, less a margin for the reply). A backend that can must not apply
   * a write or destroy that reaches its server at or after this time, so that a
   * reported failure means nothing was written. Compared with the server's clock:
   * keep clocks in sync (NTP).
   */
  deadline?: number
  /** For `destroy` and `destroyUser`: why, carried on the bus event so other processes can say it too. */
  reason?: DestroyReason | undefined
  /** Who asks (a store's random name), carried on the bus event so that it can tell its own from others'. */
  by?: string | undefined
}

/** `gone`: the session was destroyed or had expired, and nothing was written. */
export type WriteResult = 'ok' | 'gone'

/** `maxSessionsPerUser` and what a login beyond it does. */
export interface SessionLimitRule {
  max: number
  policy: 'revoke-oldest' | 'refuse'
}

/**
 * What {@link Backend.writeLimited} did: `full`, the login was refused and nothing
 * written; `ok` with the ids of the sessions it destroyed to make room.
 */
export type LimitedWriteResult =
  | { result: 'gone' }
  | { result: 'full' }
  | { result: 'ok'; revoked: string[] }

/** The stored field (and its value) a caller's copy of a session was read with: see {@link Backend.writeAndRead}. */
export interface WriteBasis {
  key: string
  value: string
}

/**
 * What {@link Backend.writeAndRead} did: `previous` is what the basis field held
 * just before the write (`undefined`: nothing); `stored`, present exactly when
 * that was not the basis value, is the session as the write left it.
 */
export type ReadWriteResult =
  | { result: 'gone' }
  | { result: 'ok'; previous: string | undefined; stored?: StoredSession }

/** An extension of a session's expiry, with no change to its data. */
export interface SessionTouch {
  now: number
  expiresAt: number
  maxLifetime: number
}

/** A session of a user, as the user index lists it. */
export interface IndexedSession {
  id: string
  meta: SessionMeta
}

/**
 * What the invalidation bus carries between processes. `v` is the protocol
 * version: a process ignores versions it does not know, so two releases can run
 * side by side during a rolling deploy.
 */
export interface SessionEvent {
  v: 1
  type: 'changed' | 'destroyed'
  sid: string
  /** For `destroyed`, when the destroying process said why (older releases leave it out). */
  reason?: DestroyReason
  /** For `destroyed`: the {@link CallOptions.by} of the call, when it gave one. */
  by?: string
}

/** `lost`: the bus connection dropped and events may be missed; `restored`: they flow again. */
export type BusState = 'lost' | 'restored'

/** Current version of {@link SessionEvent}. */
export const EVENT_PROTOCOL_VERSION = 1

/** A storage backend; see `sessionmesh/memory` and `sessionmesh/redis`. */
export interface Backend {
  /** Short name for logs and errors, e.g. `redis`. */
  readonly kind: string
  /** The session, or `null` when it does not exist or has expired. Throws {@link MalformedRecordError} for a record it cannot read. */
  get(sid: string): Promise<StoredSession | null>
  /** Applies one write atomically, together with the user index. */
  write(sid: string, write: SessionWrite): Promise<WriteResult>
  /**
   * A login's write with the user's session limit applied in the same atomic step:
   * `refuse` writes nothing when the user has `max` other sessions; `revoke-oldest`
   * destroys the oldest logins beyond `max - 1` as {@link Backend.destroy} would.
   * Without it the store checks the limit around {@link Backend.write}, not atomically.
   */
  writeLimited?(
    sid: string,
    write: SessionWrite,
    limit: SessionLimitRule,
  ): Promise<LimitedWriteResult>
  /**
   * {@link Backend.write} for a caller that keeps a copy of the session (the near
   * cache), read when field `basis.key` held `basis.value`. In the same atomic
   * step it answers what that field held before the write and, when another
   * write came in between, the whole session as this write left it: the copy
   * stays exact without a second round trip. Replies to calls on one session
   * come back in the order the calls were made.
   */
  writeAndRead?(sid: string, write: SessionWrite, basis: WriteBasis): Promise<ReadWriteResult>
  /** Extends the expiry of an existing session; never creates one. */
  touch(sid: string, touch: SessionTouch): Promise<WriteResult>
  /** Removes a session and leaves a tombstone so that no in-flight write brings it back. */
  destroy(sid: string, options?: CallOptions): Promise<void>
  /**
   * Drops a live session's copy with no tombstone and no event, and leaves a
   * tombstone as it is: a cache tier's repair (the tiered backend), after which the
   * next read refills it from the tier of record. Not for logging anyone out.
   */
  evict?(sid: string): Promise<void>
  /** The live sessions of a user; expired entries are pruned on the way. */
  listUser(userId: string, now: number): Promise<IndexedSession[]>
  /** Destroys every session of a user except `except`, atomically; returns the ids destroyed. */
  destroyUser(userId: string, except?: string, options?: CallOptions): Promise<string[]>
  /** Number of live sessions. May scan: meant for tools, not for requests. */
  count(): Promise<number>
  /** The ids of the live sessions, in no particular order. May scan: meant for tools, not for requests. */
  ids?(): Promise<string[]>
  /** Removes every session this backend holds (its prefix or table only). */
  clear(): Promise<void>
  /**
   * Starts delivering session events (changes and destroys from every process).
   * `onGap('lost')` is called when the connection to the bus drops, from which
   * point events may be missed, and `onGap('restored')` once events flow again;
   * a cache of sessions must not trust what it holds across such a gap.
   */
  subscribe?(
    listener: (event: SessionEvent) => void,
    onGap?: (state: BusState) => void,
  ): Promise<() => Promise<void>>
  /** True when `error` means the backend is unreachable (opens the breaker), false when it answered. */
  isOutage?(error: unknown): boolean
  /** Releases what the backend itself opened (not a client it was given). */
  close(): Promise<void>
}

/**
 * The backend's server received a write or destroy after its
 * {@link CallOptions.deadline} and applied nothing. An outage: by then the caller
 * has reported the call as failed, or is about to.
 */
export class LateCallError extends Error {
  constructor(kind: string, operation: string) {
    super(`${kind} received the ${operation} after its deadline and applied nothing`)
    this.name = 'LateCallError'
  }
}

/**
 * A stored record that cannot be read: a corrupt value, another library's format,
 * the wrong data type. The store treats the session as absent and reports it.
 */
export class MalformedRecordError extends Error {
  constructor(reason: string, options?: { cause?: unknown }) {
    super(`malformed session record: ${reason}`, options)
    this.name = 'MalformedRecordError'
  }
}

/** The expiry a write or touch ends up with, `maxLifetime` applied. */
export function cappedExpiry(expiresAt: number, createdAt: number, maxLifetime: number): number {
  return maxLifetime > 0 ? Math.min(expiresAt, createdAt + maxLifetime) : expiresAt
}

/** The message a backend publishes for `event` (what {@link parseEvent} reads back). */
export function formatEvent(
  type: SessionEvent['type'],
  sid: string,
  options: CallOptions = {},
): string {
  const event: SessionEvent = { v: EVENT_PROTOCOL_VERSION, type, sid }
  if (type === 'destroyed' && options.reason !== undefined) event.reason = options.reason
  if (type === 'destroyed' && options.by !== undefined) event.by = options.by
  return JSON.stringify(event)
}

/** A write's `reseal` as JSON-friendly pairs, `{ key: [from, to] }`, for a backend's server to apply. */
export function resealPairs(write: SessionWrite): Record<string, [string, string]> {
  const pairs: Record<string, [string, string]> = {}
  for (const [key, { from, to }] of Object.entries(write.reseal ?? {})) pairs[key] = [from, to]
  return pairs
}

/** Parses the message a backend published into a {@link SessionEvent}, or `undefined` if it is foreign. */
export function parseEvent(message: string): SessionEvent | undefined {
  try {
    const event = JSON.parse(message) as Partial<SessionEvent> | null
    if (
      event?.v === EVENT_PROTOCOL_VERSION &&
      (event.type === 'changed' || event.type === 'destroyed') &&
      typeof event.sid === 'string'
    ) {
      const parsed: SessionEvent = { v: 1, type: event.type, sid: event.sid }
      // A reason this release does not know is left out, not passed on.
      if (event.type === 'destroyed' && DESTROY_REASONS.has(event.reason as string)) {
        parsed.reason = event.reason as DestroyReason
      }
      if (event.type === 'destroyed' && typeof event.by === 'string') parsed.by = event.by
      return parsed
    }
  } catch {
    // not JSON: from some other publisher on the channel
  }
  return undefined
}
