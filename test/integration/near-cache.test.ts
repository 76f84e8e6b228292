import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import express from 'express'
import { createClient } from 'redis'
import type { Backend } from 'sessionmesh'
import { type SessionMiddleware, session } from 'sessionmesh/express'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RedisServer } from '../support/redis-server.js'

type RedisClient = ReturnType<typeof createClient>

const BUS_DELAY = 500

/** Reads of sessions the nodes sent to Redis (HGETALL), counted by {@link lateBus}. */
const reads = { count: 0 }
/** How long {@link lateBus} holds each write's reply back: every request of a burst is then in flight at once. */
const replies = { delay: 0 }
const held = async <T>(reply: Promise<T>): Promise<T> => {
  const value = await reply
  if (replies.delay > 0) await new Promise((resolve) => setTimeout(resolve, replies.delay))
  return value
}

/** The same backend, with every bus event delivered `delay` ms late: the bus a near cache must not trust. */
function lateBus(backend: Backend, delay: number): Backend {
  const subscribe = backend.subscribe?.bind(backend)
  const writeAndRead = backend.writeAndRead?.bind(backend)
  return {
    kind: backend.kind,
    get: (sid) => {
      reads.count++
      return backend.get(sid)
    },
    ...(writeAndRead && {
      writeAndRead: (sid, write, basis) => held(writeAndRead(sid, write, basis)),
    }),
    write: (sid, write) => held(backend.write(sid, write)),
    touch: (sid, touch) => backend.touch(sid, touch),
    destroy: (sid) => backend.destroy(sid),
    listUser: (user, now) => backend.listUser(user, now),
    destroyUser: (user, except) => backend.destroyUser(user, except),
    count: () => backend.count(),
    clear: () => backend.clear(),
    isOutage: (error) => backend.isOutage?.(error) ?? true,
    close: () => backend.close(),
    ...(subscribe && {
      subscribe: (listener) => subscribe((event) => setTimeout(() => listener(event), delay)),
    }),
  }
}

interface Node {
  url: string
  middleware: SessionMiddleware
  server: Server
  client: RedisClient
}

async function startNode(redisUrl: string, busDelay: number): Promise<Node> {
  const client: RedisClient = createClient({ url: redisUrl })
  await client.connect()
  const middleware = session({
    backend: lateBus(redisBackend({ client }), busDelay),
    secret: 'near cache test',
    resave: false,
    saveUninitialized: false,
    nearCache: { maxAge: 60_000 },
    // This file checks staleness, not latency: no 503 because a shared machine is slow.
    timeout: 2_000,
  })
  await middleware.ready
  const app = express()
  app.use(middleware)
  app.put('/n/:value', (req, res) => {
    const s = req.session as unknown as Record<string, unknown>
    s.n = Number(req.params.value)
    res.json({ n: s.n })
  })
  app.put('/k/:key', (req, res) => {
    ;(req.session as unknown as Record<string, unknown>)[String(req.params.key)] = 1
    res.json({})
  })
  app.get('/keys', (req, res) => {
    const { cookie: _c, ...data } = req.session as unknown as Record<string, unknown>
    res.json(Object.keys(data).sort())
  })
  app.get('/n', (req, res) => {
    res.json({ n: (req.session as unknown as Record<string, unknown>).n ?? null })
  })
  app.post('/logout', (req, res, next) => {
    req.session?.destroy((error) => (error ? next(error) : res.sendStatus(204)))
  })
  const server = app.listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  const { port } = server.address() as AddressInfo
  return { url: `http://127.0.0.1:${port}`, middleware, server, client }
}

/** A browser's cookie jar over fetch, keeping every cookie the server sets or clears. */
class Browser {
  readonly cookies = new Map<string, string>()

  async request(base: string, method: string, path: string): Promise<Response> {
    const cookie = [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ')
    const response = await fetch(`${base}${path}`, {
      method,
      headers: cookie ? { cookie } : {},
    })
    for (const line of response.headers.getSetCookie()) {
      const [pair = ''] = line.split(';')
      const eq = pair.indexOf('=')
      const name = pair.slice(0, eq)
      const value = pair.slice(eq + 1)
      if (value === '' || /expires=thu, 01 jan 1970/i.test(line)) this.cookies.delete(name)
      else this.cookies.set(name, value)
    }
    return response
  }
}

describe('near cache across two nodes on one Redis', () => {
  let redis: RedisServer
  let a: Node
  let b: Node

  beforeAll(async () => {
    redis = await RedisServer.start()
    // The bus is half a second late on both nodes: dozens of requests long.
    a = await startNode(redis.url, BUS_DELAY)
    b = await startNode(redis.url, BUS_DELAY)
  })

  afterAll(async () => {
    for (const node of [a, b]) {
      node.server.closeAllConnections()
      node.server.close()
      await node.middleware.close()
      await node.client.close()
    }
    await redis.stop()
  })

  it('never serves a stale session in 3,000 write-here/read-there pairs under concurrent load, with the bus late', async () => {
    const browsers = Array.from({ length: 50 }, () => new Browser())
    let stale = 0
    let pairs = 0
    await Promise.all(
      browsers.map(async (browser, k) => {
        for (let i = 1; i <= 60; i++) {
          // Alternate the direction: write on A and read on B, then the reverse.
          const [writer, reader] = (i + k) % 2 === 0 ? [a, b] : [b, a]
          const value = k * 1000 + i
          const put = await browser.request(writer.url, 'PUT', `/n/${value}`)
          expect(put.status).toBe(200)
          const first = (await (await browser.request(reader.url, 'GET', '/n')).json()) as {
            n: number
          }
          const second = (await (await browser.request(reader.url, 'GET', '/n')).json()) as {
            n: number
          }
          pairs++
          if (first.n !== value) stale++
          if (second.n !== value) stale++
        }
      }),
    )
    expect(pairs).toBe(3000)
    expect(stale).toBe(0)
    // The reads were served from memory, not all from Redis: the check had something to catch.
    const hits =
      (a.middleware.nearCacheStats()?.hits ?? 0) + (b.middleware.nearCacheStats()?.hits ?? 0)
    expect(hits).toBeGreaterThan(2500)
  })

  it('serves a hot session from memory with no Redis command', async () => {
    const browser = new Browser()
    await browser.request(a.url, 'PUT', '/n/7')
    await browser.request(a.url, 'GET', '/n')
    // Every command Redis ran but the bus's heartbeats (PUBLISH, a few a second per
    // process, whatever the traffic) and these INFO calls themselves.
    const commands = async () => {
      const info = await a.client.info('commandstats')
      let calls = 0
      for (const [, name, n] of info.matchAll(/cmdstat_([a-z|]+):calls=(\d+)/g)) {
        if (name !== 'publish' && name !== 'info') calls += Number(n)
      }
      return calls
    }
    const before = await commands()
    for (let i = 0; i < 50; i++) {
      const body = (await (await browser.request(a.url, 'GET', '/n')).json()) as { n: number }
      expect(body.n).toBe(7)
    }
    expect((await commands()) - before).toBe(0)
  })

  it('a read-modify-write needs no read: each write tells the cache what the session became, concurrent ones too', async () => {
    const browser = new Browser()
    await browser.request(a.url, 'PUT', '/n/1')
    await browser.request(a.url, 'GET', '/n')
    const before = reads.count
    for (let i = 2; i <= 20; i++) {
      const body = (await (await browser.request(a.url, 'PUT', `/n/${i}`)).json()) as { n: number }
      expect(body.n).toBe(i)
    }
    // Ten writes at once on one session, each based on the copy before any of them:
    // the cached copy ends up holding all ten, and serves the next read.
    const keys = Array.from({ length: 10 }, (_, i) => `k${i}`)
    replies.delay = 50
    try {
      await Promise.all(keys.map((key) => browser.request(a.url, 'PUT', `/k/${key}`)))
    } finally {
      replies.delay = 0
    }
    const after = (await (await browser.request(a.url, 'GET', '/keys')).json()) as string[]
    expect(after).toEqual([...keys, 'n'].sort())
    expect(reads.count - before).toBe(0)
  })

  it('does not serve a session from any cache once its own client logged out on another node', async () => {
    const browser = new Browser()
    await browser.request(a.url, 'PUT', '/n/1')
    await browser.request(b.url, 'GET', '/n') // B caches it
    const kept = new Map(browser.cookies)
    expect((await browser.request(a.url, 'POST', '/logout')).status).toBe(204)
    expect(((await (await browser.request(b.url, 'GET', '/n')).json()) as { n: unknown }).n).toBe(
      null,
    )
    // A client that kept its old cookies (both of them) is refused too, once the bus has delivered.
    const replay = new Browser()
    for (const [name, value] of kept) replay.cookies.set(name, value)
    await expect
      .poll(
        async () => ((await (await replay.request(b.url, 'GET', '/n')).json()) as { n: unknown }).n,
        {
          timeout: 2_000,
        },
      )
      .toBe(null)
  })

  it('stops serving a session revoked on another node within the bus delay', async () => {
    const browser = new Browser()
    await browser.request(a.url, 'PUT', '/n/5')
    await browser.request(b.url, 'GET', '/n')
    const sid = decodeURIComponent(browser.cookies.get('connect.sid') ?? '')
      .slice(2)
      .split('.')[0]
    const revokedAt = Date.now()
    await (a.middleware.store as { revokeSession(sid: string): Promise<void> }).revokeSession(
      sid ?? '',
    )
    await expect
      .poll(
        async () =>
          ((await (await browser.request(b.url, 'GET', '/n')).json()) as { n: unknown }).n,
        {
          interval: 10,
          timeout: 2_000,
        },
      )
      .toBe(null)
    expect(Date.now() - revokedAt).toBeLessThan(1_000)
  })
})
