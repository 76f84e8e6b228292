import { io as connect, type Socket } from 'socket.io-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Browser, Cluster, freePortRange } from '../support/cluster.js'
import { RedisServer } from '../support/redis-server.js'
import { closedByServer } from '../support/sockets.js'

// A client without cookies (a mobile app, an API script) against `sessionmesh up`
// with 3 nodes behind the real nginx, the demo started with
// SESSIONMESH_SESSION_HEADER=x-session-id: it logs in, every node serves it, its
// socket connects with the token, and a revocation from another device cuts
// both off.

const HEADER = 'x-session-id'
let redis: RedisServer
let cluster: Cluster
const sockets: Socket[] = []

beforeAll(async () => {
  redis = await RedisServer.start()
  cluster = await Cluster.start(['--nodes', '3', '--redis', redis.url], await freePortRange(4), {
    SESSIONMESH_SESSION_HEADER: HEADER,
    // The machine is shared: a store timeout (a 503) is not what this test is about.
    SESSIONMESH_TIMEOUT_MS: '2000',
  })
})
afterAll(async () => {
  for (const socket of sockets) socket.disconnect()
  await cluster?.stop()
  await redis?.stop()
})

/** fetch with the token in the header and no cookie jar at all. */
async function call(method: string, path: string, token?: string, body?: unknown) {
  const headers: Record<string, string> = { 'user-agent': 'header-client' }
  if (token !== undefined) headers[HEADER] = token
  if (body !== undefined) headers['content-type'] = 'application/json'
  const response = await fetch(cluster.base + path, {
    method,
    headers,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  const text = await response.text()
  let parsed: unknown = text
  try {
    parsed = text ? JSON.parse(text) : undefined
  } catch {
    // Not JSON (an nginx error page): kept as text for the failure message.
  }
  return {
    status: response.status,
    node: response.headers.get('x-served-by'),
    token: response.headers.get(HEADER),
    body: parsed as Record<string, unknown>,
  }
}

describe('header sessions behind nginx', () => {
  it('a client without cookies logs in, is served by every node, and is cut off on revocation (HTTP and socket)', async () => {
    const login = await call('POST', '/api/login', undefined, {
      username: 'alice',
      password: 'sessionmesh',
    })
    expect(login.status, JSON.stringify(login.body)).toBe(200)
    const token = login.token ?? ''
    expect(token).toMatch(/^s:[\w-]+\.[\w+/]+$/)

    const seen = new Set<string>()
    for (let round = 0; round < 20 && seen.size < cluster.nodes.length; round++) {
      const answers = await Promise.all(
        Array.from({ length: 6 }, () => call('GET', '/api/me', token)),
      )
      for (const answer of answers) {
        expect(answer.status, JSON.stringify(answer.body)).toBe(200)
        expect(answer.body.user).toEqual({ id: 'alice', name: 'Alice' })
        seen.add(String(answer.node))
      }
    }
    expect([...seen].sort()).toEqual(cluster.nodes.map((node) => node.id).sort())

    // A write through one node is read through the others.
    expect((await call('PUT', '/api/kv/device', token, 'phone')).status).toBe(200)
    for (let i = 0; i < 6; i++) {
      expect((await call('GET', '/api/kv', token)).body).toEqual({ device: 'phone' })
    }

    const socket = connect(cluster.base, {
      transports: ['websocket'],
      reconnection: false,
      auth: { session: token },
    })
    sockets.push(socket)
    const welcome = await new Promise<{ user: string }>((resolve, reject) => {
      socket.once('welcome', resolve)
      socket.once('connect_error', reject)
    })
    expect(welcome.user).toBe('alice')
    const closed = closedByServer(socket)

    // Another device of alice's, with cookies, signs out every other session.
    const laptop = new Browser(cluster.base, 'alice-laptop')
    expect((await laptop.login('alice')).status).toBe(200)
    const revoked = await laptop.request('POST', '/api/sessions/revoke-others')
    expect(revoked.body).toEqual({ revoked: 1 })

    const ended = await closed
    expect(ended.reason).toBe('revoked/io server disconnect')
    for (let i = 0; i < 6; i++) expect((await call('GET', '/api/me', token)).status).toBe(401)
    expect((await laptop.request('GET', '/api/me')).status).toBe(200)
    // The revoked token opens no socket any more.
    const again = connect(cluster.base, {
      transports: ['websocket'],
      reconnection: false,
      auth: { session: token },
    })
    sockets.push(again)
    const refusal = await new Promise<string>((resolve) => {
      again.once('connect', () => resolve('connected'))
      again.once('connect_error', (error) => resolve(error.message))
    })
    expect(refusal).toBe('unauthorized')
  })

  it('a bad token through nginx is a 401, never a 5xx', async () => {
    for (const token of ['garbage', 's:abc.def', `s:${'a'.repeat(32)}.${'b'.repeat(43)}`]) {
      const answer = await call('GET', '/api/me', token)
      expect(answer.status).toBe(401)
    }
  })
})
