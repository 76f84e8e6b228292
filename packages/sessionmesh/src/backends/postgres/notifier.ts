// The PostgreSQL backend's `changed` events, sent after the write has committed.
//
// A NOTIFY inside a write's transaction makes its commit take a database-wide lock
// (PostgreSQL's notify queue lock) and hold it through the WAL flush: committing
// writes then flush one at a time, with no group commit, and many concurrent writes
// to different sessions run at a third of their speed (bench/pg-notify.mjs). So a
// write commits first, and its event follows in a statement of its own, batched
// with the other writes' events of the moment: that statement writes no WAL, holds
// the lock only briefly, and carries many events.
//
// What this gives up: a process that dies between a write's commit and its event
// (a few hundred µs) loses that event. `changed` only tells near caches to drop a
// copy, and a near cache serves a copy only to a client presenting a version that
// copy holds, for at most `maxAge`; a destroy, which revokes sockets, is still
// notified in its own statement and is never lost this way.

import { debuglog } from 'node:util'
import { formatEvent } from '../../core/backend.js'

const debug = debuglog('sessionmesh:postgres')

/** Events in one statement at most (each about 60 bytes of parameter). */
const BATCH = 1000
/** Events waiting at most: past this, the oldest are dropped (PostgreSQL is not answering). */
const MAX_QUEUED = 100_000
/** A batch that fails is sent again after this long, this many times in all. */
const RETRY_MS = 200
const ATTEMPTS = 3

/** Sends `changed` events in batches, one statement in flight at a time. */
export class ChangeNotifier {
  readonly #send: (payloads: string[]) => Promise<unknown>
  /** Events not sent yet, in write order: the session and the event's number. */
  #queue: Array<{ sid: string; seq: number }> = []
  #seq = 0
  /** Every event up to this number has been sent (or given up on). */
  #sent = 0
  #running = false
  /** Callers of {@link flush}, each waiting for the events up to its number. */
  #waiting: Array<{ upTo: number; resolve: () => void }> = []

  /** `send` runs one statement that notifies each payload (`notifyChanged` in statements.ts). */
  constructor(send: (payloads: string[]) => Promise<unknown>) {
    this.#send = send
  }

  /** A write of `sid` has committed: its event goes out with the next batch. */
  changed(sid: string): void {
    if (this.#queue.length >= MAX_QUEUED) {
      this.#queue.shift()
      debug('change events are not being sent; dropped the oldest')
    }
    this.#queue.push({ sid, seq: ++this.#seq })
    if (this.#running) return
    this.#running = true
    // setImmediate: the writes whose replies arrive together go in one batch.
    setImmediate(() => void this.#drain())
  }

  /**
   * Resolves once every event queued so far has been sent (or given up on); not
   * the ones queued after, so a steady stream of writes cannot hold it up. A
   * destroy waits for it, so that this process's events arrive in the order of
   * its calls.
   */
  flush(): Promise<void> {
    if (this.#sent >= this.#seq) return Promise.resolve()
    return new Promise((resolve) => this.#waiting.push({ upTo: this.#seq, resolve }))
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, BATCH)
      await this.#sendBatch(batch)
      // Batches leave in order: everything up to this batch's last event is out.
      this.#sent = batch[batch.length - 1]?.seq ?? this.#sent
      this.#waiting = this.#waiting.filter((waiter) => {
        if (waiter.upTo > this.#sent) return true
        waiter.resolve()
        return false
      })
    }
    this.#running = false
  }

  /** Sends one batch, trying again a few times; never throws. */
  async #sendBatch(events: Array<{ sid: string; seq: number }>): Promise<void> {
    // Each payload carries its event's number ("n", which readers ignore):
    // PostgreSQL delivers equal payloads of one transaction once, and each write's
    // event must arrive (a near cache counts the echoes of its own writes).
    const payloads = events.map(
      ({ sid, seq }) => `${formatEvent('changed', sid).slice(0, -1)},"n":${seq}}`,
    )
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#send(payloads)
        return
      } catch (error) {
        if (attempt >= ATTEMPTS) {
          debug('could not send %d change events: %s', payloads.length, error)
          return
        }
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS))
      }
    }
  }
}
