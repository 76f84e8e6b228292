import type { Backend, SessionLimitRule } from './backend.js'
import { InvalidOptionError, SessionLimitError } from './errors.js'
import type { DestroyReason } from './events.js'
import { debug } from './telemetry.js'

/**
 * What a login does to a user who already has `others` (oldest first): `'full'`
 * when `refuse` turns it away, else the sessions to revoke so that `max` remain
 * with the new one. What every backend's `writeLimited` applies, and the store
 * around a write where the backend has none.
 */
export function overLimit(others: readonly string[], rule: SessionLimitRule): string[] | 'full' {
  const excess = others.length - (rule.max - 1)
  if (excess <= 0) return []
  return rule.policy === 'refuse' ? 'full' : others.slice(0, excess)
}

/** What a full user does to a new login: end the oldest sessions, or refuse the login. */
export type SessionLimitPolicy = 'revoke-oldest' | 'refuse'

/** What the limit needs of the engine. */
interface Host {
  backend: Backend
  call<T>(operation: string, call: () => Promise<T>): Promise<T>
  destroy(sid: string, reason: DestroyReason): Promise<void>
}

/**
 * `maxSessionsPerUser`: applied when a save gives a session a user it did not
 * have (a login). A backend with `writeLimited` applies it inside the login's
 * write ({@link SessionLimit.rule}). For the others it is read from the user
 * index around the write, not inside it ({@link SessionLimit.before} and
 * {@link SessionLimit.after}), so two logins at the same moment can both pass a
 * `refuse` check, and under `revoke-oldest` the user holds one session too many
 * until the second login's revocation lands (docs: README "Sessions per user").
 */
export class SessionLimit {
  readonly max: number
  readonly policy: SessionLimitPolicy
  readonly rule: SessionLimitRule
  readonly #host: Host

  constructor(host: Host, max: number, policy: SessionLimitPolicy | undefined) {
    if (!Number.isInteger(max) || max < 1) {
      throw new InvalidOptionError(`maxSessionsPerUser must be a positive integer, not ${max}`)
    }
    const chosen = policy ?? 'revoke-oldest'
    if (chosen !== 'revoke-oldest' && chosen !== 'refuse') {
      throw new InvalidOptionError(
        `onSessionLimit must be 'revoke-oldest' or 'refuse', not ${String(policy)}`,
      )
    }
    this.#host = host
    this.max = max
    this.policy = chosen
    this.rule = { max, policy: chosen }
  }

  /** Before a login's write: refuses it (`refuse`) when the user already has `max` other sessions. */
  async before(sid: string, userId: string, now: number): Promise<void> {
    if (this.policy !== 'refuse') return
    const others = await this.#others(sid, userId, now)
    const ids = others.map((entry) => entry.id)
    if (overLimit(ids, this.rule) === 'full') throw new SessionLimitError(userId, this.max)
  }

  /** After a login's write: ends the user's oldest sessions beyond `max` (`revoke-oldest`). */
  async after(sid: string, userId: string, now: number): Promise<void> {
    if (this.policy !== 'revoke-oldest') return
    try {
      const others = await this.#others(sid, userId, now)
      others.sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id))
      const revoked = overLimit(
        others.map((entry) => entry.id),
        this.rule,
      )
      for (const id of revoked) await this.#host.destroy(id, 'limit')
    } catch (error) {
      // The login is saved: an outage now must not fail it. The next login retries.
      debug('session limit of user not applied this time: %s', error)
    }
  }

  async #others(sid: string, userId: string, now: number) {
    const backend = this.#host.backend
    const listed = await this.#host.call('listUserSessions', () => backend.listUser(userId, now))
    return listed
      .filter((entry) => entry.id !== sid)
      .map((entry) => ({ id: entry.id, createdAt: entry.meta.createdAt }))
  }
}
