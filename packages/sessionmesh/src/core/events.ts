import { randomBytes } from 'node:crypto'
import diagnostics from 'node:diagnostics_channel'
import { EventEmitter } from 'node:events'
import type { Backend, DestroyReason, SessionEvent } from './backend.js'
import { redactSid } from './errors.js'
import { debug } from './telemetry.js'

export type { DestroyReason } from './backend.js'

/**
 * A session lifecycle event. `origin: 'local'`: this process did it (or, for
 * `expired`, saw it); `'bus'`: another process did, heard on the backend's event
 * bus. `sid` is the full session id on the store's EventEmitter and its first
 * characters only on the `sessionmesh:session` diagnostics channel.
 */
export type SessionLifecycleEvent =
  | { type: 'created'; sid: string; userId?: string; origin: 'local' }
  | {
      type: 'destroyed'
      sid: string
      reason: DestroyReason
      origin: 'local' | 'bus'
    }

/** `sessionmesh:session`: every {@link SessionLifecycleEvent}, session ids redacted. */
export const sessionChannel = diagnostics.channel('sessionmesh:session')

// How long a session this process destroyed is remembered, so that its own
// destroy coming back on the bus is not reported a second time.
const OWN_DESTROY_MS = 30_000

/**
 * The lifecycle events of one engine: emitted as `'session'` on this emitter (the
 * stores over the engine forward them) and published on {@link sessionChannel}.
 * Destroys by other processes are heard on the backend's bus once {@link watch}
 * has been called.
 */
export class Lifecycle extends EventEmitter {
  /** This engine's name on the bus (`by`): its own destroys come back with it. */
  readonly name = randomBytes(9).toString('base64url')
  readonly #own = new Map<string, number>()
  #watching: Promise<(() => Promise<void>) | undefined> | undefined

  /** A session this process created. */
  created(sid: string, userId: string | undefined): void {
    const event: SessionLifecycleEvent = { type: 'created', sid, origin: 'local' }
    if (userId !== undefined) event.userId = userId
    this.#publish(event)
  }

  /** A session this process destroyed (or saw expire). */
  destroyed(sid: string, reason: DestroyReason): void {
    const now = Date.now()
    this.#own.set(sid, now + OWN_DESTROY_MS)
    if (this.#own.size > 10_000) {
      for (const [id, until] of this.#own) if (until <= now) this.#own.delete(id)
    }
    this.#publish({ type: 'destroyed', sid, reason, origin: 'local' })
  }

  /** Starts hearing other processes' destroys on `backend`'s bus (once; no-op without a bus). */
  watch(backend: Backend): void {
    if (this.#watching || !backend.subscribe) return
    this.#watching = backend
      .subscribe((event) => this.#heard(event))
      .catch((error: unknown) => {
        debug('lifecycle events from other processes are off: %s', error)
        return undefined
      })
  }

  /** Stops hearing the bus. */
  async close(): Promise<void> {
    const watching = this.#watching
    this.#watching = undefined
    const unsubscribe = await watching
    await unsubscribe?.()
  }

  #heard(event: SessionEvent): void {
    if (event.type !== 'destroyed' || event.by === this.name) return
    // An own destroy heard from a release that does not name itself on the bus.
    const own = this.#own.get(event.sid)
    if (own !== undefined) {
      this.#own.delete(event.sid)
      if (own > Date.now()) return
    }
    const reason = event.reason ?? 'unknown'
    this.#publish({ type: 'destroyed', sid: event.sid, reason, origin: 'bus' })
  }

  #publish(event: SessionLifecycleEvent): void {
    if (this.listenerCount('session') > 0) this.emit('session', event)
    if (sessionChannel.hasSubscribers) {
      sessionChannel.publish({ ...event, sid: redactSid(event.sid) })
    }
  }
}
