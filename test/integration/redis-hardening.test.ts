import { spawn } from 'node:child_process'
import { resolve } from 'node:path'
import { createClient } from 'redis'
import { type BusState, SessionStore } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RedisServer } from '../support/redis-server.js'
import { FreezableProxy } from '../support/tcp-proxy.js'

// What a security review found in the Redis backend (issue 11, items 1-4), each
// against a private redis-server.

let server: RedisServer
let redis: ReturnType<typeof createClient>
beforeAll(async () => {
  server = await RedisServer.start()
  redis = createClient({ url: server.url })
  redis.on('error', () => {})
  await redis.connect()
})
afterAll(async () => {
  redis.destroy()
  await server.stop()
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const cookie = { originalMaxAge: 3_600_000, path: '/', httpOnly: true }

describe('a call reported as failed never happens later', () => {
  it('regression: a set and a destroy that timed out while Redis was stopped are not applied after SIGCONT', async () => {
    const client = createClient({ url: server.url })
    client.on('error', () => {})
    await client.connect()
    const store = new SessionStore({
      backend: redisBackend({ client, prefix: 'dl:' }),
      timeout: 200,
    })
    try {
      await store.set('kept', { cookie, cart: 'before' })
      await store.set('doomed', { cookie })
      const loaded = await store.get('kept')
      server.signal('SIGSTOP')
      try {
        const set = store.set('kept', { ...loaded, cart: 'after' })
        await expect(set).rejects.toMatchObject({ code: 'SESSIONMESH_STORE_UNAVAILABLE' })
        await sleep(600) // past the breaker's retryAfter, so the destroy is really sent
        await expect(store.destroy('doomed')).rejects.toMatchObject({
          code: 'SESSIONMESH_STORE_UNAVAILABLE',
        })
      } finally {
        server.signal('SIGCONT')
      }
      // The queued commands reach Redis now, past their deadlines: both must do nothing.
      await sleep(300)
      expect(await redis.hGet('dl:s:kept', '.cart')).toBe('"before"')
      expect(await redis.exists('dl:s:doomed')).toBe(1)
    } finally {
      client.destroy()
    }
  })
})

describe('an outage of a client the backend was given cannot end the process', () => {
  it('regression: a node-redis client with no error listener survives Redis being killed', async () => {
    const own = await RedisServer.start()
    const fixture = resolve(import.meta.dirname, '../fixtures/redis-no-error-listener.mjs')
    const child = spawn(process.execPath, [fixture, own.url], { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString()
    })
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString()
    })
    try {
      await expect.poll(() => output, { timeout: 10_000 }).toContain('ready')
      await own.kill()
      const before = output.length
      await sleep(1_500)
      expect(child.exitCode, output).toBeNull()
      expect(output.slice(before)).toContain('alive')
    } finally {
      child.kill('SIGKILL')
      await own.stop()
    }
  })
})

describe('a frozen link to the bus is noticed within about a second', () => {
  it('regression: a subscription whose link hangs without a reset reports a gap, and the restore after the thaw', async () => {
    const proxy = await FreezableProxy.start(server.port)
    const client = createClient({ url: proxy.url })
    client.on('error', () => {})
    await client.connect()
    const backend = redisBackend({ client, prefix: 'fz:' })
    const states: Array<[BusState, number]> = []
    const unsubscribe = await backend.subscribe?.(
      () => {},
      (state) => states.push([state, Date.now()]),
    )
    try {
      await sleep(600) // heartbeats flowing
      expect(states).toEqual([])
      const frozenAt = Date.now()
      proxy.freeze()
      await expect.poll(() => states.map(([s]) => s), { timeout: 3_000 }).toEqual(['lost'])
      const [, lostAt] = states[0] ?? ['lost', 0]
      // Up to a second without a heartbeat, plus one heartbeat interval to notice.
      expect(lostAt - frozenAt).toBeLessThan(1_600)
      proxy.thaw()
      await expect
        .poll(() => states.map(([s]) => s), { timeout: 5_000 })
        .toEqual(['lost', 'restored'])
    } finally {
      await unsubscribe?.()
      client.destroy()
      await proxy.close()
    }
  })
})

describe('a write script checks everything before it writes anything', () => {
  const write = (userId: string | undefined, set: Record<string, string>) => {
    const now = Date.now()
    return {
      mode: 'create' as const,
      set: { cookie: JSON.stringify(cookie), ...set },
      unset: [],
      replace: true,
      now,
      expiresAt: now + 3_600_000,
      maxLifetime: 0,
      userId,
      device: {},
    }
  }

  it('regression: a wrong-type index bucket refuses the login and leaves no session without a TTL', async () => {
    const backend = redisBackend({ client: redis, prefix: 'wt:', indexBuckets: 1 })
    await redis.set('wt:ix:0', 'not a hash')
    await expect(backend.write('wt-a', write('mallory', {}))).rejects.toThrow(/index bucket/)
    expect(await redis.exists('wt:s:wt-a')).toBe(0)
    // A session with no user is not blocked by it, and is still revocable by id.
    expect(await backend.write('wt-b', write(undefined, {}))).toBe('ok')
    expect(await redis.pTTL('wt:s:wt-b')).toBeGreaterThan(0)
    await backend.destroy('wt-b')
    expect(await redis.exists('wt:s:wt-b')).toBe(0)
  })

  it('regression: a corrupt index field is read as empty, and the session is still listed and revocable', async () => {
    const backend = redisBackend({ client: redis, prefix: 'cf:', indexBuckets: 1 })
    await redis.hSet('cf:ix:0', 'trudy', '[{"sid":1},7]')
    expect(await backend.write('cf-a', write('trudy', {}))).toBe('ok')
    expect((await backend.listUser('trudy', Date.now())).map((s) => s.id)).toEqual(['cf-a'])
    expect(await backend.destroyUser('trudy')).toEqual(['cf-a'])
    expect(await redis.exists('cf:s:cf-a')).toBe(0)
  })

  it('regression: an expiry out of range is refused with nothing written', async () => {
    const backend = redisBackend({ client: redis, prefix: 'or:' })
    const bad = { ...write('oscar', {}), expiresAt: 1e300 }
    await expect(backend.write('or-a', bad)).rejects.toThrow(/valid epoch/)
    expect(await redis.exists('or:s:or-a')).toBe(0)
    expect(await redis.exists(`or:ix:${0}`)).toBe(0)
  })

  it('regression: a whole write of 10,000 top-level keys is stored (no "too many results to unpack")', async () => {
    const backend = redisBackend({ client: redis, prefix: 'many:' })
    const set: Record<string, string> = {}
    for (let i = 0; i < 10_000; i++) set[`k${i}`] = '1'
    expect(await backend.write('many-a', write('ursula', set))).toBe('ok')
    expect(Object.keys((await backend.get('many-a'))?.fields ?? {})).toHaveLength(10_001)
    const remove = Object.keys(set)
    const now = Date.now()
    const update = {
      ...write('ursula', {}),
      mode: 'update' as const,
      set: {},
      unset: remove,
      replace: false,
    }
    expect(await backend.write('many-a', { ...update, now })).toBe('ok')
    expect(Object.keys((await backend.get('many-a'))?.fields ?? {})).toEqual(['cookie'])
  })
})
