import type {
  Backend,
  CallOptions,
  IndexedSession,
  SessionMeta,
  SessionWrite,
  StoredSession,
} from './backend.js'
import { deviceContext, fieldContext, keyIdOf, type SessionCipher } from './encryption.js'
import { redactSid } from './errors.js'
import { debug } from './telemetry.js'

/**
 * A session as the encryption layer read it: opened, with what was sealed under a
 * key other than the current one, for the next write to seal again.
 */
export interface OpenedSession extends StoredSession {
  reseal: Reseal
}

/** What a write must seal again with the current key (see {@link OpenedSession}). */
export interface Reseal {
  /** Top-level keys sealed with an older key, each with its value as stored. */
  fields: Record<string, string>
  /** The device fields were sealed with an older key. */
  device: boolean
}

// The device fields are sealed together and stored where the user agent goes,
// with no separate IP: one value is shorter than two (MySQL's user_agent column
// holds 1024 characters, its ip column 64), and whether an IP is known is hidden too.
const DEVICE_BUDGET = 600

/**
 * Wraps a backend so that everything it stores about a session is sealed: each
 * top-level value (bound to its session id and key), the device fields, and the
 * user index (a keyed hash of the user id instead of the id). Backends see opaque
 * strings where clear ones were, with no change of schema; delta writes stay
 * deltas, since each key is sealed on its own, and after a rotation the keys a
 * write leaves alone travel as `reseal` (a compare-and-set per key). A record no
 * configured key opens is a `MalformedRecordError`.
 *
 * `clearKey` (the engine's write version, a random tag new on every write) is
 * stored as it is: it says nothing about the session, and is read on every load.
 * `get` leaves the device fields out of the meta (loading a session never needs
 * them) unless an older key sealed them: then they are opened, for the next write
 * to seal again. `listUser` opens them.
 */
export function encryptedBackend(inner: Backend, cipher: SessionCipher, clearKey: string): Backend {
  const wrapped: Backend = {
    kind: inner.kind,
    async get(sid) {
      const stored = await inner.get(sid)
      return stored && open(cipher, sid, stored, clearKey)
    },
    write(sid, write) {
      return inner.write(sid, sealWrite(cipher, sid, write, clearKey))
    },
    touch: (sid, touch) => inner.touch(sid, touch),
    destroy: (sid, options) => inner.destroy(sid, options),
    // A user's sessions may sit under the hash of any configured key (a session
    // moves to the current key's on its next write), so every one is looked up.
    async listUser(userId, now): Promise<IndexedSession[]> {
      const lists = await Promise.all(cipher.indexIds(userId).map((id) => inner.listUser(id, now)))
      const seen = new Set<string>()
      const out: IndexedSession[] = []
      for (const entry of lists.flat()) {
        if (seen.has(entry.id)) continue
        seen.add(entry.id)
        const meta = openDevice(cipher, entry.id, entry.meta).meta
        out.push({ id: entry.id, meta: { ...meta, userId } })
      }
      return out
    },
    async destroyUser(userId, except, options?: CallOptions): Promise<string[]> {
      const lists = await Promise.all(
        cipher.indexIds(userId).map((id) => inner.destroyUser(id, except, options)),
      )
      return [...new Set(lists.flat())]
    },
    count: () => inner.count(),
    clear: () => inner.clear(),
    close: () => inner.close(),
  }
  if (inner.ids) wrapped.ids = inner.ids.bind(inner)
  if (inner.evict) wrapped.evict = inner.evict.bind(inner)
  if (inner.subscribe) wrapped.subscribe = inner.subscribe.bind(inner)
  if (inner.isOutage) wrapped.isOutage = inner.isOutage.bind(inner)
  return wrapped
}

function open(
  cipher: SessionCipher,
  sid: string,
  stored: StoredSession,
  clearKey: string,
): OpenedSession {
  const fields: Record<string, string> = {}
  const stale: Record<string, string> = {}
  for (const [key, value] of Object.entries(stored.fields)) {
    const opened =
      key === clearKey
        ? { plaintext: value, stale: false }
        : cipher.open(fieldContext(sid, key), value)
    // defineProperty: a key named `__proto__` stays data (the codec refuses to write one).
    Object.defineProperty(fields, key, {
      value: opened.plaintext,
      enumerable: true,
      writable: true,
      configurable: true,
    })
    if (opened.stale) stale[key] = value
  }
  const sealed = stored.meta.userAgent
  if (sealed === undefined || keyIdOf(sealed) === cipher.currentKeyId) {
    const { userAgent: _a, ip: _i, ...meta } = stored.meta
    return { fields, meta, reseal: { fields: stale, device: false } }
  }
  const device = openDevice(cipher, sid, stored.meta)
  return { fields, meta: device.meta, reseal: { fields: stale, device: device.stale } }
}

/** The meta with its device fields opened; a device no key opens is dropped, not fatal. */
function openDevice(
  cipher: SessionCipher,
  sid: string,
  meta: SessionMeta,
): { meta: SessionMeta; stale: boolean } {
  const { userAgent: sealed, ip: _ip, ...rest } = meta
  if (sealed === undefined) return { meta: rest, stale: false }
  try {
    const opened = cipher.open(deviceContext(sid), sealed)
    const device = JSON.parse(opened.plaintext) as { a?: unknown; i?: unknown }
    const out: SessionMeta = { ...rest }
    if (typeof device.a === 'string') out.userAgent = device.a
    if (typeof device.i === 'string') out.ip = device.i
    return { meta: out, stale: opened.stale }
  } catch (error) {
    debug('session %s: its device fields cannot be read: %s', redactSid(sid), error)
    return { meta: rest, stale: false }
  }
}

function sealWrite(
  cipher: SessionCipher,
  sid: string,
  write: SessionWrite,
  clearKey: string,
): SessionWrite {
  const set: Record<string, string> = {}
  for (const [key, value] of Object.entries(write.set)) {
    set[key] = key === clearKey ? value : cipher.seal(fieldContext(sid, key), value)
  }
  const sealed: SessionWrite = {
    ...write,
    set,
    userId: write.userId === undefined ? undefined : cipher.indexId(write.userId),
    device: {},
  }
  if (write.reseal) {
    const reseal: Record<string, { from: string; to: string }> = {}
    for (const [key, { from, to }] of Object.entries(write.reseal)) {
      reseal[key] = { from, to: cipher.seal(fieldContext(sid, key), to) }
    }
    sealed.reseal = reseal
  }
  const { userAgent, ip } = write.device
  if (userAgent !== undefined || ip !== undefined) {
    sealed.device = { userAgent: cipher.seal(deviceContext(sid), deviceJson(userAgent, ip)) }
  }
  return sealed
}

/** The device as one JSON text, the user agent shortened to keep the sealed value in budget. */
function deviceJson(userAgent: string | undefined, ip: string | undefined): string {
  let agent = userAgent
  for (;;) {
    const json = JSON.stringify({ a: agent, i: ip })
    if (agent === undefined || Buffer.byteLength(json) <= DEVICE_BUDGET) return json
    agent = agent.slice(0, Math.floor(agent.length * 0.8))
  }
}

/** True for what {@link encryptedBackend}'s `get` returns. */
export function isOpened(stored: StoredSession): stored is OpenedSession {
  return 'reseal' in stored
}

/**
 * What a delta write carries to seal again what an older key sealed: the keys it
 * does not change anyway, each to be rewritten only where the backend still holds
 * the value loaded (so a concurrent request's change to it is not undone), and
 * the device fields.
 */
export function resealOf(
  reseal: Reseal,
  fields: Readonly<Record<string, string>>,
  write: Pick<SessionWrite, 'set' | 'unset'>,
  meta: SessionMeta,
): Pick<SessionWrite, 'reseal' | 'device'> {
  const again: Record<string, { from: string; to: string }> = {}
  for (const [key, from] of Object.entries(reseal.fields)) {
    const to = fields[key]
    if (to !== undefined && !(key in write.set) && !write.unset.includes(key)) {
      again[key] = { from, to }
    }
  }
  const device: { userAgent?: string; ip?: string } = {}
  if (reseal.device) {
    if (meta.userAgent !== undefined) device.userAgent = meta.userAgent
    if (meta.ip !== undefined) device.ip = meta.ip
  }
  return Object.keys(again).length > 0 ? { reseal: again, device } : { device }
}

/**
 * The backend holds a keyed hash of the user id, not the id: when it is the hash of
 * the id the session names, the meta gets the id back, so that a save compares ids
 * (a login is a change of user, not of hash, and a key rotation is neither).
 */
export function resolveUser(
  cipher: SessionCipher,
  meta: SessionMeta,
  userId: string | undefined,
): SessionMeta {
  const stored = meta.userId
  if (stored === undefined || userId === undefined) return meta
  return cipher.indexIds(userId).includes(stored) ? { ...meta, userId } : meta
}
