import diagnostics from 'node:diagnostics_channel'
import { createClient } from 'redis'
import { SessionStore, type SessionStoreOptions } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { Client, startApp, type TestApp } from '../support/express-app.js'
import { RedisServer } from '../support/redis-server.js'

// express-session + passport over real HTTP, with the sessionmesh store on a
// private redis-server. Two app instances share one Redis, as two processes would.

let server: RedisServer
let redis: Awaited<ReturnType<typeof connect>>
const opened: Array<{ close(): Promise<void> }> = []

function connect() {
  const client = createClient({ url: server.url, socket: { reconnectStrategy: () => 50 } })
  client.on('error', () => {})
  return client.connect()
}

async function setup(options: Omit<SessionStoreOptions, 'backend'> = {}, prefix = 'sm:') {
  const client = await connect()
  const store = new SessionStore({ ...options, backend: redisBackend({ client, prefix }) })
  const app = await startApp(store)
  opened.push(app, { close: async () => client.destroy() })
  return { store, app, client }
}

async function commandCalls(command: string): Promise<number> {
  const info = await redis.info('commandstats')
  const line = info.split('\n').find((l) => l.startsWith(`cmdstat_${command}:`))
  return Number(/calls=(\d+)/.exec(line ?? '')?.[1] ?? 0)
}

beforeAll(async () => {
  server = await RedisServer.start()
  redis = await connect()
})
afterEach(async () => {
  for (const item of opened.splice(0)) await item.close()
})
afterAll(async () => {
  redis.destroy()
  await server.stop()
})

describe('express-session with the sessionmesh store', () => {
  it('logs in with passport and shares the session between two app instances', async () => {
    const { store } = await setup()
    const other = await startApp(store)
    opened.push(other)
    const { app } = await setup()
    const browser = new Client(app.url)
    expect((await browser.login('alice')).status).toBe(200)
    const onOther = new Client(other.url)
    onOther.cookie = browser.cookie
    const me = await onOther.request('GET', '/me')
    expect(me.status).toBe(200)
    expect((await me.json()).user).toEqual({ id: 'alice' })
  })

  it('keeps all 100 keys written by 100 concurrent requests on one session', async () => {
    const { app } = await setup()
    const browser = new Client(app.url)
    await browser.login('alice')
    const statuses = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        browser.request('PUT', `/kv/k${i}`, i).then((r) => r.status),
      ),
    )
    expect(statuses.every((s) => s === 204)).toBe(true)
    const pairs = await (await browser.request('GET', '/kv')).json()
    expect(Object.keys(pairs)).toHaveLength(100)
    for (let i = 0; i < 100; i++) expect(pairs[`k${i}`]).toBe(i)
  })

  it('regression: a request in flight during logout cannot resurrect the session', async () => {
    const { app, store } = await setup()
    const browser = new Client(app.url)
    await browser.login('lana')
    const sid = browser.sid
    const slow = browser.request('PUT', '/slow/late', 'written after logout')
    await app.gate.waiting // the slow request has loaded the session
    expect((await browser.request('POST', '/logout')).status).toBe(204)
    app.gate.release()
    await slow
    expect(await redis.exists(`sm:s:${sid}`)).toBe(0)
    expect(await store.get(sid)).toBeNull()
    expect((await browser.request('GET', '/me')).status).toBe(401)
    expect(await store.listUserSessions('lana')).toEqual([])
  })

  it('lists a user’s sessions with device details, and revokes all but one everywhere', async () => {
    const { app, store } = await setup({}, 'rv:')
    const laptop = new Client(app.url, 'Laptop/1.0')
    const phone = new Client(app.url, 'Phone/2.0')
    const tablet = new Client(app.url, 'Tablet/3.0')
    for (const device of [laptop, phone, tablet]) await device.login('bob')
    const listed = await store.listUserSessions('bob')
    expect(listed.map((s) => s.id).sort()).toEqual([laptop.sid, phone.sid, tablet.sid].sort())
    const phoneEntry = listed.find((s) => s.id === phone.sid)
    expect(phoneEntry).toMatchObject({ userAgent: 'Phone/2.0', ip: '127.0.0.1' })
    expect(phoneEntry?.expiresAt).toBeGreaterThan(Date.now())

    const revoked = await store.revokeUserSessions('bob', { except: laptop.sid })
    expect(revoked.sort()).toEqual([phone.sid, tablet.sid].sort())
    expect((await phone.request('GET', '/me')).status).toBe(401)
    expect((await tablet.request('GET', '/me')).status).toBe(401)
    expect((await laptop.request('GET', '/me')).status).toBe(200)

    await store.revokeSession(laptop.sid)
    expect((await laptop.request('GET', '/me')).status).toBe(401)
    expect(await store.listUserSessions('bob')).toEqual([])
  })

  it('touches lazily: read-only requests write nothing within touchAfter', async () => {
    const { app } = await setup({ touchAfter: 1500 }, 'lt:')
    const browser = new Client(app.url)
    await browser.login('carol')
    const key = `lt:s:${browser.sid}`
    const expiresBefore = Number(await redis.hGet(key, 'e'))
    const writesBefore = await commandCalls('evalsha')
    for (let i = 0; i < 20; i++) expect((await browser.request('GET', '/me')).status).toBe(200)
    expect(await commandCalls('evalsha')).toBe(writesBefore)
    expect(Number(await redis.hGet(key, 'e'))).toBe(expiresBefore)

    await new Promise((resolve) => setTimeout(resolve, 1600)) // let touchAfter pass
    expect((await browser.request('GET', '/me')).status).toBe(200)
    expect(await commandCalls('evalsha')).toBe(writesBefore + 1)
    expect(Number(await redis.hGet(key, 'e'))).toBeGreaterThan(expiresBefore)
  })

  it('ends a session at maxLifetime however active it is', async () => {
    const { app } = await setup({ maxLifetime: 1500, touchAfter: 0 }, 'ml:')
    const browser = new Client(app.url)
    const loggedIn = Date.now()
    await browser.login('dave')
    let status = 200
    let i = 0
    while (status === 200 && Date.now() - loggedIn < 5000) {
      status = (await browser.request('PUT', `/kv/n${i++ % 3}`, i)).status
      if (status === 204) status = (await browser.request('GET', '/me')).status
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const lived = Date.now() - loggedIn
    expect(status).toBe(401)
    expect(lived).toBeGreaterThanOrEqual(1400)
    expect(lived).toBeLessThan(2500)
  })

  it('treats a corrupt stored record as no session, reports it, and keeps serving', async () => {
    const { app } = await setup({}, 'cr:')
    const reports: unknown[] = []
    const onMalformed = (message: unknown) => reports.push(message)
    diagnostics.subscribe('sessionmesh:malformed', onMalformed)
    try {
      const browser = new Client(app.url)
      await browser.login('erin')
      await redis.hSet(`cr:s:${browser.sid}`, '.passport', '{not json')
      expect((await browser.request('GET', '/me')).status).toBe(401)
      await redis.del(`cr:s:${browser.sid}`)
      await redis.set(`cr:s:${browser.sid}`, 'a string, as another library would store it')
      expect((await browser.request('GET', '/me')).status).toBe(401)
      expect(reports).toHaveLength(2)
      expect((await browser.login('erin')).status).toBe(200)
      expect((await browser.request('GET', '/me')).status).toBe(200)
    } finally {
      diagnostics.unsubscribe('sessionmesh:malformed', onMalformed)
    }
  })

  it('refuses an oversized session with a coded error and keeps the stored version', async () => {
    const { app } = await setup({ maxBytes: 2048 }, 'ob:')
    const browser = new Client(app.url)
    await browser.login('frank')
    expect((await browser.request('PUT', '/kv/small', 'fits')).status).toBe(204)
    const refused = await browser.request('PUT', '/kv/big', 'x'.repeat(4000))
    expect(refused.status).toBe(500)
    expect((await refused.json()).code).toBe('SESSIONMESH_SESSION_TOO_LARGE')
    expect(await (await browser.request('GET', '/kv')).json()).toEqual({ small: 'fits' })
  })
})

describe('outage policy, against a redis-server that is killed and restarted', () => {
  let own: RedisServer
  beforeAll(async () => {
    own = await RedisServer.start()
  })
  afterAll(async () => {
    await own.stop()
  })

  async function appOn(policy: 'fail-closed' | 'fail-open'): Promise<TestApp> {
    const client = createClient({ url: own.url, socket: { reconnectStrategy: () => 100 } })
    client.on('error', () => {})
    await client.connect()
    const store = new SessionStore({
      backend: redisBackend({ client }),
      onUnavailable: policy,
    })
    const app = await startApp(store)
    opened.push(app, { close: async () => client.destroy() })
    return app
  }

  it('fail-closed answers 503 within a second while Redis is down, and recovers by itself', async () => {
    const app = await appOn('fail-closed')
    const browser = new Client(app.url)
    await browser.login('gina')
    await own.kill()

    const started = Date.now()
    const answers = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const response = await browser.request('GET', '/me')
        return { status: response.status, body: await response.json(), ms: Date.now() - started }
      }),
    )
    for (const answer of answers) {
      expect(answer.status).toBe(503)
      expect(answer.body.code).toBe('SESSIONMESH_STORE_UNAVAILABLE')
      expect(answer.ms).toBeLessThan(1000)
    }

    await own.start() // empty: nothing was persisted
    await expect
      .poll(async () => (await browser.request('GET', '/me')).status, {
        timeout: 5000,
        interval: 100,
      })
      .toBe(401)
    expect((await browser.login('gina')).status).toBe(200)
    expect((await browser.request('PUT', '/kv/after', 'recovered')).status).toBe(204)
    expect(await (await browser.request('GET', '/kv')).json()).toEqual({ after: 'recovered' })
  })

  it('fail-open serves the request as anonymous while Redis is down, writing nothing', async () => {
    const app = await appOn('fail-open')
    const browser = new Client(app.url)
    await browser.login('hank')
    const cookie = browser.cookie
    await own.kill()
    try {
      const started = Date.now()
      const response = await browser.request('GET', '/me')
      expect(response.status).toBe(401)
      expect(Date.now() - started).toBeLessThan(1000)
      expect((await browser.request('GET', '/kv')).status).toBe(200)
    } finally {
      await own.start()
    }
    browser.cookie = cookie
    await expect
      .poll(async () => (await browser.request('GET', '/me')).status, {
        timeout: 5000,
        interval: 100,
      })
      .toBe(401) // the restarted server is empty; the point is that it answers again
  })

  it('a hung Redis (SIGSTOP) costs a request at most the timeout, and the session survives', async () => {
    const app = await appOn('fail-closed')
    const browser = new Client(app.url)
    await browser.login('ivy')
    await browser.request('PUT', '/kv/kept', 'yes')
    own.signal('SIGSTOP')
    try {
      const started = Date.now()
      const response = await browser.request('GET', '/me')
      expect(response.status).toBe(503)
      expect(Date.now() - started).toBeLessThan(1000)
    } finally {
      own.signal('SIGCONT')
    }
    await expect
      .poll(async () => (await browser.request('GET', '/me')).status, {
        timeout: 5000,
        interval: 100,
      })
      .toBe(200)
    expect(await (await browser.request('GET', '/kv')).json()).toEqual({ kept: 'yes' })
  })
})
