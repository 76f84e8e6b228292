import { debuglog } from 'node:util'
import {
  type Backend,
  type CallOptions,
  type IndexedSession,
  MalformedRecordError,
  type ReadWriteResult,
  type SessionTouch,
  type SessionWrite,
  type WriteBasis,
  type WriteResult,
} from '../../core/backend.js'
import { RedisBackendBase } from './base.js'
import {
  basisArgs,
  basisResult,
  bucketKey,
  isReply,
  readSession,
  sessionKey,
  writeArgs,
} from './common.js'
import { clusterScripts as lua } from './lua.js'

const debug = debuglog('sessionmesh:redis')

/**
 * An index entry whose session is missing is pruned only once it is older than
 * this: until then it may be a login whose session write is still on its way.
 */
export const JOIN_GRACE_MS = 60_000

/**
 * A Redis Cluster. Every script touches one key, so that it is always in one hash
 * slot and a slot migration can redirect it: a session's tombstone is the session
 * key itself, and a session and its user's index bucket are written by separate
 * scripts, in an order chosen so that whatever a crash or a failover
 * interrupts, what is left is at worst an index entry whose session is gone or
 * belongs to someone else, which listing and revocation check and drop:
 *
 * - a login joins the user's index first, then writes the session; the session
 *   script refuses to give a session a user whose index the caller has not
 *   joined, so a live session is never missing from its user's index;
 * - a destroy tombstones the session first, then leaves the index;
 * - a revocation reads the index, destroys each session that still belongs to the
 *   user, then drops them from the index.
 *
 * Round trips: a read 1, a write or touch 1 (a login 2), a logout 2, a listing or
 * a revocation 2 to 3 (the sessions are read or destroyed in parallel).
 */
export class ClusterRedisBackend extends RedisBackendBase implements Backend {
  async write(sid: string, write: SessionWrite): Promise<WriteResult> {
    return first(await this.#write(sid, write, undefined)) === 1 ? 'ok' : 'gone'
  }

  /** The basis is read and the session read back inside the session's write script. */
  async writeAndRead(
    sid: string,
    write: SessionWrite,
    basis: WriteBasis,
  ): Promise<ReadWriteResult> {
    const reply = await this.#write(sid, write, basis)
    return first(reply) === 1 ? basisResult(reply, 2, basis) : { result: 'gone' }
  }

  async #write(sid: string, write: SessionWrite, basis: WriteBasis | undefined): Promise<unknown> {
    const keys = this.#keys(sid)
    const deadline = await this.clock.convert(write.deadline)
    const user = write.userId ?? ''
    let joined = ''
    // A new session that belongs to a user is a login: join first, as the script
    // would ask for it anyway.
    if (user !== '' && write.mode === 'create') {
      await this.#join(user, sid, deadline, write.now)
      joined = user
    }
    const prefix = this.layout.prefix
    const args = () => writeArgs(prefix, sid, write, [deadline, joined, ...basisArgs(basis)])
    let reply = await this.run(lua.write, keys, args())
    if (first(reply) === 2) {
      await this.#join(user, sid, deadline, write.now)
      joined = user
      reply = await this.run(lua.write, keys, args())
    }
    if (first(reply) === 1) {
      const previous = second(reply)
      if (previous !== '' && previous !== user) this.#leaveLater(previous, [[sid, '']])
    }
    return reply
  }

  async touch(sid: string, touch: SessionTouch): Promise<WriteResult> {
    const args = [
      '',
      String(touch.now),
      String(Math.floor(touch.expiresAt)),
      String(touch.maxLifetime),
      '0', // no deadline: see SessionEngine.touch,
    ]
    const result = await this.run(lua.touch, [sessionKey(this.layout.prefix, sid)], args)
    return result === 1 ? 'ok' : 'gone'
  }

  async destroy(sid: string, options: CallOptions = {}): Promise<void> {
    const deadline = await this.clock.convert(options.deadline)
    const reply = await this.#destroyOne(sid, deadline, '', options)
    const user = second(reply)
    if (user !== '') await this.#leave(user, [[sid, '']]).catch(ignore)
  }

  async listUser(userId: string, now: number): Promise<IndexedSession[]> {
    const entries = await this.#members(userId)
    const send = this.connection.send
    const rows = await Promise.all(
      Object.entries(entries).map(async ([sid, joinedAt]) => {
        // The whole hash: an agent may be stored in any number of pieces (see lua.ts).
        const stored = await readSession(send, sessionKey(this.layout.prefix, sid)).catch(
          (error: unknown) => {
            // A record of another type or shape is no live session of this user; anything else is.
            if (error instanceof MalformedRecordError) return null
            throw error
          },
        )
        return { sid, joinedAt, stored }
      }),
    )
    const live: IndexedSession[] = []
    const dead: Array<[string, string]> = []
    for (const { sid, joinedAt, stored } of rows) {
      if (stored?.meta.userId === userId) {
        live.push({ id: sid, meta: stored.meta })
      } else if (now - joinedAt > JOIN_GRACE_MS) dead.push([sid, String(joinedAt)])
      // else: a login on its way, whose session is not written yet.
    }
    if (dead.length > 0) this.#leaveLater(userId, dead)
    return live
  }

  async destroyUser(userId: string, except?: string, options: CallOptions = {}): Promise<string[]> {
    const until = await this.clock.convert(options.deadline)
    const targets = Object.keys(await this.#members(userId)).filter((sid) => sid !== except)
    const replies = await Promise.all(
      targets.map((sid) => this.#destroyOne(sid, until, userId, options)),
    )
    const destroyed = targets.filter((_, i) => first(replies[i]) === 1)
    // Gone already, or moved to another user meanwhile: either way not this user's any more.
    if (targets.length > 0) {
      await this.#leave(
        userId,
        targets.map((sid) => [sid, '']),
      ).catch(ignore)
    }
    return destroyed
  }

  ids(): Promise<string[]> {
    // Tombstones share the session keys' names here: keep the keys that hold a session.
    return this.scanIds(async (keys, send) => {
      const live = await Promise.all(keys.map((key) => send(['HEXISTS', key, 'c']).catch(() => 0)))
      return live.map((n) => Number(n) === 1)
    })
  }

  #keys(sid: string): [string] {
    return [sessionKey(this.layout.prefix, sid)]
  }

  #destroyOne(
    sid: string,
    deadline: string,
    expectedUser: string,
    { reason, by }: CallOptions,
  ): Promise<unknown> {
    const { prefix, tombstoneTtl } = this.layout
    const said = [reason ?? '', by ?? '']
    const args = [`${prefix}events`, sid, tombstoneTtl, deadline, expectedUser, ...said]
    return this.run(lua.destroy, this.#keys(sid), args)
  }

  async #join(user: string, sid: string, deadline: string, now: number): Promise<void> {
    const bucket = bucketKey(this.layout, user)
    const reply = await this.run(lua.join, [bucket], [user, sid, deadline, String(now)])
    // Upkeep, off the request's path: the user's other sessions, and two other
    // users of the bucket (for users who never come back: buckets have no TTL here).
    const [own, others] = Array.isArray(reply) ? reply : []
    const users: Array<[string, Entries]> = [[user, entriesOf(own)]]
    if (Array.isArray(others)) {
      for (const other of others) {
        if (Array.isArray(other)) users.push([String(other[0]), entriesOf(other[1])])
      }
    }
    for (const [who, entries] of users) this.#sweep(who, entries, now, sid)
  }

  /** Drops the entries of `user` older than the grace period whose session is gone. */
  #sweep(user: string, entries: Entries, now: number, skip: string): void {
    const send = this.connection.send
    const { prefix } = this.layout
    const old = Object.entries(entries).filter(
      ([sid, at]) => sid !== skip && now - at > JOIN_GRACE_MS,
    )
    if (old.length === 0) return
    Promise.all(
      old.map(async ([sid, at]): Promise<[string, string] | undefined> => {
        const key = sessionKey(prefix, sid)
        const reply = await send(key, ['HMGET', key, 'c', 'u']).catch((error: unknown) => {
          if (isReply(error) && /^WRONGTYPE\b/.test(error.message)) return []
          throw error
        })
        const [created, owner] = reply as unknown[]
        const mine = created != null && owner != null && String(owner) === user
        return mine ? undefined : [sid, String(at)]
      }),
    )
      .then((results) => {
        const dead = results.filter((entry): entry is [string, string] => entry !== undefined)
        return dead.length > 0 ? this.#leave(user, dead) : undefined
      })
      .catch(ignore)
  }

  /** Drops `[sid, joinedAt]` entries; a joinedAt of '' drops the id whenever it joined. */
  #leave(user: string, entries: Array<[string, string]>): Promise<unknown> {
    return this.run(lua.leave, [bucketKey(this.layout, user)], [user, ...entries.flat()])
  }

  #leaveLater(user: string, entries: Array<[string, string]>): void {
    this.#leave(user, entries).catch(ignore)
  }

  async #members(user: string): Promise<Entries> {
    return entriesOf(await this.run(lua.members, [bucketKey(this.layout, user)], [user]))
  }
}

function first(reply: unknown): number {
  return Array.isArray(reply) ? Number(reply[0]) : Number.NaN
}

function second(reply: unknown): string {
  return Array.isArray(reply) && reply[1] != null ? String(reply[1]) : ''
}

/** A user's index entries: session id → when it joined (epoch ms). */
type Entries = Record<string, number>

function entriesOf(reply: unknown): Entries {
  let value: unknown
  try {
    value = JSON.parse(String(reply))
  } catch {
    return {}
  }
  const entries: Entries = {}
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [sid, at] of Object.entries(value)) if (typeof at === 'number') entries[sid] = at
  }
  return entries
}

function ignore(error: unknown): void {
  debug('user index upkeep failed (left for the next listing to prune): %s', error)
}
