import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import express, { type Request } from 'express'
import { createClient, type RedisClientType } from 'redis'
import { type EncryptionKey, SessionStore } from 'sessionmesh'
import { session } from 'sessionmesh/express'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { redisCliDump } from '../support/dump.js'
import { Client, startApp, type TestApp } from '../support/express-app.js'
import { RedisServer } from '../support/redis-server.js'

let server: RedisServer
let client: RedisClientType
beforeAll(async () => {
  server = await RedisServer.start()
  client = (await createClient({ url: server.url }).connect()) as RedisClientType
})
afterAll(async () => {
  client?.destroy()
  await server?.stop()
})

const key = (id: string): EncryptionKey => ({ id, key: randomBytes(32) })
const mark = () => randomBytes(5).toString('hex')

/** The key ids of a stored session's values, as the raw Redis hash holds them. */
async function storedKeyIds(prefix: string, sid: string): Promise<Set<string>> {
  const hash = await client.hGetAll(`${prefix}s:${sid}`)
  const ids = Object.entries(hash)
    // Session values, the cookie (k) and the device's agent (A); not the write
    // version (a random tag, kept in clear, in v).
    .filter(([name]) => (name.startsWith('.') && name !== '.__smv') || name === 'k' || name === 'A')
    .map(([, value]) => /^e1\.([^.]+)\./.exec(value)?.[1] ?? 'clear')
  return new Set(ids)
}

describe('encryption under express-session (SessionStore)', () => {
  const apps: TestApp[] = []
  afterAll(async () => {
    for (const app of apps) await app.close()
  })
  const appWith = async (prefix: string, keys: EncryptionKey[]) => {
    const store = new SessionStore({
      backend: redisBackend({ client, prefix }),
      encryption: { keys },
    })
    const app = await startApp(store)
    apps.push(app)
    return { app, store }
  }

  it('logs in, stores nothing in clear, and lists the user’s devices', async () => {
    const prefix = `es${mark()}:`
    const { app, store } = await appWith(prefix, [key('k1')])
    const m = mark()
    const browser = new Client(app.url, `Marker-Agent-${m}/1.0`)
    expect((await browser.login(`user-${m}`)).status).toBe(200)
    expect((await browser.request('PUT', '/kv/note', `note-${m}`)).status).toBe(204)
    expect(await (await browser.request('GET', '/kv')).json()).toEqual({ note: `note-${m}` })

    const raw = await redisCliDump(server.url, prefix)
    expect(raw).toContain(browser.sid)
    expect(raw).not.toContain(m)
    expect(await store.listUserSessions(`user-${m}`)).toMatchObject([
      { id: browser.sid, userAgent: `Marker-Agent-${m}/1.0`, ip: '127.0.0.1' },
    ])
    expect((await browser.request('POST', '/logout')).status).toBe(204)
    expect((await browser.request('GET', '/me')).status).toBe(401)
  })

  // A fleet rotates in two rolling steps: first every node learns k2 while k1
  // still seals ([k1, k2]), then k2 becomes the first key ([k2, k1]). During each
  // step nodes of both configurations serve the same users at once.
  it('rotation under load, through both rolling steps, logs nobody out', async () => {
    const prefix = `rot${mark()}:`
    const [k1, k2] = [key('k1'), key('k2')]
    const phases = [[k1], [k1, k2], [k2, k1]]
    const nodes = await Promise.all(phases.map((keys) => appWith(prefix, keys)))
    const users = Array.from({ length: 8 }, (_, i) => new Client(nodes[0]?.app.url ?? '', `U${i}`))
    for (const [i, user] of users.entries()) expect((await user.login(`rot-${i}`)).status).toBe(200)

    const statuses: number[] = []
    for (let step = 1; step < phases.length; step++) {
      const serving = [nodes[step - 1], nodes[step]].map((node) => node?.app.url ?? '')
      await Promise.all(
        users.map(async (user, i) => {
          for (let n = 0; n < 6; n++) {
            const browser = new Client(serving[(i + n) % 2] as string)
            browser.cookie = user.cookie
            const me = await browser.request('GET', '/me')
            const put = await browser.request('PUT', `/kv/n${n}`, step * 10 + n)
            statuses.push(me.status, put.status)
          }
        }),
      )
    }
    expect(statuses.length).toBe(8 * 2 * 6 * 2)
    expect(statuses.filter((status) => status !== 200 && status !== 204)).toEqual([])

    // The next write by a [k2, k1] node seals all of a session with k2, so k1 can go.
    const last = nodes[2]
    const only = await appWith(prefix, [k2])
    const stillK1 = []
    for (const user of users) {
      if ((await storedKeyIds(prefix, user.sid)).has('k1')) stillK1.push(user.sid)
    }
    // Those last written by a [k1, k2] node: k1 still seals them.
    expect(stillK1).toHaveLength(4)
    for (const [i, user] of users.entries()) {
      const browser0 = new Client(last?.app.url ?? '')
      browser0.cookie = user.cookie
      expect((await browser0.request('PUT', '/kv/final', i)).status).toBe(204)
      expect(await storedKeyIds(prefix, user.sid)).toEqual(new Set(['k2']))
      const browser = new Client(only.app.url)
      browser.cookie = user.cookie
      expect(await (await browser.request('GET', '/me')).json()).toMatchObject({
        user: { id: `rot-${i}` },
      })
      expect(await last?.store.listUserSessions(`rot-${i}`)).toMatchObject([{ id: user.sid }])
    }
  })

  it('a node with the wrong key serves the session as absent (401), not an error', async () => {
    const prefix = `wk${mark()}:`
    const right = await appWith(prefix, [key('k1')])
    const wrong = await appWith(prefix, [key('k3')])
    const user = new Client(right.app.url)
    await user.login('wrong-key-user')
    const stranger = new Client(wrong.app.url)
    stranger.cookie = user.cookie
    expect((await stranger.request('GET', '/me')).status).toBe(401)
    expect((await user.request('GET', '/me')).status).toBe(200)
  })
})

describe.each([
  ['', false],
  [', near cache', true],
])('encryption under sessionmesh/express%s', (_name, nearCache) => {
  it('the middleware takes the same option: nothing in clear, device and index work', async () => {
    const prefix = `mw${mark()}:`
    const middleware = session({
      backend: redisBackend({ client, prefix }),
      secret: 'test secret',
      nearCache,
      encryption: { keys: [{ id: 'k1', key: randomBytes(32).toString('base64') }] },
    })
    const app = express()
    app.use(middleware)
    const data = (req: Request) => req.session as unknown as Record<string, unknown>
    app.post('/login/:user', (req, res) => {
      data(req).passport = { user: req.params.user }
      data(req).note = `note-of-${req.params.user}`
      res.json({ id: req.sessionID })
    })
    app.get('/note', (req, res) => res.json({ note: data(req).note ?? null }))
    const listening = app.listen(0, '127.0.0.1')
    await new Promise((resolve) => listening.once('listening', resolve))
    try {
      const base = `http://127.0.0.1:${(listening.address() as AddressInfo).port}`
      const m = mark()
      const browser = new Client(base, `Mw-Agent-${m}`)
      const { id } = await (await browser.request('POST', `/login/mw-${m}`)).json()
      expect(await (await browser.request('GET', '/note')).json()).toEqual({
        note: `note-of-mw-${m}`,
      })
      const raw = await redisCliDump(server.url, prefix)
      expect(raw).toContain(id)
      expect(raw).not.toContain(m)
      expect(await middleware.store.listUserSessions(`mw-${m}`)).toMatchObject([
        { id, userAgent: `Mw-Agent-${m}` },
      ])
      expect(await middleware.store.revokeUserSessions(`mw-${m}`)).toEqual([id])
      expect(await (await browser.request('GET', '/note')).json()).toEqual({ note: null })
    } finally {
      listening.closeAllConnections()
      listening.close()
    }
  })
})
