import type {
  Backend,
  CallOptions,
  IndexedSession,
  LimitedWriteResult,
  ReadWriteResult,
  SessionLimitRule,
  SessionTouch,
  SessionWrite,
  WriteBasis,
  WriteResult,
} from '../../core/backend.js'
import { RedisBackendBase } from './base.js'
import type { Connection } from './client.js'
import {
  basisArgs,
  basisResult,
  indexedSession,
  type Layout,
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
export class StandaloneRedisBackend extends RedisBackendBase implements Backend {
  readonly #lua: ReturnType<typeof standaloneScripts>

  constructor(connection: Connection, layout: Layout) {
    super(connection, layout)
    this.#lua = standaloneScripts(layout.buckets)
  }

  async write(sid: string, write: SessionWrite): Promise<WriteResult> {
    return (await this.#write(sid, write, undefined)) === 0 ? 'gone' : 'ok'
  }

  /** The basis is read and the session read back inside the write's script. */
  async writeAndRead(
    sid: string,
    write: SessionWrite,
    basis: WriteBasis,
  ): Promise<ReadWriteResult> {
    const reply = await this.#write(sid, write, undefined, basis)
    return reply === 0 ? { result: 'gone' } : basisResult(reply, 1, basis)
  }

  /** The limit is applied inside the write's script: one atomic step, as every write here. */
  async writeLimited(
    sid: string,
    write: SessionWrite,
    limit: SessionLimitRule,
  ): Promise<LimitedWriteResult> {
    const result = await this.#write(sid, write, limit)
    if (result === 0) return { result: 'gone' }
    if (result === 2) return { result: 'full' }
    return { result: 'ok', revoked: Array.isArray(result) ? result.map(String) : [] }
  }

  async #write(
    sid: string,
    write: SessionWrite,
    limit: SessionLimitRule | undefined,
    basis?: WriteBasis,
  ) {
    const { prefix, tombstoneTtl } = this.layout
    const deadline = await this.clock.convert(write.deadline)
    const keys = [sessionKey(prefix, sid), tombstoneKey(prefix, sid)]
    const limits = [String(limit?.max ?? 0), limit?.policy ?? '', tombstoneTtl]
    // The caller's name goes on the limit's revocations only.
    const extra = [deadline, ...limits, limit ? (write.by ?? '') : '', ...basisArgs(basis)]
    return this.run(this.#lua.write, keys, writeArgs(prefix, sid, write, extra))
  }

  async touch(sid: string, touch: SessionTouch): Promise<WriteResult> {
    const args = [
      this.layout.prefix,
      String(touch.now),
      String(Math.floor(touch.expiresAt)),
      String(touch.maxLifetime),
      '0', // no deadline: see SessionEngine.touch,
    ]
    const result = await this.run(this.#lua.touch, [sessionKey(this.layout.prefix, sid)], args)
    return result === 1 ? 'ok' : 'gone'
  }

  async destroy(sid: string, options: CallOptions = {}): Promise<void> {
    const { prefix, tombstoneTtl } = this.layout
    const deadline = await this.clock.convert(options.deadline)
    const args = [prefix, tombstoneTtl, deadline, options.reason ?? '', options.by ?? '', sid]
    await this.run(this.#lua.destroy, [], args)
  }

  async listUser(userId: string, _now: number): Promise<IndexedSession[]> {
    const rows = await this.run(this.#lua.listUser, [], [this.layout.prefix, userId])
    if (!Array.isArray(rows)) return []
    return rows.map((row: unknown) => indexedSession(row as unknown[], userId))
  }

  async destroyUser(userId: string, except?: string, options: CallOptions = {}): Promise<string[]> {
    const { prefix, tombstoneTtl } = this.layout
    const args = [
      prefix,
      tombstoneTtl,
      except ?? '',
      userId,
      await this.clock.convert(options.deadline),
      options.reason ?? '',
      options.by ?? '',
    ]
    const destroyed = await this.run(this.#lua.destroyUser, [], args)
    return Array.isArray(destroyed) ? destroyed.map(String) : []
  }

  ids(): Promise<string[]> {
    return this.scanIds()
  }
}
