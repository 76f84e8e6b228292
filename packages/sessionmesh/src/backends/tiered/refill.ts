// How the tiered backend puts the durable tier's copy of a session into the cache
// (on a cache miss, and when it repairs what the cache missed during an outage)
// without hiding a write that reaches the durable tier meanwhile.
import { debuglog } from 'node:util'
import type { SessionWrite, StoredSession } from '../../core/backend.js'
import { redactSid } from '../../core/errors.js'

const debug = debuglog('sessionmesh:tiered')

/** The three calls a refill makes, for one session: each cache call already bounded by the cache timeout. */
export interface RefillCalls {
  cache(write: SessionWrite): Promise<unknown>
  durable(): Promise<StoredSession | null>
  evict(): Promise<void>
}

/**
 * Writes `stored` (the durable tier's copy) to the cache, and checks it did not
 * change meanwhile. Throws when a cache call fails, and only then: a durable read
 * that fails leaves no unchecked copy in the cache, and is not the cache's fault.
 */
export async function refill(
  sid: string,
  stored: StoredSession,
  calls: RefillCalls,
): Promise<void> {
  // A write that reached the durable tier between our read and our refill sends
  // its delta to the cache before or after the refill lands, and the refill may
  // then hide it. Reading again until two reads agree closes that window: any write
  // after the last read applies its delta on top of the refilled record. A
  // concurrent destroy is covered by the cache's tombstone (the refill is a
  // 'create', which a tombstone refuses) or removes the refilled record.
  let current: StoredSession | null = stored
  for (let round = 0; current && round < 3; round++) {
    await calls.cache(refillWrite(current))
    let again: StoredSession | null
    try {
      again = await calls.durable()
    } catch (error) {
      debug(
        'could not check the refill of session %s (%s); dropping the cached copy',
        redactSid(sid),
        error,
      )
      return calls.evict()
    }
    if (again && same(again, current)) return
    current = again
  }
  if (current) {
    debug('session %s kept changing during its refill; dropping the cached copy', redactSid(sid))
    await calls.evict()
  }
}

/**
 * The whole durable record as a cache write: `now` is the creation time so the cache
 * records the same `createdAt`, and the expiry is the durable one, already capped.
 */
function refillWrite(stored: StoredSession): SessionWrite {
  const device: SessionWrite['device'] = {}
  if (stored.meta.userAgent !== undefined) device.userAgent = stored.meta.userAgent
  if (stored.meta.ip !== undefined) device.ip = stored.meta.ip
  return {
    mode: 'create',
    set: stored.fields,
    unset: [],
    replace: true,
    now: stored.meta.createdAt,
    expiresAt: stored.meta.expiresAt,
    maxLifetime: 0,
    userId: stored.meta.userId,
    device,
  }
}

function same(a: StoredSession, b: StoredSession): boolean {
  if (a.meta.expiresAt !== b.meta.expiresAt || a.meta.userId !== b.meta.userId) return false
  const keys = Object.keys(a.fields)
  return (
    keys.length === Object.keys(b.fields).length &&
    keys.every((key) => a.fields[key] === b.fields[key])
  )
}
