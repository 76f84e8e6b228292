import mysql from 'mysql2/promise'
import pg from 'pg'
import { createClient } from 'redis'
import { io as connect, type Socket } from 'socket.io-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Browser, Cluster, canListen, cli, freePortRange, isAlive } from '../support/cluster.js'
import { RedisServer } from '../support/redis-server.js'
import { MYSQL_URL, PG_URL, uniqueName } from '../support/sql.js'

// `sessionmesh up --store postgres|mysql|tiered` for real: the built CLI runs the
// migration against the machine's PostgreSQL / MariaDB, then 2 demo nodes behind
// nginx keep their sessions there. Each cluster has a table of its own, dropped after.

const NODES = ['node-1', 'node-2']

/** Sends `request` until both nodes have answered it, and returns the answers by node. */
async function fromEveryNode<T extends { node: string | null }>(
  request: () => Promise<T>,
): Promise<Map<string, T>> {
  const answers = new Map<string, T>()
  for (let i = 0; i < 40 && answers.size < NODES.length; i++) {
    const answer = await request()
    if (answer.node) answers.set(answer.node, answer)
  }
  return answers
}

/** What any store must give the demo: one login seen by both nodes, kv, logout everywhere. */
async function sharedSessions(cluster: Cluster, user: string): Promise<void> {
  const browser = new Browser(cluster.base)
  expect(await browser.login(user)).toMatchObject({ status: 200, body: { user: { id: user } } })
  const me = await fromEveryNode(() => browser.request('GET', '/api/me'))
  expect([...me.keys()].sort()).toEqual(NODES)
  for (const [node, answer] of me) {
    expect(answer).toMatchObject({ status: 200, body: { user: { id: user }, node } })
  }

  const writes = await Promise.all(
    Array.from({ length: 20 }, (_, i) => browser.request('PUT', `/api/kv/k${i}`, { n: i })),
  )
  expect(writes.map((write) => write.status)).toEqual(Array(20).fill(200))
  const expected = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, { n: i }]))
  const reads = await fromEveryNode(() => browser.request('GET', '/api/kv'))
  expect(reads.size).toBe(NODES.length)
  for (const read of reads.values()) expect(read).toMatchObject({ status: 200, body: expected })

  const stale = browser.clone()
  expect((await browser.request('POST', '/api/logout')).status).toBe(204)
  const after = await fromEveryNode(() => stale.request('GET', '/api/me'))
  expect(after.size).toBe(NODES.length)
  for (const answer of after.values()) expect(answer.status).toBe(401)
}

/** A socket.io client with the browser's cookies, resolved once the chat welcomed it. */
async function chatSocket(base: string, browser: Browser): Promise<Socket> {
  const cookie = [...browser.cookies].map(([name, value]) => `${name}=${value}`).join('; ')
  const socket = connect(base, {
    transports: ['websocket'],
    reconnection: false,
    extraHeaders: { cookie },
  })
  await new Promise((resolve, reject) => {
    socket.once('welcome', resolve)
    socket.once('connect_error', reject)
  })
  return socket
}

describe('sessionmesh up --store postgres', () => {
  const table = uniqueName('sm_e2e')
  const pool = new pg.Pool({ connectionString: PG_URL })
  let cluster: Cluster

  beforeAll(async () => {
    cluster = await Cluster.start(
      ['--nodes', '2', '--store', 'postgres', '--database-url', PG_URL, '--table', table],
      await freePortRange(2),
    )
  })

  afterAll(async () => {
    await cluster?.stop()
    await pool.query(`DROP TABLE IF EXISTS ${table}`)
    await pool.end()
  })

  it('runs the migration before the nodes start, and says so', async () => {
    expect(cluster.stdout).toContain(`sessions: postgres, table ${table} on ${PG_URL}`)
    const logs = cluster.logs()
    const migration = logs.findIndex((line) => String(line.msg).startsWith('running the migration'))
    const firstNode = logs.findIndex((line) => line.msg === 'listening')
    expect(migration).toBeGreaterThanOrEqual(0)
    expect(migration).toBeLessThan(firstNode)
    expect(logs[migration]?.msg).toContain('idempotent')
    // Idempotent: running it again on the live table succeeds and changes nothing.
    const again = await cli([
      'migrate',
      '--store',
      'postgres',
      '--database-url',
      PG_URL,
      '--table',
      table,
    ])
    expect(again).toMatchObject({ code: 0 })
    expect(again.stdout).toContain(`sessions table ${table} is ready`)
  })

  it('logs in once for both nodes, keeps kv, logs out everywhere; the session is a row in PostgreSQL', async () => {
    const probe = new Browser(cluster.base)
    expect((await probe.login('bob')).status).toBe(200)
    const rows = await pool.query(
      `SELECT count(*)::int AS n FROM ${table} WHERE user_id = 'bob' AND fields IS NOT NULL`,
    )
    expect(rows.rows[0]).toEqual({ n: 1 })
    await sharedSessions(cluster, 'alice')
  })

  it('pushes a logout to sockets on the other node through LISTEN/NOTIFY (no Redis involved)', async () => {
    const browser = new Browser(cluster.base)
    expect((await browser.login('carol')).status).toBe(200)
    const sockets = await Promise.all([1, 2, 3, 4].map(() => chatSocket(cluster.base, browser)))
    const ended = sockets.map(
      (socket) =>
        new Promise<string>((resolve) =>
          socket.once('session:ended', (event: { reason: string }) => resolve(event.reason)),
        ),
    )
    expect((await browser.request('POST', '/api/logout')).status).toBe(204)
    expect(await Promise.all(ended)).toEqual(['revoked', 'revoked', 'revoked', 'revoked'])
    for (const socket of sockets) socket.disconnect()
  })
})

describe('sessionmesh up --store mysql', () => {
  const table = uniqueName('sm_e2e')
  let cluster: Cluster

  beforeAll(async () => {
    cluster = await Cluster.start(
      ['--nodes', '2', '--store', 'mysql', '--table', table],
      await freePortRange(2),
      // From the environment this time, as a deployment would set it.
      { SESSIONMESH_DATABASE_URL: MYSQL_URL },
    )
  })

  afterAll(async () => {
    await cluster?.stop()
    const connection = await mysql.createConnection(MYSQL_URL)
    await connection.query(`DROP TABLE IF EXISTS ${table}`)
    await connection.end()
  })

  it('logs in once for both nodes, keeps kv, logs out everywhere', async () => {
    expect(cluster.stdout).toContain(`sessions: mysql, table ${table}`)
    await sharedSessions(cluster, 'bob')
  })

  it('runs the demo without its chat, and says why: MySQL publishes no session events', () => {
    const warnings = cluster.logs().filter((line) => String(line.msg).startsWith('chat off'))
    expect(warnings.map((line) => line.node).sort()).toEqual(NODES)
  })
})

describe('sessionmesh up --store tiered', () => {
  const table = uniqueName('sm_e2e')
  const pool = new pg.Pool({ connectionString: PG_URL })
  let redis: RedisServer
  let cluster: Cluster

  beforeAll(async () => {
    redis = await RedisServer.start()
    cluster = await Cluster.start(
      ['--nodes', '2', '--store', 'tiered', '--redis', redis.url, '--table', table],
      await freePortRange(2),
      { DATABASE_URL: PG_URL },
    )
  })

  afterAll(async () => {
    await cluster?.stop()
    await redis?.stop()
    await pool.query(`DROP TABLE IF EXISTS ${table}`)
    await pool.end()
  })

  it('logs in once for both nodes, keeps kv, logs out everywhere', async () => {
    expect(cluster.stdout).toContain(`sessions: tiered, table ${table}`)
    await sharedSessions(cluster, 'carol')
  })

  it('keeps users logged in while Redis is down and after it restarts empty', async () => {
    const busy = new Browser(cluster.base)
    expect((await busy.login('alice')).status).toBe(200)
    await busy.request('PUT', '/api/kv/before', { ok: 1 })
    // Not seen during the outage, so nothing re-synchronises it: it must come
    // back from the database on a cache miss.
    const quiet = new Browser(cluster.base)
    expect((await quiet.login('bob')).status).toBe(200)

    await redis.kill()
    // Served by PostgreSQL meanwhile, on both nodes.
    const during = await fromEveryNode(() => busy.request('GET', '/api/me'))
    expect(during.size).toBe(NODES.length)
    for (const answer of during.values()) expect(answer.status).toBe(200)

    await redis.start() // the same port, no persistence: empty
    for (const [browser, user] of [
      [busy, 'alice'],
      [quiet, 'bob'],
    ] as const) {
      const after = await fromEveryNode(() => browser.request('GET', '/api/me'))
      expect(after.size).toBe(NODES.length)
      for (const answer of after.values()) {
        expect(answer).toMatchObject({ status: 200, body: { user: { id: user } } })
      }
    }
    expect(await busy.request('GET', '/api/kv')).toMatchObject({
      status: 200,
      body: { before: { ok: 1 } },
    })
    // And Redis is the cache again: the sessions were refilled into it.
    const client = await createClient({ url: redis.url }).connect()
    try {
      await expect
        .poll(async () => {
          await Promise.all([busy.request('GET', '/api/me'), quiet.request('GET', '/api/me')])
          return (await client.keys('sm:s:*')).length
        })
        .toBeGreaterThanOrEqual(2)
    } finally {
      await client.close()
    }
  })
})

describe('sessionmesh up with a database it cannot use', () => {
  it('says which flag and variables are missing, and exits 2 before starting anything', async () => {
    const env = { ...process.env }
    for (const name of ['SESSIONMESH_DATABASE_URL', 'DATABASE_URL', 'MYSQL_URL']) delete env[name]
    const result = await cli(
      ['up', '--store', 'mysql', '--port', String(await freePortRange(4))],
      env,
    )
    expect(result.code).toBe(2)
    expect(result.stderr).toContain('--database-url')
    expect(result.stderr).toContain('SESSIONMESH_DATABASE_URL, MYSQL_URL or DATABASE_URL')
  })

  it('says the database is unreachable, exits 1, and leaves nothing running', async () => {
    const port = await freePortRange(2)
    const result = await cli([
      'up',
      '--nodes',
      '2',
      '--port',
      String(port),
      '--store',
      'postgres',
      '--database-url',
      'postgres://postgres:secret@127.0.0.1:1/test',
    ])
    expect(result.code).toBe(1)
    expect(result.stderr).toContain('cannot migrate the sessions table')
    expect(result.stderr).toContain('ECONNREFUSED')
    expect(result.stderr).not.toContain('secret')
    for (const p of [port, port + 1, port + 2]) expect(await canListen(p)).toBe(true)
  })
})

describe('sessionmesh up --store memcached', () => {
  let cluster: Cluster

  beforeAll(async () => {
    cluster = await Cluster.start(['--nodes', '2', '--store', 'memcached'], await freePortRange(2))
  })

  afterAll(async () => {
    await cluster?.stop()
  })

  it('logs in once for both nodes, keeps kv, logs out everywhere', async () => {
    expect(cluster.stdout).toMatch(/sessions: memcached on 127\.0\.0\.1:\d+/)
    await sharedSessions(cluster, 'alice')
  })

  it('runs the chat, and a logout closes its socket though Memcached publishes nothing', async () => {
    const browser = new Browser(cluster.base)
    expect((await browser.login('bob')).status).toBe(200)
    const socket = await chatSocket(cluster.base, browser)
    try {
      const ended = new Promise((resolve) => socket.once('session:ended', resolve))
      expect((await browser.request('POST', '/api/logout')).status).toBe(204)
      expect(await ended).toEqual({ reason: 'revoked' })
    } finally {
      socket.disconnect()
    }
  })

  it('stops its private memcached when it stops', async () => {
    const started = cluster.logs().find((line) => line.msg === 'memcached started')
    const pid = Number(started?.memcachedPid)
    expect(isAlive(pid)).toBe(true)
    expect(await cluster.stop()).toBe(0)
    expect(isAlive(pid)).toBe(false)
  })
})
