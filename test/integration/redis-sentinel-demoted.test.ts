import { resolve } from 'node:path'
import { Redis } from 'ioredis'
import { SessionStore } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openRedis } from '../../packages/sessionmesh/src/cli/sessions-connect.js'
import { waitFor } from '../support/redis-server.js'
import { command, SentinelGroup } from '../support/redis-topologies.js'

// A manual failover (SENTINEL FAILOVER) under a write loop: what each kind of
// client sees while the sentinels promote the replica and then demote the old
// primary (a partitioned old primary rejoins the same way).
// - `demo`: the demo's Sentinel client (examples/chat/redis.js): it moves on the
//   sentinels' +switch-master, before the old primary is demoted.
// - `undetected`: the same without the failover detector, as if it had missed the
//   +switch-master. The sentinels kill the old primary's client connections when
//   they reconfigure it (CLIENT KILL TYPE normal, in the MULTI of the REPLICAOF), so
//   it reconnects, asks them again and writes on the new primary.
// - `pinned`: a client on the old primary's address. It reconnects to the same
//   node and gets READONLY: the documented outage (a 503), nothing written.
// Between the promotion and the demotion (seconds: a sentinel waits 8 s before it
// reconfigures a node that still says it is a primary) the old primary acknowledges
// writes that its resync then drops. This group has one replica, so it cannot run
// min-replicas-to-write 1 (the new primary would refuse every write until the old
// one is back as its replica): a client that stays on the old primary loses what
// it writes until the demotion; the demo's client loses nothing after the switch.

const DEMO_REDIS = resolve(import.meta.dirname, '../../examples/chat/redis.js')
let group: SentinelGroup
beforeAll(async () => {
  group = await SentinelGroup.start()
}, 60_000)
afterAll(async () => {
  await group?.stop()
})

interface Written {
  /** Session id, when it was acknowledged, the port of the server that did. */
  acked: Array<[string, number, number | undefined]>
  failed: Array<[string, string]>
}

/** Writes new sessions one after the other until `stop()`; what was acknowledged, what failed. */
function writeLoop(client: Redis, prefix: string) {
  const store = new SessionStore({
    backend: redisBackend({ client, prefix }),
    timeout: 1_000,
    retryAfter: 100,
  })
  const written: Written = { acked: [], failed: [] }
  let running = true
  const loop = (async () => {
    for (let n = 0; running; n++) {
      const sid = `w${n}`
      try {
        await store.set(sid, { cookie: { originalMaxAge: 60_000, path: '/' }, n })
        written.acked.push([sid, Date.now(), client.stream?.remotePort])
      } catch (error) {
        const { code, cause } = error as { code?: string; cause?: Error }
        written.failed.push([sid, `${code}: ${cause?.message ?? ''}`])
        await new Promise((done) => setTimeout(done, 20))
      }
    }
  })()
  return {
    client,
    prefix,
    written,
    async stop() {
      running = false
      await loop
      await store.close()
      client.disconnect()
    },
  }
}

describe('clients on a primary the sentinels demote', () => {
  it('the Sentinel clients follow, a pinned client gets a 503 with nothing written, never a silent ack after the window', async () => {
    const { ioredisFor } = (await import(DEMO_REDIS)) as {
      ioredisFor: (url: string, extra?: object) => Redis
    }
    const oldPrimary = group.primaryPort
    const clients = {
      demo: ioredisFor(group.url),
      undetected: ioredisFor(group.url, { failoverDetector: false }),
      pinned: new Redis(oldPrimary, '127.0.0.1', { retryStrategy: () => 50 }),
    }
    const loops = Object.fromEntries(
      Object.entries(clients).map(([name, client]) => {
        client.on('error', () => {})
        return [name, writeLoop(client, `dm-${name}:`)]
      }),
    ) as Record<keyof typeof clients, ReturnType<typeof writeLoop>>
    const checker = new Redis(oldPrimary, '127.0.0.1')
    try {
      await waitFor(
        () => Object.values(loops).every((l) => l.written.acked.length > 10),
        'every client to write',
      )
      // `sessionmesh sessions` (revoke, …) on the same group: it works now…
      const cli = await openRedis(group.url, 'dm-cli:', 2_000)
      await cli.backend.destroy('before')
      const failoverAt = Date.now()
      await command('redis-cli', group.sentinelPorts[0] ?? 0, 'SENTINEL', 'FAILOVER', group.name)
      await waitFor(async () => (await group.currentPrimary()) !== oldPrimary, 'the promotion')
      await new Promise((done) => setTimeout(done, 500))
      // …and once the sentinels switched, it refuses rather than writing to the old
      // primary, which would acknowledge it and drop it at its demotion.
      const cliAfterSwitch = await cli.backend.destroy('after').then(
        () => 'written',
        (error: Error) => `refused: ${error.message}`,
      )
      await cli.close()
      await waitFor(
        async () =>
          (await group.currentPrimary()) !== oldPrimary &&
          (await command('redis-cli', oldPrimary, 'ROLE')).startsWith('slave'),
        'the old primary to be demoted',
        20_000,
      )
      const demotedAt = Date.now()
      const newPrimary = await group.currentPrimary()
      await waitFor(
        () =>
          loops.pinned.written.failed.some(([, reason]) => reason.includes('READONLY')) &&
          loops.undetected.written.acked.some(([, at]) => at > demotedAt + 200),
        'the pinned client to be refused, the undetected one to write again',
      )
      for (const l of Object.values(loops)) await l.stop()

      // What the new primary (and so every node, once in sync) has of each.
      checker.disconnect()
      const onNew = new Redis(newPrimary, '127.0.0.1')
      const lost: Record<string, number[]> = {}
      for (const [name, l] of Object.entries(loops)) {
        const pipeline = onNew.pipeline()
        for (const [sid] of l.written.acked) pipeline.exists(`${l.prefix}s:${sid}`)
        const replies = (await pipeline.exec()) ?? []
        lost[name] = l.written.acked
          .filter((_, i) => replies[i]?.[1] !== 1)
          .map(([, at]) => at - failoverAt)
      }
      const refused = loops.pinned.written.failed.filter(([, r]) => r.includes('READONLY'))
      const refusedThere = await Promise.all(
        refused.map(async ([sid]) => onNew.exists(`dm-pinned:s:${sid}`)),
      )
      onNew.disconnect()
      const report = Object.entries(loops).map(([name, l]) => {
        const moved = l.written.acked.find(([, , port]) => port === newPrimary)?.[1]
        return `${name}: ${l.written.acked.length} acknowledged, ${lost[name]?.length} lost (acknowledged ${range(lost[name] ?? [])} ms after the failover), on the new primary ${moved === undefined ? 'never' : `${moved - failoverAt} ms after`}, failed ${JSON.stringify(summary(l.written))}`
      })
      console.info(
        `SENTINEL FAILOVER: old primary demoted ${demotedAt - failoverAt} ms after\n  ${report.join('\n  ')}\n  sessionmesh sessions after the switch: ${cliAfterSwitch}`,
      )

      const firstOnNew = (name: keyof typeof loops) =>
        loops[name].written.acked.find(([, , port]) => port === newPrimary)?.[1] ??
        Number.POSITIVE_INFINITY
      // The demo's client moved on the +switch-master, before the demotion; the
      // undetected one when the demotion closed its connection.
      expect(firstOnNew('demo')).toBeLessThan(demotedAt)
      expect(firstOnNew('undetected')).toBeLessThan(Number.POSITIVE_INFINITY)
      for (const [name, l] of Object.entries(loops)) {
        // Lost: only writes acknowledged by the old primary after the failover
        // began and before this client left it (the demo's) or it was demoted.
        const until = name === 'demo' ? firstOnNew('demo') - failoverAt : demotedAt - failoverAt
        for (const at of lost[name] ?? []) {
          expect(at, name).toBeGreaterThanOrEqual(0)
          expect(at, name).toBeLessThanOrEqual(until)
        }
        expect(
          l.written.failed.filter(([, r]) => !r.startsWith('SESSIONMESH_STORE_UNAVAILABLE')),
          name,
        ).toEqual([])
      }
      expect(clients.undetected.stream?.remotePort).toBe(newPrimary)
      expect(await onNewExists(newPrimary, 'dm-cli:t:before')).toBe(1)
      expect(cliAfterSwitch).toMatch(/^refused/)
      expect((await command('redis-cli', oldPrimary, 'EXISTS', 'dm-cli:t:after')).trim()).toBe('0')
      // The pinned client: nothing acknowledged once the old primary was demoted;
      // its writes refused as an outage (READONLY), and none of those is anywhere.
      expect(loops.pinned.written.acked.filter(([, at]) => at > demotedAt)).toEqual([])
      expect(refused.length).toBeGreaterThan(0)
      expect(refusedThere.filter((n) => n !== 0)).toEqual([])
      // The old primary as a replica, once it has synced from the new one. Until
      // then it may still hold a write it ran just before the sentinels killed
      // the pinned client's connection: ioredis resends a command whose reply it
      // never got, and the resend is the one refused (READONLY). The sync drops it.
      await waitFor(
        async () =>
          /master_link_status:up/.test(
            await command('redis-cli', oldPrimary, 'INFO', 'replication'),
          ),
        'the old primary to sync from the new one',
        20_000,
      )
      for (const [sid] of refused) {
        expect(
          (await command('redis-cli', oldPrimary, 'EXISTS', `dm-pinned:s:${sid}`)).trim(),
        ).toBe('0')
      }
    } finally {
      checker.disconnect()
      for (const l of Object.values(loops)) await l.stop().catch(() => {})
    }
  }, 40_000)
})

async function onNewExists(port: number, key: string): Promise<number> {
  const client = new Redis(port, '127.0.0.1')
  try {
    return await client.exists(key)
  } finally {
    client.disconnect()
  }
}

function range(values: number[]): string {
  return values.length ? `${Math.min(...values)}-${Math.max(...values)}` : 'none'
}

function summary(written: Written): Record<string, number> {
  const by: Record<string, number> = {}
  for (const [, reason] of written.failed) {
    const key = reason.slice(0, 50)
    by[key] = (by[key] ?? 0) + 1
  }
  return by
}
