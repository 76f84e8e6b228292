import { io as connect, type Socket } from 'socket.io-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Browser, Cluster, cli, freePortRange } from '../support/cluster.js'
import { freePort, RedisServer } from '../support/redis-server.js'

// `sessionmesh sessions` against a running `sessionmesh up` (2 nodes behind nginx,
// the test's own redis-server): what an operator does during an incident.

let redis: RedisServer
let cluster: Cluster
const sockets: Socket[] = []

interface Listed {
  id: string
  createdAt: number
  lastSeenAt: number
  expiresAt: number
  userAgent: string | null
  ip: string | null
}

/** The session id inside the browser's signed cookie (`s:<sid>.<signature>`). */
function sidOf(browser: Browser): string {
  const raw = decodeURIComponent(browser.cookies.get('sessionmesh') ?? '')
  expect(raw).toMatch(/^s:.+\..+$/)
  return raw.slice(2, raw.lastIndexOf('.'))
}

function sessions(...args: string[]) {
  return cli(['sessions', ...args, '--redis', redis.url], { ...process.env, REDIS_URL: '' })
}

async function loggedIn(user: string, agent: string): Promise<Browser> {
  const browser = new Browser(cluster.base, agent)
  expect((await browser.login(user)).status).toBe(200)
  return browser
}

/** A socket.io client on the browser's session, connected (its `welcome` received). */
async function socketOf(browser: Browser): Promise<Socket> {
  const cookie = [...browser.cookies].map(([n, v]) => `${n}=${v}`).join('; ')
  const socket = connect(cluster.base, {
    transports: ['websocket'],
    reconnection: false,
    extraHeaders: { cookie },
  })
  sockets.push(socket)
  await new Promise((resolve, reject) => {
    socket.once('welcome', resolve)
    socket.once('connect_error', reject)
  })
  return socket
}

beforeAll(async () => {
  redis = await RedisServer.start()
  cluster = await Cluster.start(['--nodes', '2', '--redis', redis.url], await freePortRange(3))
})
afterAll(async () => {
  for (const socket of sockets) socket.disconnect()
  await cluster?.stop()
  await redis?.stop()
})

describe('sessionmesh sessions against a running cluster', () => {
  it('lists a user’s two logins, revokes one: its browser is logged out and its socket closed', async () => {
    const laptop = await loggedIn('carol', 'carol-laptop')
    const phone = await loggedIn('carol', 'carol-phone')
    const laptopSocket = await socketOf(laptop)
    const phoneSocket = await socketOf(phone)

    const listed = await sessions('list', '--user', 'carol', '--json')
    expect(listed.stderr).toBe('')
    expect(listed.code).toBe(0)
    const entries = JSON.parse(listed.stdout) as Listed[]
    expect(entries.map((entry) => entry.id).sort()).toEqual([sidOf(laptop), sidOf(phone)].sort())
    for (const entry of entries) {
      expect(Object.keys(entry).sort()).toEqual(
        ['createdAt', 'expiresAt', 'id', 'ip', 'lastSeenAt', 'userAgent'].sort(),
      )
      expect(entry.ip).toBe('127.0.0.1')
      expect(entry.expiresAt).toBeGreaterThan(entry.lastSeenAt)
      expect(entry.lastSeenAt).toBeGreaterThanOrEqual(entry.createdAt)
    }
    expect(entries.find((entry) => entry.id === sidOf(laptop))?.userAgent).toBe('carol-laptop')

    const human = await sessions('list', '--user', 'carol')
    expect(human.code).toBe(0)
    expect(human.stdout).toMatch(/^2 live sessions of carol/)
    expect(human.stdout).toContain('carol-phone')

    const ended = new Promise<{ reason: string; why: string }>((resolve) => {
      let reason = 'none'
      laptopSocket.once('session:ended', (event: { reason: string }) => {
        reason = event.reason
      })
      laptopSocket.once('disconnect', (why) => resolve({ reason, why }))
    })
    const revoked = await sessions('revoke', sidOf(laptop))
    expect(revoked).toMatchObject({ code: 0, stdout: `revoked session ${sidOf(laptop)}\n` })
    expect(await ended).toEqual({ reason: 'revoked', why: 'io server disconnect' })

    // Both nodes refuse the revoked session; the other login is untouched.
    for (let i = 0; i < 4; i++) {
      expect((await laptop.request('GET', '/api/me')).status).toBe(401)
      expect((await phone.request('GET', '/api/me')).status).toBe(200)
    }
    expect(phoneSocket.connected).toBe(true)
    const after = JSON.parse(
      (await sessions('list', '--user', 'carol', '--json')).stdout,
    ) as Listed[]
    expect(after.map((entry) => entry.id)).toEqual([sidOf(phone)])
  })

  it('revokes every session of a user but one, and counts what is left', async () => {
    const keep = await loggedIn('bob', 'bob-1')
    const others = [await loggedIn('bob', 'bob-2'), await loggedIn('bob', 'bob-3')]
    const before = JSON.parse((await sessions('count', '--json')).stdout) as { count: number }

    const result = await sessions('revoke', '--user', 'bob', '--except', sidOf(keep), '--json')
    expect(result.code).toBe(0)
    expect((JSON.parse(result.stdout) as { revoked: string[] }).revoked.sort()).toEqual(
      others.map(sidOf).sort(),
    )
    for (const browser of others) expect((await browser.request('GET', '/api/me')).status).toBe(401)
    expect((await keep.request('GET', '/api/me')).status).toBe(200)
    const counted = await sessions('count')
    expect(counted).toMatchObject({ code: 0, stdout: `${before.count - 2} live sessions\n` })
  })

  it('each node serves its sessionmesh_* metrics on /metrics; nginx does not pass it on', async () => {
    const total = async (name: string) => {
      let sum = 0
      for (const node of cluster.nodes) {
        const response = await fetch(`http://127.0.0.1:${node.port}/metrics`)
        expect(response.status).toBe(200)
        for (const line of (await response.text()).split('\n')) {
          if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) {
            sum += Number(line.slice(line.lastIndexOf(' ') + 1))
          }
        }
      }
      return sum
    }
    expect(cluster.nodes).toHaveLength(2)
    // The tests above: 5 logins, the laptop's socket closed by its revocation.
    expect(await total('sessionmesh_sessions_created_total')).toBeGreaterThanOrEqual(5)
    expect(await total('sessionmesh_socket_disconnects_total{reason="revoked"}')).toBe(1)
    expect(await total('sessionmesh_backend_call_duration_seconds_count')).toBeGreaterThan(0)
    expect((await fetch(`${cluster.base}/metrics`)).status).toBe(404)
  })

  it('exits 2 on bad usage and 1, with a message, when the store cannot be reached', async () => {
    const usage = await sessions('list')
    expect(usage.code).toBe(2)
    expect(usage.stderr).toMatch(/needs --user U/)

    const closed = await freePort()
    const down = await cli(['sessions', 'count', '--redis', `redis://127.0.0.1:${closed}`])
    expect(down.code).toBe(1)
    expect(down.stderr).toMatch(new RegExp(`cannot reach Redis at redis://127.0.0.1:${closed}`))
    expect(down.stdout).toBe('')
  })
})
