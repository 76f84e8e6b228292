import { readFileSync } from 'node:fs'
import { SessionStore, StoreUnavailableError } from 'sessionmesh'
import { MemcachedClient, memcachedBackend } from 'sessionmesh/memcached'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type RunningMemcached,
  startMemcached,
} from '../../packages/sessionmesh/src/cli/memcached.js'
import { backendContract, createWrite, updateWrite } from '../support/contract.js'
import { memcachedDump } from '../support/dump.js'
import { memcachedServer } from '../support/memcached-server.js'

let server: RunningMemcached
beforeAll(async () => {
  server = await memcachedServer()
})
afterAll(async () => {
  await server?.stop()
})

backendContract(
  'memcached',
  async () => {
    const client = new MemcachedClient({ servers: server.servers })
    const prefix = `mc${process.pid}:`
    return {
      backend: memcachedBackend({ client, prefix }),
      dump: () => memcachedDump(server.port, prefix),
      corrupt: async (sid) => {
        await client.set(`${prefix}s:${sid}`, '{"cookie":{}}', 0)
      },
      cleanup: () => client.close(),
    }
  },
  {
    skip: {
      'publishes changes and destroys to subscribers':
        'Memcached has no pub/sub; the socket.io binding re-checks sessions instead',
    },
  },
)

/** The state letter in /proc/<pid>/stat: R, S, T (stopped), Z… */
function processState(pid: number | undefined): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
}

describe('memcached backend beyond the contract', () => {
  it('an outage is a StoreUnavailableError the store counts as an outage, and it recovers on the same port', async () => {
    const own = await memcachedServer()
    const backend = memcachedBackend({ servers: own.servers, timeout: 500 })
    try {
      const id = `outage${Date.now()}`
      expect(await backend.write(id, createWrite())).toBe('ok')
      await own.stop()
      const error = await backend.get(id).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(StoreUnavailableError)
      expect(backend.isOutage?.(error)).toBe(true)
      // A reply that is an answer (a bad record) is not an outage.
      expect(backend.isOutage?.(new Error('memcached replied "SERVER_ERROR out of memory"'))).toBe(
        false,
      )
      const again = await startMemcached('memcached', own.port)
      try {
        // memcached keeps nothing across a restart: the session is gone, not an error.
        expect(await backend.get(id)).toBeNull()
        expect(await backend.write(id, createWrite())).toBe('ok')
      } finally {
        await again.stop()
      }
    } finally {
      await backend.close()
      await own.stop()
    }
  })

  it('a server that hangs (SIGSTOP) fails the call by its timeout, through the store as a 503, and is used again once it resumes', async () => {
    const own = await memcachedServer()
    const backend = memcachedBackend({ servers: own.servers, timeout: 300 })
    const store = new SessionStore({ backend, timeout: 1000, retryAfter: 100 })
    try {
      const id = `hang${Date.now()}`
      expect(await backend.write(id, createWrite({ set: { cookie: '{}', n: '1' } }))).toBe('ok')
      own.process.kill('SIGSTOP')
      // A signal is delivered when the process next runs: wait until it is stopped.
      await expect.poll(() => processState(own.process.pid)).toBe('T')
      const error = await store.get(id).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(StoreUnavailableError)
      expect((error as StoreUnavailableError).status).toBe(503)
      own.process.kill('SIGCONT')
      await expect.poll(async () => (await store.get(id).catch(() => undefined))?.n).toBe(1)
    } finally {
      own.process.kill('SIGCONT')
      await store.close()
      await backend.close()
      await own.stop()
    }
  })

  it('keeps every key of concurrent deltas from two processes on one session (cas races, no lost update)', async () => {
    // Two backends with their own connections, as two processes: within one the
    // writes of a session take turns, across them only `cas` keeps them apart.
    const [one, two] = [0, 1].map(() =>
      memcachedBackend({ servers: server.servers, prefix: 'race:' }),
    )
    try {
      const id = `race${Date.now()}`
      await one?.write(id, createWrite())
      const results = await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          (i % 2 ? one : two)?.write(id, updateWrite({ [`k${i}`]: `${i}` })),
        ),
      )
      expect(results.every((r) => r === 'ok')).toBe(true)
      const fields = (await two?.get(id))?.fields ?? {}
      for (let i = 0; i < 100; i++) expect(fields[`k${i}`]).toBe(`${i}`)
    } finally {
      await one?.close()
      await two?.close()
    }
  })

  it('spreads sessions over several servers and finds each again', async () => {
    const [a, b] = [await memcachedServer(), await memcachedServer()]
    const backend = memcachedBackend({ servers: `${a.servers},${b.servers}`, prefix: 'two:' })
    const single = [
      memcachedBackend({ servers: a.servers, prefix: 'two:' }),
      memcachedBackend({ servers: b.servers, prefix: 'two:' }),
    ]
    try {
      const ids = Array.from({ length: 40 }, (_, i) => `spread${i}x${Date.now()}`)
      for (const id of ids) await backend.write(id, createWrite({ userId: 'spread-user' }))
      for (const id of ids) expect(await backend.get(id)).not.toBeNull()
      expect((await backend.listUser('spread-user', Date.now())).length).toBe(40)
      expect(await backend.count()).toBe(40)
      // Both servers hold some of them (40 keys all on one server: 2^-39).
      for (const one of single) expect(await one.count()).toBeGreaterThan(0)
    } finally {
      for (const one of [backend, ...single]) await one.close()
      await a.stop()
      await b.stop()
    }
  })

  it('eviction under memory pressure logs users out: their sessions read as absent, not as errors', async () => {
    const small = await memcachedServer({ memory: 4 })
    const backend = memcachedBackend({ servers: small.servers, prefix: 'ev:' })
    try {
      const first = 'evicted-first'
      await backend.write(
        first,
        createWrite({ set: { cookie: '{}', pad: `"${'x'.repeat(500)}"` } }),
      )
      // About 20 MB of sessions into 4 MB: the least recently used ones go.
      for (let batch = 0; batch < 40; batch++) {
        await Promise.all(
          Array.from({ length: 1000 }, (_, i) =>
            backend.write(
              `ev${batch}-${i}`,
              createWrite({ set: { cookie: '{}', pad: `"${'y'.repeat(500)}"` } }),
            ),
          ),
        )
      }
      expect(await backend.get(first)).toBeNull()
      expect(await backend.write(first, updateWrite({ a: '1' }))).toBe('gone')
    } finally {
      await backend.close()
      await small.stop()
    }
  })
})
