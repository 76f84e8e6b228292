import { spawnSync } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { REJOIN_SECONDS } from '../../packages/sessionmesh/src/cli/nginx-config.js'
import { type Fleet, NGINX_ADDRESS, startFleet } from '../support/fleet.js'
import { revokeAcrossHosts } from '../support/fleet-checks.js'
import { fleetSkipReason, removeDeadFleets } from '../support/fleet-netns.js'

// The fleet as deployed: nginx with TLS on a host of its own, three app hosts
// running the demo, Redis on a back network; the client on a host of its own.
// Here: the fleet itself works (HTTPS, Secure cookie, trust proxy right), and an
// app host killed and restarted costs no idempotent request.

const skip = fleetSkipReason()

describe.skipIf(skip)(`fleet over HTTPS${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let fleet: Fleet

  beforeAll(async () => {
    fleet = await startFleet()
  })
  afterAll(async () => {
    await fleet?.stop()
  })

  it('removes the namespaces a dead run left behind, and only those', () => {
    // A run that died without its cleanup: a process that made a namespace and exited.
    const dead = spawnSync(
      process.execPath,
      [
        '-e',
        'require("child_process").execFileSync("ip", ["netns", "add", "smf-" + process.pid + "-1-left"])',
      ],
      { encoding: 'utf8' },
    )
    expect(dead.status).toBe(0)
    const before = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout
    expect(before).toMatch(/smf-\d+-1-left/)
    const removed = removeDeadFleets()
    expect(removed).toHaveLength(1)
    expect(removed[0]).toMatch(/^smf-\d+-1-left$/)
    const after = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout
    expect(after).not.toMatch(/-left/)
    // This run's own fleet is alive and kept.
    expect(after).toContain(`smf-${process.pid}-`)
  })

  it('keeps every test address out of the root namespace', () => {
    const root = spawnSync('ip', ['-o', 'addr'], { encoding: 'utf8' }).stdout
    expect(root).not.toMatch(/10\.77\./)
    const links = spawnSync('ip', ['-o', 'link'], { encoding: 'utf8' }).stdout
    expect(links).not.toMatch(/\b[fb]-(app|nginx|redis|client)/)
  })

  it('serves HTTPS at nginx, redirects plain HTTP, and sets the session cookie Secure', async () => {
    const redirect = await fleet.client.fetch({ url: `http://${NGINX_ADDRESS}/api/me` })
    expect(redirect.status).toBe(301)
    expect(redirect.location).toBe(`https://${NGINX_ADDRESS}/api/me`)
    const login = await fleet.client.fetch({
      url: `${fleet.base}/api/login`,
      method: 'POST',
      headers: { origin: fleet.base },
      body: { username: 'alice', password: 'sessionmesh' },
    })
    expect(login.status).toBe(200)
    expect(login.setCookie?.[0]).toMatch(/^sessionmesh=[^;]+;.*; Secure/)
  })

  it('trusts nginx’s address only: a client talking to a node directly cannot claim https', async () => {
    const direct = await fleet.client.fetch({
      url: `${fleet.appUrl('app1')}/api/login`,
      method: 'POST',
      headers: { 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.9' },
      body: { username: 'bob', password: 'sessionmesh' },
    })
    expect(direct.status).toBe(200)
    expect(direct.setCookie?.[0]).toMatch(/^sessionmesh=/)
    expect(direct.setCookie?.[0]).not.toMatch(/Secure/)
  })

  it('balances over all three app hosts', async () => {
    const cookie = await fleet.client.login(fleet.base, 'carol')
    const answers = await fleet.client.burst(
      Array.from({ length: 30 }, () => ({ url: `${fleet.base}/api/me`, headers: { cookie } })),
    )
    expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => 200))
    expect(new Set(answers.map((answer) => answer.node))).toEqual(new Set(fleet.apps))
  })

  it('an app host killed and restarted: nginx routes around it, no idempotent request fails', async () => {
    const cookies = await Promise.all(
      ['alice', 'bob', 'carol'].map((user) => fleet.client.login(fleet.base, user)),
    )
    await fleet.client.startLoop('kill', cookies, { url: `${fleet.base}/api/me` }, { pauseMs: 10 })
    await sleep(500)
    await fleet.killApp('app2')
    await sleep(1_500)
    const during = await fleet.client.stopLoop('kill')
    await fleet.startApp('app2')
    // Back in rotation once nginx stops skipping it: up to REJOIN_SECONDS (2 s).
    await fleet.client.startLoop('after', cookies, { url: `${fleet.base}/api/me` }, { pauseMs: 10 })
    await expect
      .poll(
        async () => (await fleet.client.fetch({ url: `${fleet.appUrl('app2')}/healthz` })).status,
      )
      .toBe(200)
    await sleep(REJOIN_SECONDS * 1_000 + 1_000)
    const after = await fleet.client.stopLoop('after')
    expect(during.count).toBeGreaterThan(50)
    expect(during.byStatus, JSON.stringify(during)).toEqual({ 200: during.count })
    expect(during.logouts).toBe(0)
    expect(after.byStatus, JSON.stringify(after)).toEqual({ 200: after.count })
    expect(Object.keys(after.byNode).sort()).toEqual(['app1', 'app2', 'app3'])
  })

  it('revocation on one host closes the session’s sockets on every host within 1 s', async () => {
    const { delays, states } = await revokeAcrossHosts(fleet, 'alice', 'app2')
    for (const app of fleet.apps) {
      expect(states[app]?.ended, app).toBe('revoked')
      // The promise the chat makes (docs/deploy.md), not a benchmark.
      expect(delays[app], app).toBeLessThan(1_000)
    }
  })
})

function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms))
}
