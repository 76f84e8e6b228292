// @ts-expect-error connect-pg-simple ships no types
import pgSession from 'connect-pg-simple'
import { RedisStore } from 'connect-redis'
import session from 'express-session'
import { createClient } from 'redis'
import { SessionStore } from 'sessionmesh'
import { connectPgSimpleSource, connectRedisSource, legacyBackend } from 'sessionmesh/legacy'
import { migratePostgres, postgresBackend } from 'sessionmesh/postgres'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Client, startApp } from '../support/express-app.js'
import { RedisServer } from '../support/redis-server.js'
import { pgSchema } from '../support/sql.js'

// The switch as it happens in production: users log in on the app running the old
// store, the app is redeployed with sessionmesh, and the same browsers come back.

let server: RedisServer
beforeAll(async () => {
  server = await RedisServer.start()
})
afterAll(async () => {
  await server.stop()
})

/** Logs three users in on the old app; returns their browsers. */
async function loginOnOldApp(store: session.Store): Promise<Client[]> {
  // startApp only hands the store to express-session, which takes any Store.
  const app = await startApp(store as unknown as SessionStore)
  try {
    const browsers: Client[] = []
    for (const name of ['ada', 'bob', 'cy']) {
      const browser = new Client(app.url)
      expect((await browser.login(name)).status).toBe(200)
      expect((await browser.request('PUT', '/kv/cart', [name, 1])).status).toBe(204)
      browsers.push(browser)
    }
    return browsers
  } finally {
    await app.close()
  }
}

/** The same browsers (same cookies), now talking to the new app. */
function comeBack(browsers: Client[], url: string): Client[] {
  return browsers.map((old) => Object.assign(new Client(url), { cookie: old.cookie }))
}

async function expectStillLoggedIn(store: SessionStore, browsers: Client[]): Promise<void> {
  for (const [i, browser] of browsers.entries()) {
    const name = ['ada', 'bob', 'cy'][i]
    const me = await browser.request('GET', '/me')
    expect(me.status).toBe(200)
    expect((await me.json()).user).toEqual({ id: name })
    expect((await (await browser.request('GET', '/kv')).json()).cart).toEqual([name, 1])
    // Imported with its user, so the user index knows it.
    expect((await store.listUserSessions(name ?? '')).map((s) => s.id)).toEqual([browser.sid])
  }
}

describe('switching to sessionmesh with no forced re-login', () => {
  it('from connect-redis: old sessions stay logged in, and a logout is final', async () => {
    const client = createClient({ url: server.url })
    client.on('error', () => {})
    await client.connect()
    try {
      const browsers = await loginOnOldApp(new RedisStore({ client }))
      const oldKey = `sess:${browsers[0]?.sid}`
      expect(await client.exists(oldKey)).toBe(1)
      const oldTtl = await client.pTTL(oldKey)

      const backend = legacyBackend({
        backend: redisBackend({ client, prefix: 'sm:' }),
        legacy: connectRedisSource({ client }),
      })
      const store = new SessionStore({ backend })
      const app = await startApp(store)
      try {
        const back = comeBack(browsers, app.url)
        await expectStillLoggedIn(store, back)
        // Moved, not copied: the old record is gone, the expiry carried over.
        expect(await client.exists(oldKey)).toBe(0)
        const stored = await backend.get(back[0]?.sid ?? '')
        expect(stored?.meta.expiresAt).toBeGreaterThan(Date.now() + oldTtl - 60_000)
        expect(stored?.meta.expiresAt).toBeLessThanOrEqual(Date.now() + oldTtl)

        const ada = back[0] as Client
        expect((await ada.request('POST', '/logout')).status).toBe(204)
        expect((await ada.request('GET', '/me')).status).toBe(401)
      } finally {
        await app.close()
      }
    } finally {
      client.destroy()
    }
  })

  it('from connect-pg-simple: old sessions stay logged in, and a logout is final', async () => {
    const { pool, schema, drop } = await pgSchema()
    try {
      const PgStore = pgSession(session)
      const old = new PgStore({ pool, schemaName: schema, createTableIfMissing: true })
      const browsers = await loginOnOldApp(old)
      const table = `${schema}.sessions`
      await migratePostgres(pool, { table })
      const backend = legacyBackend({
        backend: postgresBackend({ pool, table, cleanupInterval: 0 }),
        legacy: connectPgSimpleSource({ pool, schemaName: schema }),
      })
      const store = new SessionStore({ backend })
      const app = await startApp(store)
      try {
        const back = comeBack(browsers, app.url)
        await expectStillLoggedIn(store, back)
        const { rows } = await pool.query(`SELECT count(*)::int AS n FROM ${schema}.session`)
        expect(rows[0]?.n).toBe(0)
        const ada = back[0] as Client
        expect((await ada.request('POST', '/logout')).status).toBe(204)
        expect((await ada.request('GET', '/me')).status).toBe(401)
      } finally {
        await app.close()
        old.close()
      }
    } finally {
      await drop()
    }
  })
})
