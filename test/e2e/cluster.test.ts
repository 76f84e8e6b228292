import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Browser, Cluster, canListen, cli, freePortRange, isAlive } from '../support/cluster.js'
import { RedisServer, waitFor } from '../support/redis-server.js'

// `sessionmesh up` with 4 nodes, for real: the built CLI, a private redis-server,
// the demo app in 4 processes, and nginx in front. Every request goes through nginx.

const NODES = ['node-1', 'node-2', 'node-3', 'node-4']
let cluster: Cluster

/**
 * Sends `request` until every node has answered it (at most `limit` times) and
 * returns the answers by node.
 */
async function fromEveryNode<T extends { node: string | null }>(
  request: () => Promise<T>,
  limit = 60,
): Promise<Map<string, T>> {
  const answers = new Map<string, T>()
  for (let i = 0; i < limit && answers.size < NODES.length; i++) {
    const answer = await request()
    if (answer.node) answers.set(answer.node, answer)
  }
  return answers
}

/**
 * A steady request loop: `workers` logged-in browsers, each sending one request
 * after the other until `until` resolves. Returns every response that was not 200.
 */
async function steadyLoop(
  browsers: Browser[],
  until: Promise<unknown>,
  step: (
    browser: Browser,
    i: number,
  ) => Promise<{ status: number; node: string | null; body: unknown }>,
) {
  let done = false
  until.finally(() => {
    done = true
  })
  const failures: unknown[] = []
  const served = new Map<string, number>()
  let count = 0
  await Promise.all(
    browsers.map(async (browser) => {
      for (let i = 0; !done && i < 5_000; i++) {
        try {
          const response = await step(browser, i)
          count++
          if (response.node) served.set(response.node, (served.get(response.node) ?? 0) + 1)
          if (response.status !== 200)
            failures.push({ status: response.status, body: response.body })
        } catch (error) {
          failures.push(String((error as Error).cause ?? error))
        }
      }
    }),
  )
  return { failures, served, count }
}

beforeAll(async () => {
  cluster = await Cluster.start(['--nodes', '4'], await freePortRange(4))
})

afterAll(async () => {
  await cluster?.stop()
})

describe('sessionmesh up --nodes 4', () => {
  it('prints ready and the node list once every node is healthy', async () => {
    expect(cluster.stdout).toContain(`ready http://127.0.0.1:${cluster.port}\n`)
    expect(cluster.nodes.map((node) => node.id)).toEqual(NODES)
    for (const node of cluster.nodes) {
      const health = await fetch(`http://127.0.0.1:${node.port}/healthz`)
      expect(health.status).toBe(200)
      expect(health.headers.get('x-served-by')).toBe(node.id)
    }
    const ready = cluster.logs().find((line) => line.msg === 'ready')
    expect(ready).toMatchObject({ name: 'sessionmesh' })
    expect(cluster.logs().some((line) => line.node === 'node-3' && line.msg === 'listening')).toBe(
      true,
    )
  })

  it('logs in, and then every node answers with the same user', async () => {
    const alice = new Browser(cluster.base)
    expect(await alice.login('alice')).toMatchObject({
      status: 200,
      body: { user: { id: 'alice' } },
    })
    const answers = await fromEveryNode(() => alice.request('GET', '/api/me'))
    expect([...answers.keys()].sort()).toEqual(NODES)
    for (const [node, answer] of answers) {
      expect(answer).toMatchObject({ status: 200, body: { user: { id: 'alice' }, node } })
    }
    expect((await new Browser(cluster.base).request('GET', '/api/me')).status).toBe(401)
    expect((await new Browser(cluster.base).login('alice', 'wrong')).status).toBe(401)
  })

  it('trusts X-Forwarded-* from nginx on loopback: client address, and secure cookies behind https', async () => {
    const node = cluster.nodes[0]
    if (!node) throw new Error('no node')
    // What nginx terminating TLS for 203.0.113.9 would send to a node.
    const response = await fetch(`http://127.0.0.1:${node.port}/api/login`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-forwarded-for': '203.0.113.9',
        'x-forwarded-proto': 'https',
        'user-agent': 'Proxied/1.0',
      },
      body: JSON.stringify({ username: 'bob', password: 'sessionmesh' }),
    })
    expect(response.status).toBe(200)
    const cookie = response.headers.getSetCookie()[0] ?? ''
    expect(cookie).toMatch(/; Secure/i)
    const browser = new Browser(cluster.base)
    browser.cookies.set('sessionmesh', cookie.split(';')[0]?.split('=')[1] ?? '')
    const listed = await browser.request('GET', '/api/sessions')
    const sessions = (listed.body as { sessions: Array<{ current: boolean; ip: string }> }).sessions
    expect(sessions.find((entry) => entry.current)?.ip).toBe('203.0.113.9')
    // Through nginx over plain http, the cookie is not marked Secure (or it would be dropped).
    expect(
      (
        await fetch(`${cluster.base}/api/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-forwarded-proto': 'https' },
          body: JSON.stringify({ username: 'bob', password: 'sessionmesh' }),
        })
      ).headers.getSetCookie()[0],
    ).not.toMatch(/; Secure/i)
  })

  it('keeps all 100 kv pairs written concurrently by requests landing on different nodes', async () => {
    const bob = new Browser(cluster.base)
    await bob.login('bob')
    const writes = await Promise.all(
      Array.from({ length: 100 }, (_, i) => bob.request('PUT', `/api/kv/k${i}`, { n: i })),
    )
    expect(writes.map((write) => write.status)).toEqual(Array(100).fill(200))
    expect(new Set(writes.map((write) => write.node)).size).toBeGreaterThan(1)
    const expected = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, { n: i }]))
    const reads = await fromEveryNode(() => bob.request('GET', '/api/kv'))
    expect(reads.size).toBe(NODES.length)
    for (const read of reads.values()) expect(read).toMatchObject({ status: 200, body: expected })
  })

  it('logs out on one node, and the session is logged out on every node', async () => {
    const carol = new Browser(cluster.base)
    await carol.login('carol')
    const stale = carol.clone()
    const logout = await carol.request('POST', '/api/logout')
    expect(logout.status).toBe(204)
    expect(carol.cookies.size).toBe(0)
    const answers = await fromEveryNode(() => stale.request('GET', '/api/me'))
    expect(answers.size).toBe(NODES.length)
    for (const answer of answers.values()) expect(answer.status).toBe(401)
  })

  it('revokes another session, which is then rejected by every node', async () => {
    const laptop = new Browser(cluster.base, 'Laptop/1.0')
    const phone = new Browser(cluster.base, 'Phone/2.0')
    const tablet = new Browser(cluster.base, 'Tablet/3.0')
    for (const device of [laptop, phone, tablet]) await device.login('carol')
    const listed = await laptop.request('GET', '/api/sessions')
    const sessions = (
      listed.body as { sessions: Array<{ id: string; current: boolean; userAgent: string }> }
    ).sessions
    expect(sessions.map((s) => s.userAgent).sort()).toEqual([
      'Laptop/1.0',
      'Phone/2.0',
      'Tablet/3.0',
    ])
    expect(sessions.filter((s) => s.current).map((s) => s.userAgent)).toEqual(['Laptop/1.0'])
    // The API never hands out session ids, which are bearer credentials.
    expect(JSON.stringify(listed.body)).not.toContain(
      decodeURIComponent(laptop.cookies.get('sessionmesh') ?? '-'),
    )

    const phoneEntry = sessions.find((s) => s.userAgent === 'Phone/2.0')
    expect((await laptop.request('DELETE', `/api/sessions/${phoneEntry?.id}`)).status).toBe(204)
    const phoneAnswers = await fromEveryNode(() => phone.request('GET', '/api/me'))
    expect(phoneAnswers.size).toBe(NODES.length)
    for (const answer of phoneAnswers.values()) expect(answer.status).toBe(401)
    expect((await tablet.request('GET', '/api/me')).status).toBe(200)

    expect(await laptop.request('POST', '/api/sessions/revoke-others')).toMatchObject({
      status: 200,
      body: { revoked: 1 },
    })
    const tabletAnswers = await fromEveryNode(() => tablet.request('GET', '/api/me'))
    for (const answer of tabletAnswers.values()) expect(answer.status).toBe(401)
    expect((await laptop.request('GET', '/api/me')).status).toBe(200)
    expect((await laptop.request('DELETE', '/api/sessions/nonexistent')).status).toBe(404)
  })

  it('keeps serving every request while a node is killed and restarted', async () => {
    const victim = cluster.nodes[1]
    if (!victim) throw new Error('no node-2')
    expect(isAlive(victim.pid)).toBe(true)
    const browsers = await Promise.all(
      ['alice', 'bob', 'carol', 'alice'].map(async (user) => {
        const browser = new Browser(cluster.base)
        await browser.login(user)
        return browser
      }),
    )
    let servedAgain = false
    const back = (async () => {
      await new Promise((resolve) => setTimeout(resolve, 300))
      process.kill(victim.pid, 'SIGKILL')
      await waitFor(() => !isAlive(victim.pid), 'node-2 to die')
      // Back when nginx sends it requests again, served by a new process.
      await waitFor(() => servedAgain, 'node-2 to serve again', 20_000)
    })()
    const killedAt = Date.now()
    const loop = await steadyLoop(browsers, back, async (browser) => {
      const response = await browser.request('GET', '/api/me')
      if (response.node === victim.id && Date.now() - killedAt > 400) servedAgain = true
      return response
    })
    await back
    expect(loop.failures).toEqual([])
    expect(loop.count).toBeGreaterThan(50)
    const crash = cluster.logs().find((line) => line.msg === 'node crashed')
    expect(crash).toMatchObject({ node: victim.id, signal: 'SIGKILL' })
    expect(
      cluster.logs().some((line) => line.msg === 'node healthy again' && line.node === victim.id),
    ).toBe(true)
  })

  it('restarts every node one at a time under a steady request loop: no failed request, nobody logged out', async () => {
    const users = ['alice', 'bob', 'carol', 'alice', 'bob', 'carol']
    const browsers = await Promise.all(
      users.map(async (user) => {
        const browser = new Browser(cluster.base)
        await browser.login(user)
        return browser
      }),
    )
    const restart = cli(['restart', '--port', String(cluster.port)])
    const newcomer = new Browser(cluster.base)
    const loop = await steadyLoop(browsers, restart, async (browser, i) => {
      // Reads, idempotent writes, and a POST that nginx must never resend.
      if (i % 7 === 6) return newcomer.login('bob')
      if (i % 3 === 2) return browser.request('PUT', `/api/kv/step`, i)
      const me = await browser.request('GET', '/api/me')
      return me.status === 200 && (me.body as { user?: { id?: string } }).user?.id
        ? me
        : { ...me, status: -1 }
    })
    const result = await restart
    expect(result).toMatchObject({ code: 0, stdout: 'every node replaced\n' })
    expect(loop.failures).toEqual([])
    expect(loop.count).toBeGreaterThan(200)
    const replaced = cluster.logs().filter((line) => line.msg === 'replacing node')
    expect(replaced.map((line) => line.node)).toEqual(NODES)
    for (const browser of browsers)
      expect((await browser.request('GET', '/api/me')).status).toBe(200)
  })

  it('restarts every node on SIGHUP too', async () => {
    const before = cluster.logs().filter((line) => line.msg === 'rolling restart done').length
    cluster.process.kill('SIGHUP')
    await waitFor(
      () => cluster.logs().filter((line) => line.msg === 'rolling restart done').length > before,
      'the SIGHUP rolling restart',
      60_000,
    )
    const answers = await fromEveryNode(() => new Browser(cluster.base).request('GET', '/healthz'))
    expect(answers.size).toBe(NODES.length)
  })

  it('refuses bad input with a clear message', async () => {
    expect(await cli(['up', '--nodes', 'four'])).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('--nodes must be a whole number from 1 to 64, not "four"'),
    })
    expect(await cli(['up', '--frobnicate'])).toMatchObject({
      code: 2,
      stderr: expect.stringContaining("Unknown option '--frobnicate'"),
    })
    expect(await cli(['up', '--port', String(cluster.port)])).toMatchObject({
      code: 2,
      stderr: expect.stringContaining(`port ${cluster.port} is in use`),
    })
    expect(
      await cli(['up', '--port', '19000', '--base-port', String(cluster.nodes[0]?.port)]),
    ).toMatchObject({
      code: 2,
      stderr: expect.stringContaining(`port ${cluster.nodes[0]?.port} is in use`),
    })
    expect(await cli(['up', '--app', '/nonexistent/app.js', '--port', '19000'])).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('no such file'),
    })
    expect(await cli(['restart', '--port', '1'])).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('no sessionmesh up is running on port 1'),
    })
    expect(await cli(['launch'])).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('unknown command'),
    })
  })

  it('prints an nginx config and a pm2 ecosystem file', async () => {
    const nginx = await cli(['nginx', '--upstream', '10.0.0.1:3000', '--upstream', '10.0.0.2:3000'])
    expect(nginx.code).toBe(0)
    expect(nginx.stdout).toContain('server 10.0.0.2:3000 max_fails=1')
    expect((await cli(['nginx'])).stderr).toContain('--upstream HOST:PORT')
    const pm2 = await cli(['pm2', '--nodes', '2', '--base-port', '4001'])
    expect(pm2.code).toBe(0)
    expect(pm2.stdout).toContain("exec_mode: 'fork'")
    expect(pm2.stdout).toContain('PORT: "4002"')
    expect(pm2.stdout).toContain('examples/chat/server.js')
  })

  it('stops every process and removes its temporary files on SIGTERM', async () => {
    const config = cluster.logs().find((line) => line.msg === 'nginx started')?.config as string
    const prefix = dirname(dirname(config))
    expect(existsSync(config)).toBe(true)
    const pids = cluster
      .logs()
      .flatMap((line) => [line.nodePid, line.redisPid, line.nginxPid])
      .filter((pid): pid is number => typeof pid === 'number')
    // 4 nodes, node-2 restarted after the kill, 8 replacements, redis-server, nginx.
    expect(new Set(pids).size).toBeGreaterThanOrEqual(NODES.length * 3 + 3)
    expect(await cluster.stop()).toBe(0)
    expect(existsSync(prefix)).toBe(false)
    expect(existsSync(join(tmpdir(), `sessionmesh-${cluster.port}.sock`))).toBe(false)
    for (const port of [cluster.port, ...cluster.nodes.map((node) => node.port)]) {
      expect(await canListen(port)).toBe(true)
    }
    for (const pid of pids) expect(isAlive(pid), `process ${pid}`).toBe(false)
  })
})

describe('sessionmesh up --redis URL, when that Redis goes away', () => {
  it('answers 503 with a JSON body through nginx, and recovers when Redis is back', async () => {
    const redis = await RedisServer.start()
    const small = await Cluster.start(
      ['--nodes', '2', '--redis', redis.url],
      await freePortRange(2),
    )
    try {
      const alice = new Browser(small.base)
      expect((await alice.login('alice')).status).toBe(200)
      await redis.kill()
      const down = await alice.request('GET', '/api/me')
      expect(down).toMatchObject({
        status: 503,
        body: { error: 'store unavailable', code: 'SESSIONMESH_STORE_UNAVAILABLE' },
      })
      await redis.start()
      // The private server kept nothing on disk: the session is gone, not broken.
      await expect
        .poll(async () => (await alice.request('GET', '/api/me')).status, { timeout: 10_000 })
        .toBe(401)
      // Each node's client reconnects on its own: any node may be the next to answer.
      await expect
        .poll(async () => (await alice.login('alice')).status, { timeout: 10_000 })
        .toBe(200)
    } finally {
      expect(await small.stop()).toBe(0)
      await redis.stop()
    }
  })
})
