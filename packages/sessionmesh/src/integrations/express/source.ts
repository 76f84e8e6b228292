import { encodeSession, type SessionData } from '../../core/codec.js'
import type { Device, Loaded, Snapshot } from '../../core/engine/snapshot.js'

/** What the middleware needs from where sessions live: a sessionmesh engine, or an adapted express-session store. */
export interface Source {
  load(sid: string, version: string | undefined, onFailOpen: () => void): Promise<Loaded | null>
  /** The near cache's copy, at once, if it may serve a client presenting `version` (sessionmesh engines only). */
  cached?(sid: string, version: string, withExpires: false): Loaded | null | undefined
  save(
    sid: string,
    session: object,
    snapshot: Snapshot | undefined,
    device: Device,
    fields: Record<string, string>,
  ): Promise<Snapshot | null | undefined>
  touchDue(session: object, snapshot: Snapshot | undefined): boolean
  touch(sid: string, session: object, snapshot: Snapshot | undefined): Promise<unknown>
  /** The user a session belongs to (sessionmesh engines only: decides rotation's grace window). */
  userIdOf?(session: object): string | undefined
  /** `reason` is for the lifecycle event (`logout` when absent). */
  destroy(sid: string, reason?: 'regenerated'): Promise<void>
}

type Done = (error?: unknown) => void

/** The callback API every express-session store implements (connect-redis, MemoryStore, …). */
export interface ForeignStore {
  get(sid: string, callback: (error: unknown, session?: object | null) => void): void
  set(sid: string, session: object, callback?: Done): void
  destroy(sid: string, callback?: Done): void
  touch?(sid: string, session: object, callback?: Done): void
}

const NO_META = { createdAt: 0, lastSeenAt: 0, expiresAt: Number.POSITIVE_INFINITY }

/**
 * An express-session store behind the middleware. It gets whole sessions, as
 * under express-session; what the middleware still saves is the hashing (a key by
 * key comparison instead) and the cookie re-signing.
 */
export function foreignSource(store: ForeignStore): Source {
  const snapshotOf = (fields: Record<string, string>): Snapshot => ({
    fields,
    meta: NO_META,
    version: undefined,
    versions: [],
    loadSeq: 0,
  })
  return {
    load: (sid) =>
      new Promise((resolve, reject) => {
        store.get(sid, (error, data) => {
          if (error) return reject(error)
          const session = data as SessionData | null | undefined
          if (!session || typeof session !== 'object') return resolve(null)
          resolve({ data: session, snapshot: snapshotOf(encodeSession(session)) })
        })
      }),
    save: (sid, session, _snapshot, _device, fields) =>
      new Promise((resolve, reject) => {
        store.set(sid, session, (error) => (error ? reject(error) : resolve(snapshotOf(fields))))
      }),
    touchDue: () => typeof store.touch === 'function',
    touch: (sid, session) =>
      new Promise<void>((resolve, reject) => {
        store.touch?.(sid, session, (error) => (error ? reject(error) : resolve()))
      }),
    destroy: (sid) =>
      new Promise<void>((resolve, reject) => {
        store.destroy(sid, (error) => (error ? reject(error) : resolve()))
      }),
  }
}
