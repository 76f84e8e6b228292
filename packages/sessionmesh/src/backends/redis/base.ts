import type { BusState, SessionEvent, StoredSession } from '../../core/backend.js'
import { InvalidOptionError } from '../../core/errors.js'
import { openBus } from './bus.js'
import type { Connection } from './client.js'
import {
  isOutage,
  type Layout,
  readSession,
  Scripts,
  ServerClock,
  scanAll,
  sessionKey,
} from './common.js'
import { evictScript } from './lua.js'

/**
 * What both key layouts share: the read, the bus, clearing, the outage check, and
 * running a script (asking the client to re-read the topology after an outage).
 */
export abstract class RedisBackendBase {
  readonly kind = 'redis'
  protected readonly connection: Connection
  protected readonly layout: Layout
  /** Converts the store's deadlines into Redis's clock for the scripts. */
  protected readonly clock: ServerClock
  readonly #scripts: Scripts

  constructor(connection: Connection, layout: Layout) {
    this.connection = connection
    this.layout = layout
    this.#scripts = new Scripts(connection.send)
    this.clock = new ServerClock(connection.send)
  }

  get(sid: string): Promise<StoredSession | null> {
    return readSession(this.connection.send, sessionKey(this.layout.prefix, sid))
  }

  /** Drops the session's hash; a tombstone stays (see {@link evictScript}). */
  async evict(sid: string): Promise<void> {
    await this.run(evictScript, [sessionKey(this.layout.prefix, sid)], [])
  }

  async count(): Promise<number> {
    return (await this.ids()).length
  }

  abstract ids(): Promise<string[]>

  /** Deletes every key of the prefix on every primary: sessions, tombstones, the index. */
  async clear(): Promise<void> {
    await scanAll(
      await this.connection.primaries(),
      `${this.layout.prefix}*`,
      async (keys, send) => {
        // One key per UNLINK: on a cluster, the keys of one node may still span slots.
        await Promise.all(keys.map((key) => send(['UNLINK', key])))
      },
    )
  }

  subscribe(
    listener: (event: SessionEvent) => void,
    onGap?: (state: BusState) => void,
  ): Promise<() => Promise<void>> {
    const channel = `${this.layout.prefix}events`
    return openBus({ connection: this.connection, channel, listener, onGap })
  }

  isOutage(error: unknown): boolean {
    return !(error instanceof InvalidOptionError) && isOutage(error)
  }

  async close(): Promise<void> {
    // The client belongs to the application; subscribers are closed by their own handles.
  }

  protected async run(source: string, keys: string[], args: string[]): Promise<unknown> {
    try {
      return await this.#scripts.run(source, keys, args)
    } catch (error) {
      if (isOutage(error)) this.connection.repair()
      throw error
    }
  }

  /** The ids behind the `<prefix>s:*` keys that `keep` accepts, on every primary. */
  protected async scanIds(
    keep?: (keys: string[], send: (args: string[]) => Promise<unknown>) => Promise<boolean[]>,
  ): Promise<string[]> {
    const ids = new Set<string>()
    const start = this.layout.prefix.length + 2
    await scanAll(
      await this.connection.primaries(),
      `${this.layout.prefix}s:*`,
      async (keys, send) => {
        const kept = keep ? await keep(keys, send) : undefined
        keys.forEach((key, i) => {
          if (!kept || kept[i]) ids.add(key.slice(start))
        })
      },
    )
    return [...ids]
  }
}
