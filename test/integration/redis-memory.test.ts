import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createClient } from 'redis'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type RunningRedis, startRedis } from '../../packages/sessionmesh/src/cli/redis.js'
import { findTool, freePort, tools } from '../../packages/sessionmesh/src/cli/system.js'
import { createWrite } from '../support/contract.js'
import { RedisServer } from '../support/redis-server.js'

// How Redis encodes a session. It keeps a hash compact (a listpack) only while
// every value is at most hash-max-listpack-value bytes, 64 by default; past that
// the hash becomes a hashtable of nearly twice the memory. A browser's
// User-Agent is longer, so the backend packs it (agent.ts), and it packs the
// cookie and shortens the version's field (fields.ts), which every session has; a
// longer value the application stores still converts the hash, which is why
// `sessionmesh up` starts its Redis with COMPACT_HASHES.

const BROWSER =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36'

let dir: string
let managed: RunningRedis
let plain: RedisServer

beforeAll(async () => {
  const bin = findTool(tools.redis)
  if (!bin) throw new Error('redis-server is not installed')
  dir = mkdtempSync(join(tmpdir(), `sm-redis-memory-${process.pid}-`))
  managed = await startRedis(bin, await freePort(), dir)
  plain = await RedisServer.start()
})
afterAll(async () => {
  await managed?.stop()
  await plain?.stop()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

const COOKIE = '{"originalMaxAge":86400000,"httpOnly":true,"path":"/"}'
const LONG_COOKIE =
  '{"originalMaxAge":86400000,"secure":true,"httpOnly":true,"path":"/","sameSite":"lax"}'
const VERSION = '"UHjMeVft"'
const PROFILE = '{"displayName":"Alice Example","email":"alice@example.com","locale":"en-GB"}'

interface Stored {
  encoding: string | null
  bytes: number
  values: string[]
}

type RedisClient = Awaited<ReturnType<ReturnType<typeof createClient>['connect']>>

/** Runs `body` with a client of the Redis at `url`, closed after. */
async function withClient<T>(url: string, body: (client: RedisClient) => Promise<T>): Promise<T> {
  const client = await createClient({ url }).connect()
  try {
    return await body(client)
  } finally {
    await client.close()
  }
}

/** How Redis encodes, and what it takes for, one session a browser logged in with. */
function stored(url: string, sid: string, set: Record<string, string>): Promise<Stored> {
  return withClient(url, async (client) => {
    const backend = redisBackend({ client, prefix: 'mem:' })
    const write = createWrite({
      set: { passport: '{"user":"alice"}', ...set },
      userId: 'alice',
      device: { userAgent: BROWSER, ip: '203.0.113.7' },
    })
    expect(await backend.write(sid, write)).toBe('ok')
    expect((await backend.get(sid))?.meta.userAgent).toBe(BROWSER)
    return {
      encoding: await client.objectEncoding(`mem:s:${sid}`),
      bytes: Number(await client.memoryUsage(`mem:s:${sid}`)),
      values: Object.values(await client.hGetAll(`mem:s:${sid}`)),
    }
  })
}

describe('Redis memory of a session with a browser User-Agent', () => {
  it('stays a listpack under Redis defaults: the agent and the cookie are packed into short values', async () => {
    const defaults = await stored(plain.url, 'plain', { cookie: COOKIE, __smv: VERSION })
    expect(BROWSER.length).toBeGreaterThan(64)
    expect(defaults.encoding).toBe('listpack')
    expect(Math.max(...defaults.values.map((v) => Buffer.byteLength(v)))).toBeLessThanOrEqual(64)
    expect(defaults.values.some((v) => v.includes('Chrome'))).toBe(false)
    expect(defaults.values.some((v) => v.includes('originalMaxAge'))).toBe(false)
    expect(defaults.values).toContain('UHjMeVft')

    // The same session as the previous release stored its cookie and version: a
    // larger allocation. 216 B against 280 B on Redis 7.0 (with the agent
    // unpacked in two pieces as well, 376 B; in one value, a hashtable: 980 B).
    await withClient(plain.url, async (client) => {
      const hash = await client.hGetAll('mem:s:plain')
      const { k: _cookie, v: _version, ...rest } = hash
      await client.hSet('mem:s:plaim', { ...rest, '.cookie': COOKIE, '.__smv': VERSION })
      const before = Number(await client.memoryUsage('mem:s:plaim'))
      expect(defaults.bytes).toBeLessThan(before)
    })
  })

  it('reads a cookie and a version the previous release stored as data keys, and moves each when written', async () => {
    await withClient(plain.url, async (client) => {
      const backend = redisBackend({ client, prefix: 'old:' })
      const sid = 'previous-cookie'
      const key = `old:s:${sid}`
      const write = createWrite({ set: { cookie: COOKIE, __smv: VERSION, n: '1' } })
      expect(await backend.write(sid, write)).toBe('ok')
      // As the previous release left it: both as data keys, nothing in 'k' or 'v'.
      await client.hDel(key, ['k', 'v'])
      await client.hSet(key, { '.cookie': LONG_COOKIE, '.__smv': VERSION })
      expect((await backend.get(sid))?.fields).toEqual({
        cookie: LONG_COOKIE,
        __smv: VERSION,
        n: '1',
      })

      // A write of each key stores it short and deletes the old field.
      const next = '"Zk9yMxT2"'
      const update = createWrite({ mode: 'update', replace: false, device: {} })
      expect(await backend.write(sid, { ...update, set: { cookie: COOKIE, __smv: next } })).toBe(
        'ok',
      )
      let hash = await client.hGetAll(key)
      expect(hash['.cookie']).toBeUndefined()
      expect(hash['.__smv']).toBeUndefined()
      expect(hash.v).toBe('Zk9yMxT2')
      expect((await backend.get(sid))?.fields).toEqual({ cookie: COOKIE, __smv: next, n: '1' })

      // A process of the previous release writing them as data keys leaves 'k' and
      // 'v' behind: the data keys are the newer.
      await client.hSet(key, { '.cookie': LONG_COOKIE, '.__smv': VERSION })
      expect((await backend.get(sid))?.fields).toMatchObject({
        cookie: LONG_COOKIE,
        __smv: VERSION,
      })

      // A write that replaces the data (a regenerate) leaves no short field it did not set.
      const replace = createWrite({ mode: 'update', replace: true, device: {}, set: { n: '2' } })
      expect(await backend.write(sid, replace)).toBe('ok')
      hash = await client.hGetAll(key)
      expect(
        Object.keys(hash).filter((name) => ['k', 'v', '.cookie', '.__smv'].includes(name)),
      ).toEqual([])
      expect((await backend.get(sid))?.fields).toEqual({ n: '2' })

      // A version that is not one the engine makes stays a data key, and a basis
      // still finds either form.
      const odd = '"with \\"quotes\\""'
      expect(await backend.write(sid, { ...update, set: { __smv: odd } })).toBe('ok')
      hash = await client.hGetAll(key)
      expect(hash['.__smv']).toBe(odd)
      expect(hash.v).toBeUndefined()
      const read = await backend.writeAndRead?.(
        sid,
        { ...update, set: { __smv: VERSION } },
        { key: '__smv', value: odd },
      )
      expect(read).toEqual({ result: 'ok', previous: odd })
      const again = await backend.writeAndRead?.(
        sid,
        { ...update, set: { __smv: next } },
        { key: '__smv', value: VERSION },
      )
      expect(again).toEqual({ result: 'ok', previous: VERSION })
    })
  })

  it('reads an agent the previous release stored unpacked, and replaces it packed', async () => {
    await withClient(plain.url, async (client) => {
      const backend = redisBackend({ client, prefix: 'old:' })
      const sid = 'previous-release'
      const write = createWrite({ userId: 'bob', device: { userAgent: 'Packed/1.0' } })
      expect(await backend.write(sid, write)).toBe('ok')
      // As the previous release left it: the agent whole in 'a', nothing in 'A'.
      await client.hDel(`old:s:${sid}`, 'A')
      await client.hSet(`old:s:${sid}`, 'a', BROWSER)
      expect((await backend.get(sid))?.meta.userAgent).toBe(BROWSER)
      const [listed] = await backend.listUser('bob', Date.now())
      expect(listed?.meta.userAgent).toBe(BROWSER)

      // An update that carries the device (a reseal after a key rotation) packs it.
      const update = createWrite({ mode: 'update', replace: false, set: {}, userId: 'bob' })
      expect(await backend.write(sid, { ...update, device: { userAgent: BROWSER } })).toBe('ok')
      const fields = await client.hGetAll(`old:s:${sid}`)
      expect(fields.a).toBeUndefined()
      expect(fields.A).toHaveLength(9)
      expect((await backend.get(sid))?.meta.userAgent).toBe(BROWSER)

      // A process of the previous release resealing it writes 'a' and leaves 'A': 'a' is the newer.
      await client.hSet(`old:s:${sid}`, 'a', 'Resealed/2.0')
      expect((await backend.get(sid))?.meta.userAgent).toBe('Resealed/2.0')
      const [relisted] = await backend.listUser('bob', Date.now())
      expect(relisted?.meta.userAgent).toBe('Resealed/2.0')
    })
  })

  it('a longer value of its own makes it a hashtable of nearly twice the size, except in the Redis `sessionmesh up` starts', async () => {
    // A cookie with `secure` and `sameSite` is packed like any other: still compact.
    expect((await stored(plain.url, 'long-cookie', { cookie: LONG_COOKIE })).encoding).toBe(
      'listpack',
    )
    const compact = await stored(managed.url, 'profile', { cookie: COOKIE, profile: PROFILE })
    const defaults = await stored(plain.url, 'profile', { cookie: COOKIE, profile: PROFILE })
    expect(compact.encoding).toBe('listpack')
    expect(defaults.encoding).toBe('hashtable')
    // 707 B against 280 B on Redis 7.0.
    expect(defaults.bytes).toBeGreaterThan(1.6 * compact.bytes)
  })
})
