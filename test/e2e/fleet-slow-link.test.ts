import { resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Fleet, startFleet } from '../support/fleet.js'
import { revokeAcrossHosts } from '../support/fleet-checks.js'
import { fleetSkipReason } from '../support/fleet-netns.js'

// A slow, lossy link between one app host and Redis, with Redis over TLS between
// hosts (rediss://, redis-server's tls-port; its plain port is off). app1 reaches
// Redis through a delay proxy on its own loopback (200 ms added each way) and,
// for the loss test, nftables in its namespace drops 10% of its packets to and
// from Redis. The store timeout is tuned for such a link (docs/deploy.md).

const skip = fleetSkipReason()
/** 400 ms of round trip plus a run of TCP retransmissions under 10% loss (docs/deploy.md). */
const STORE_TIMEOUT_MS = 10_000
const RATE = resolve(import.meta.dirname, '../support/fleet-store-rate.mjs')

describe.skipIf(skip)(
  `fleet: a slow, lossy link to Redis over TLS${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    let fleet: Fleet

    beforeAll(async () => {
      fleet = await startFleet({
        delayed: ['app1'],
        redisTls: true,
        storeTimeoutMs: STORE_TIMEOUT_MS,
      })
    })
    afterAll(async () => {
      await fleet?.stop()
    })

    it('runs every app host on rediss://, with the plain Redis port closed', async () => {
      expect(fleet.redisUrl()).toMatch(/^rediss:\/\//)
      expect(fleet.redisCli('redis1', ['config', 'get', 'port'])).toMatch(/^port\n0$/)
      // Every app host is connected (the session client and the chat adapter's).
      const clients = fleet.redisCli('redis1', ['client', 'list'])
      for (const address of ['10.77.2.11', '10.77.2.12', '10.77.2.13'])
        expect(clients).toContain(address)
      const cookie = await fleet.client.login(fleet.base, 'alice')
      expect(
        (await fleet.client.fetch({ url: `${fleet.base}/api/me`, headers: { cookie } })).status,
      ).toBe(200)
    })

    it('with 200 ms delay and 10% loss, requests on that host are slower but succeed, and 100 concurrent writes are all kept', async () => {
      await fleet.delay('app1', 200, 200)
      fleet.loss('app1', String(fleet.host('redis1').back), 10)
      try {
        const cookies = await Promise.all(
          ['alice', 'bob', 'carol'].map((user) => fleet.client.login(fleet.base, user)),
        )
        await fleet.client.startLoop(
          'slow',
          cookies,
          { url: `${fleet.base}/api/me` },
          { pauseMs: 10 },
        )
        await sleep(4_000)
        const loop = await fleet.client.stopLoop('slow')
        expect(loop.byStatus, JSON.stringify(loop)).toEqual({ 200: loop.count })
        expect(loop.byNode.app1).toBeGreaterThan(0)

        // 100 writes of different keys of one session, all at once, all on app1.
        const [cookie = ''] = cookies
        const answers = await fleet.client.burst(
          Array.from({ length: 100 }, (_, i) => ({
            url: `${fleet.appUrl('app1')}/api/kv/k${i}`,
            method: 'PUT',
            headers: { cookie, origin: fleet.appUrl('app1') }, // straight to app1: its origin
            body: { i },
            timeoutMs: 30_000,
          })),
        )
        // A refusal says what app1's store reported (the demo logs why it was unavailable).
        const refused = answers.find((answer) => answer.status !== 200)
        const said = fleet
          .log('app1')
          .split('\n')
          .filter((line) => /store unavailable|redis connection/.test(line))
          .slice(-5)
        expect(
          answers.map((answer) => answer.status),
          JSON.stringify({ refused, said }),
        ).toEqual(answers.map(() => 200))
        // Read back on a host with a clean link: every write is there, once, intact.
        const stored = await fleet.client.fetch({
          url: `${fleet.appUrl('app2')}/api/kv`,
          headers: { cookie },
        })
        const pairs = JSON.parse(stored.body ?? '{}') as Record<string, { i: number }>
        expect(Object.keys(pairs)).toHaveLength(100)
        for (let i = 0; i < 100; i++) expect(pairs[`k${i}`]).toEqual({ i })
        const slowest = Math.max(...answers.map((answer) => answer.ms))
        console.info(
          `slow link: ${loop.count} requests (${loop.byNode.app1} on app1), slowest ${loop.slowestMs} ms; 100 concurrent writes on app1, slowest ${slowest} ms`,
        )
      } finally {
        fleet.loss('app1', '', 0)
        await fleet.delay('app1', 0, 0)
      }
    })

    it('measures store writes per second on the lossy link and on a clean one (printed, not asserted)', async () => {
      const env = (name: string) => ({
        REDIS_URL: fleet.redisUrlOf(name),
        SESSIONMESH_TIMEOUT_MS: String(STORE_TIMEOUT_MS),
        DURATION_MS: '3000',
      })
      const clean = JSON.parse(await fleet.nodeOn('app2', RATE, env('app2')))
      fleet.loss('app1', String(fleet.host('redis1').back), 10)
      let lossy: { ok: number; failed: number; perSecond: number }
      try {
        lossy = JSON.parse(await fleet.nodeOn('app1', RATE, env('app1')))
      } finally {
        fleet.loss('app1', '', 0)
      }
      expect(clean.ok).toBeGreaterThan(0)
      expect(clean.failed).toBe(0)
      expect(lossy.ok).toBeGreaterThan(0)
      expect(lossy.failed, JSON.stringify(lossy)).toBe(0)
      console.info(
        `store.set over rediss, 32 concurrent: clean link ${clean.perSecond}/s; 10% loss (no added delay) ${lossy.perSecond}/s`,
      )
    })

    it('revocation reaches the sockets on every host within 1 s with 200 ms delay on one link', async () => {
      await fleet.delay('app1', 200, 200)
      try {
        const { delays, states } = await revokeAcrossHosts(fleet, 'bob', 'app2')
        for (const app of fleet.apps) {
          expect(states[app]?.ended, app).toBe('revoked')
          expect(delays[app], app).toBeLessThan(1_000)
        }
        console.info(`revocation with 200 ms on app1's link: ${JSON.stringify(delays)} ms`)
      } finally {
        await fleet.delay('app1', 0, 0)
      }
    })
  },
)

function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms))
}
