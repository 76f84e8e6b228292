import { randomBytes } from 'node:crypto'
import { debuglog } from 'node:util'
import { type BusState, parseEvent, type SessionEvent } from '../../core/backend.js'
import type { Connection, Send, Subscriber } from './client.js'

const debug = debuglog('sessionmesh:redis')

/** How often this process sends itself a heartbeat through Redis. */
export const HEARTBEAT_MS = 250
/** No heartbeat back for this long: the subscription is treated as lost. */
export const STALL_MS = 1_000

/** Options of {@link openBus}. */
export interface BusOptions {
  connection: Connection
  /** The channel session events are published on. */
  channel: string
  listener: (event: SessionEvent) => void
  onGap: ((state: BusState) => void) | undefined
}

/**
 * Subscribes to the session events, and keeps knowing whether it still hears them.
 *
 * Pub/sub delivers at most once, and a link can die in two ways: it drops (the
 * client says so) or it freezes (no RST, no close: nothing says anything). For the
 * second, the process publishes a heartbeat to a channel of its own every 250 ms
 * through its command connection and listens for it on the subscription: when
 * none has come back for a second, events may be missing and `onGap('lost')` is
 * called. The subscriber is then replaced (on a cluster, by one on another node),
 * and the first heartbeat heard on the new one calls `onGap('restored')`, since
 * a heartbeat that made the whole trip proves the subscription is live.
 *
 * Resolves, once subscribed, with the function that unsubscribes.
 */
export async function openBus(options: BusOptions): Promise<() => Promise<void>> {
  const { connection, channel, listener, onGap } = options
  const beat = `${channel}:hb:${randomBytes(6).toString('hex')}`
  const send: Send = connection.send
  let current: Subscriber | undefined
  let startedAt = 0
  let lastBeat = Date.now()
  let attempt = 0
  let gap = false
  let closed = false
  let replacing: Promise<void> | undefined

  const lose = (reason: string) => {
    if (closed) return
    if (!gap) {
      gap = true
      debug('session events may be missed: %s', reason)
      onGap?.('lost')
    }
  }

  const open = async (): Promise<void> => {
    const mine = attempt
    startedAt = Date.now()
    const subscriber = await connection.subscriber(mine)
    // An attempt given up on (see replace) that connects late is not wanted any more.
    if (mine !== attempt || closed) {
      await subscriber.close().catch(() => {})
      return
    }
    current = subscriber
    subscriber.onLost((reason) => {
      if (subscriber === current) lose(reason)
    })
    await subscriber.subscribe([channel, beat], (from, message) => {
      if (subscriber !== current) return
      if (from === beat) {
        lastBeat = Date.now()
        if (gap) {
          gap = false
          debug('session events flow again')
          onGap?.('restored')
        }
        return
      }
      const event = parseEvent(message)
      if (event) listener(event)
      else debug('ignoring a message on %s that is not a session event', channel)
    })
  }

  // A replacement is due when heartbeats stopped and the subscriber has had its
  // chance; one at a time, each on the next node.
  const replace = () => {
    replacing ??= (async () => {
      const old = current
      current = undefined
      await old?.close().catch(() => {})
      attempt++
      // A frozen server may take the connection and never answer: give up on the
      // attempt after a while, so that the next one can try elsewhere.
      let timer: NodeJS.Timeout | undefined
      const giveUp = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, 2 * STALL_MS)
        timer.unref()
      })
      try {
        await Promise.race([open(), giveUp])
      } catch (error) {
        debug('re-subscribing failed: %s', error instanceof Error ? error.message : error)
      } finally {
        clearTimeout(timer)
      }
    })().finally(() => {
      replacing = undefined
    })
  }

  await open()
  lastBeat = Date.now()
  const timer = setInterval(() => {
    if (closed) return
    send(undefined, ['PUBLISH', beat, '1']).catch(() => {})
    const now = Date.now()
    if (now - lastBeat > STALL_MS) {
      lose(`no heartbeat for ${now - lastBeat} ms`)
      if (!replacing && now - startedAt > STALL_MS) replace()
    }
  }, HEARTBEAT_MS)
  timer.unref()

  return async () => {
    closed = true
    clearInterval(timer)
    await replacing
    await current?.close()
    current = undefined
  }
}
