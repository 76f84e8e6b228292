import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Fleet, startFleet } from '../support/fleet.js'
import { fleetSkipReason } from '../support/fleet-netns.js'

// An app host cut off from Redis (its back link down: packets silently dropped, no
// reset) while nginx still reaches it: its requests get the documented 503 within
// the store's timeout, the other hosts keep serving, it recovers by itself once
// the link is back, and nobody is logged out.

const skip = fleetSkipReason()
const USERS = ['alice', 'bob', 'carol', 'alice', 'bob', 'carol']

describe.skipIf(skip)(
  `fleet: an app host partitioned from Redis${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    let fleet: Fleet
    let cookies: string[]

    beforeAll(async () => {
      fleet = await startFleet()
      cookies = await Promise.all(USERS.map((user) => fleet.client.login(fleet.base, user)))
    })
    afterAll(async () => {
      await fleet?.stop()
    })

    it('answers 503 on the cut-off host only, recovers by itself, and logs nobody out', async () => {
      const request = { url: `${fleet.base}/api/me` }
      await fleet.client.startLoop('partition', cookies, request, { pauseMs: 10 })
      await sleep(300)
      fleet.link('app1', 'back', false)
      await sleep(3_000)
      const during = await fleet.client.stopLoop('partition')
      // A request pinned to app1 while cut off: the store's timeout, then 503.
      const pinned = await fleet.client.fetch({
        url: `${fleet.appUrl('app1')}/api/me`,
        headers: { cookie: cookies[0] ?? '' },
      })
      fleet.link('app1', 'back', true)
      const healedAt = Date.now()

      expect(pinned.status, pinned.body).toBe(503)
      expect(JSON.parse(pinned.body ?? '{}')).toMatchObject({
        code: 'SESSIONMESH_STORE_UNAVAILABLE',
      })
      // Every answer was a 200 or app1's 503; no request hung until the client gave up.
      expect(during.errors, JSON.stringify(during)).toEqual({})
      expect(Object.keys(during.byStatus).sort(), JSON.stringify(during)).toEqual(['200', '503'])
      expect(during.logouts).toBe(0)
      const failed = Object.keys(during.byNodeStatus).filter((pair) => !pair.endsWith(' 200'))
      expect(failed, JSON.stringify(during)).toEqual(['app1 503'])
      expect(during.byNode.app2).toBeGreaterThan(20)
      expect(during.byNode.app3).toBeGreaterThan(20)

      // Healed: app1 serves the same sessions again, with no restart.
      await expect
        .poll(
          async () =>
            (
              await fleet.client.fetch({
                url: `${fleet.appUrl('app1')}/api/me`,
                headers: { cookie: cookies[0] ?? '' },
              })
            ).status,
          { timeout: 15_000, interval: 200 },
        )
        .toBe(200)
      const recoveredMs = Date.now() - healedAt
      await fleet.client.startLoop('healed', cookies, request, { pauseMs: 10 })
      await sleep(2_000)
      const healed = await fleet.client.stopLoop('healed')
      expect(healed.byStatus, JSON.stringify(healed)).toEqual({ 200: healed.count })
      expect(Object.keys(healed.byNode).sort()).toEqual(['app1', 'app2', 'app3'])
      console.info(
        `partition: ${during.count} requests while cut off, by status ${JSON.stringify(during.byStatus)}, by node ${JSON.stringify(during.byNode)}, slowest ${during.slowestMs} ms; app1 served again ${recoveredMs} ms after healing`,
      )
    })
  },
)

function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms))
}
