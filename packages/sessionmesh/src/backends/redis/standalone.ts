import type {
  Backend,
  BusState,
  IndexedSession,
  SessionEvent,
  SessionTouch,
  SessionWrite,
  StoredSession,
  WriteResult,
} from '../../core/backend.js'
import { openBus } from './bus.js'
import type { Connection } from './client.js'
import {
  indexedSession,
  isOutage,
  type Layout,
  readSession,
  Scripts,
  ServerClock,
  scanAll,
  sessionKey,
  tombstoneKey,
  writeArgs,
} from './common.js'
import { standaloneScripts } from './lua.js'

/**
 * One Redis server, or the primary Sentinel points at. Every call is one Lua
 * script, so a write, its user index entry and its change event happen together
 * or not at all, in one round trip.
 */
export class StandaloneRedisBackend implements Backend {
  readonly kind = 'redis'
  readonly #connection: Connection
  readonly #layout: Layout
  readonly #lua: ReturnType<typeof standaloneScripts>
  readonly #scripts: Scripts
  readonly #clock: ServerClock

  constructor(connection: Connection, layout: Layout) {
    this.#connection = connection
    this.#layout = layout
    this.#lua = standaloneScripts(layout.buckets)
    this.#scripts = new Scripts(connection.send)
    this.#clock = new ServerClock(connection.send)
  }

  get(sid: string): Promise<StoredSession | null> {
    return readSession(this.#connection.send, sessionKey(this.#layout.prefix, sid))
  }

  async write(sid: string, write: SessionWrite): Promise<WriteResult> {
    const { prefix } = this.#layout
    const deadline = await this.#clock.convert(write.deadline)
    const keys = [sessionKey(prefix, sid), tombstoneKey(prefix, sid)]
    const result = await this.#run(this.#lua.write, keys, writeArgs(prefix, sid, write, [deadline]))
    return result === 1 ? 'ok' : 'gone'
  }

  async touch(sid: string, touch: SessionTouch): Promise<WriteResult> {
    const args = [
      this.#layout.prefix,
      String(touch.now),
      String(Math.floor(touch.expiresAt)),
      String(touch.maxLifetime),
      await this.#clock.convert(touch.deadline),
    ]
    const result = await this.#run(this.#lua.touch, [sessionKey(this.#layout.prefix, sid)], args)
    return result === 1 ? 'ok' : 'gone'
  }

  async destroy(sid: string, deadline?: number): Promise<void> {
    const { prefix, tombstoneTtl } = this.#layout
    const args = [prefix, tombstoneTtl, await this.#clock.convert(deadline), sid]
    await this.#run(this.#lua.destroy, [], args)
  }

  async listUser(userId: string, _now: number): Promise<IndexedSession[]> {
    const rows = await this.#run(this.#lua.listUser, [], [this.#layout.prefix, userId])
    if (!Array.isArray(rows)) return []
    return rows.map((row: unknown) => indexedSession(row as unknown[], userId))
  }

  async destroyUser(userId: string, except?: string, deadline?: number): Promise<string[]> {
    const { prefix, tombstoneTtl } = this.#layout
    const args = [prefix, tombstoneTtl, except ?? '', userId, await this.#clock.convert(deadline)]
    const destroyed = await this.#run(this.#lua.destroyUser, [], args)
    return Array.isArray(destroyed) ? destroyed.map(String) : []
  }

  async count(): Promise<number> {
    let count = 0
    await scanAll(await this.#connection.primaries(), `${this.#layout.prefix}s:*`, async (keys) => {
      count += keys.length
    })
    return count
  }

  async ids(): Promise<string[]> {
    const ids = new Set<string>()
    const start = this.#layout.prefix.length + 2
    await scanAll(await this.#connection.primaries(), `${this.#layout.prefix}s:*`, async (keys) => {
      for (const key of keys) ids.add(key.slice(start))
    })
    return [...ids]
  }

  async clear(): Promise<void> {
    await clearAll(this.#connection, this.#layout.prefix)
  }

  subscribe(
    listener: (event: SessionEvent) => void,
    onGap?: (state: BusState) => void,
  ): Promise<() => Promise<void>> {
    return openBus({
      connection: this.#connection,
      channel: `${this.#layout.prefix}events`,
      listener,
      onGap,
    })
  }

  isOutage(error: unknown): boolean {
    return isOutage(error)
  }

  async close(): Promise<void> {
    // The client belongs to the application; subscribers are closed by their own handles.
  }

  async #run(source: string, keys: string[], args: string[]): Promise<unknown> {
    try {
      return await this.#scripts.run(source, keys, args)
    } catch (error) {
      if (isOutage(error)) this.#connection.repair()
      throw error
    }
  }
}

/** Deletes every key of `prefix` on every primary: sessions, tombstones, the index. */
export async function clearAll(connection: Connection, prefix: string): Promise<void> {
  await scanAll(await connection.primaries(), `${prefix}*`, async (keys, send) => {
    // One key per UNLINK: on a cluster, the keys of one node may still span slots.
    await Promise.all(keys.map((key) => send(['UNLINK', key])))
  })
}
