import { writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Fleet, SENTINEL_NAME, startFleet } from '../support/fleet.js'
import { fleetSkipReason } from '../support/fleet-netns.js'

// A Redis primary partitioned away from its replicas and its clients, under a
// Sentinel group of three Redis hosts: the Sentinels promote a replica, the store
// (ioredis following the Sentinels; the demo's REDIS_URL form for it is still to
// come) writes on, and once the old primary is back it is a replica. Acknowledged
// writes survive, except those in the replication window just before the cut.
//
// Opt-in (FLEET_SENTINEL=1) because it fails today, on a real loss: every write
// the store acknowledged after the promotion is on no node afterwards (seen:
// 15,000-38,000 per run, every node agreeing on the same keyspace), and every one
// of them was acknowledged over the writer's connection to the OLD primary
// (10.77.2.21). A silent partition does not close that connection, so ioredis
// never asks the Sentinels again (commandTimeout fails commands, it does not
// reconnect); once the link heals the old primary acknowledges writes until it is
// demoted, and its resync from the new primary drops them. The Sentinel support
// (issue 10) has to close that window; then this runs in CI.

const skip =
  fleetSkipReason() ??
  (process.env.FLEET_SENTINEL ? undefined : 'opt-in until issue 10: set FLEET_SENTINEL=1')
const WRITER = resolve(import.meta.dirname, '../support/fleet-sentinel-writer.mjs')

describe.skipIf(skip)(
  `fleet: a Redis primary partitioned away, with Sentinel${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    let fleet: Fleet

    beforeAll(async () => {
      fleet = await startFleet({ apps: 1, redisHosts: 3, sentinel: true })
      // Before the fault every Sentinel knows both replicas and the two other
      // Sentinels (they learn replicas from the primary's INFO, every 10 s).
      for (let i = 0; i < 300 && !fleet.redis.every((name) => sentinelReady(fleet, name)); i++) {
        await sleep(100)
      }
    })
    afterAll(async () => {
      await fleet?.stop()
    })

    it('promotes a replica, writes go on, the old primary rejoins as a replica, acknowledged writes survive', async () => {
      const env = {
        SENTINELS: fleet
          .sentinels()
          .map(({ host, port }) => `${host}:${port}`)
          .join(','),
        NAME: SENTINEL_NAME,
        PASSWORD: fleet.redisPassword,
      }
      const writing = fleet.nodeOn('app1', WRITER, { ...env, MODE: 'write', DURATION_MS: '14000' })
      await sleep(3_000)
      const cutAt = Date.now()
      fleet.link('redis1', 'back', false)
      try {
        await expect
          .poll(() => fleet.sentinelPrimary('redis2'), { timeout: 20_000, interval: 250 })
          .not.toBe(`${fleet.host('redis1').back}:6379`)
      } catch (error) {
        throw new Error(
          `no promotion: ${(error as Error).message}\n${fleet.log('redis2-sentinel')}\n${fleet.log('redis3-sentinel')}`,
        )
      }
      const promotedMs = Date.now() - cutAt
      await sleep(3_000)
      fleet.link('redis1', 'back', true)
      const { acked, failed } = JSON.parse(await writing) as {
        acked: Array<[string, number, string | null]>
        failed: Array<[number, string]>
      }
      // The old primary is told by the Sentinels to follow the new one.
      await expect
        .poll(() => fleet.redisCli('redis1', ['role']).split('\n')[0], {
          timeout: 20_000,
          interval: 250,
        })
        .toBe('slave')

      const sidsFile = join(fleet.dir, 'acked-sids')
      writeFileSync(sidsFile, acked.map(([sid]) => sid).join('\n'))
      const { missing } = JSON.parse(
        await fleet.nodeOn('app1', WRITER, { ...env, MODE: 'read', SIDS_FILE: sidsFile }),
      ) as { missing: string[] }

      const nodes = fleet.redis.map(
        (name) =>
          `${name} ${fleet.redisCli(name, ['role']).split('\n')[0]} ${fleet.redisCli(name, ['dbsize'])} keys`,
      )
      const ackedAt = new Map(acked.map(([sid, at]) => [sid, at]))
      const lostBy: Record<string, number> = {}
      const server = new Map(acked.map(([sid, , address]) => [sid, address]))
      for (const sid of missing) {
        const address = String(server.get(sid))
        lostBy[address] = (lostBy[address] ?? 0) + 1
      }
      const lostAfterCut = missing.filter((sid) => (ackedAt.get(sid) ?? 0) >= cutAt)
      const before = acked.filter(([, at]) => at < cutAt).length
      const after = acked.filter(([, at]) => at > cutAt + promotedMs).length
      console.info(
        `sentinel: promoted ${promotedMs} ms after the cut; ${acked.length} writes acknowledged (${before} before the cut, ${after} after the promotion), ${failed.length} failed; ${missing.length} acknowledged writes lost (by server: ${JSON.stringify(lostBy)}); ${nodes.join(', ')}`,
      )
      expect(before).toBeGreaterThan(0)
      expect(after, JSON.stringify(failed.slice(0, 5))).toBeGreaterThan(0)
      // No write acknowledged after the cut is lost: the clients were on the majority side.
      expect(lostAfterCut).toEqual([])
      // Those before it can only be the last ones, not yet replicated when the link went.
      for (const sid of missing) expect(cutAt - (ackedAt.get(sid) ?? 0)).toBeLessThan(1_000)
    })
  },
)

function sentinelReady(fleet: Fleet, name: string): boolean {
  const fields = fleet.sentinelMaster(name)
  return fields['num-slaves'] === '2' && fields['num-other-sentinels'] === '2'
}

function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms))
}
