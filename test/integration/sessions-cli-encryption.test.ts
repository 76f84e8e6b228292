import { randomBytes } from 'node:crypto'
import { createClient } from 'redis'
import { SessionStore } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cli } from '../support/cluster.js'
import { RedisServer } from '../support/redis-server.js'

// `sessionmesh sessions` against an app that encrypts at rest: with the app's keys
// in SESSIONMESH_ENCRYPTION_KEYS the CLI finds a user's sessions under the hashed
// index and shows their devices; without them it finds none; bad keys are a usage
// error. The app writes through its own store, as in production.

const current = randomBytes(32).toString('base64')
const older = randomBytes(32).toString('base64')
let redis: RedisServer

beforeAll(async () => {
  redis = await RedisServer.start()
})
afterAll(async () => {
  await redis?.stop()
})

describe('sessionmesh sessions over an encrypted store', () => {
  it('lists and revokes with the keys, finds nothing without them, refuses bad keys', async () => {
    const client = createClient({ url: redis.url })
    await client.connect()
    const encryption = { keys: [{ id: 'k2', key: current }] }
    const store = new SessionStore({ backend: redisBackend({ client }), encryption })
    const device = { headers: { 'user-agent': 'cli-encrypted' }, ip: '10.9.8.7' }
    const ids = ['enc-cli-session-aaaa', 'enc-cli-session-bbbb']
    try {
      for (const sid of ids)
        await store.set(sid, { cookie: {}, passport: { user: 'erin' }, req: device })
      const run = (args: string[], keys?: string) =>
        cli(['sessions', ...args, '--redis', redis.url], {
          ...process.env,
          SESSIONMESH_ENCRYPTION_KEYS: keys,
        })

      const listed = await run(['list', '--user', 'erin', '--json'], `k2:${current},k1:${older}`)
      expect(listed.stderr).toBe('')
      expect(listed.code).toBe(0)
      const sessions = JSON.parse(listed.stdout) as Array<Record<string, unknown>>
      expect(sessions.map((entry) => entry.id).sort()).toEqual(ids)
      expect(sessions[0]).toMatchObject({ userAgent: 'cli-encrypted', ip: '10.9.8.7' })

      // Without the keys the index holds no user id in clear: nothing to find.
      expect(await run(['list', '--user', 'erin', '--json'])).toMatchObject({
        code: 0,
        stdout: '[]\n',
      })

      const bad = await run(['list', '--user', 'erin'], 'k2:not-32-bytes')
      expect(bad.code).toBe(2)
      expect(bad.stderr).toMatch(/SESSIONMESH_ENCRYPTION_KEYS: /)
      const malformed = await run(['list', '--user', 'erin'], `${current}`)
      expect(malformed.code).toBe(2)
      expect(malformed.stderr).toMatch(/entry 1 is not id:base64key/)

      const revoked = await run(['revoke', '--user', 'erin', '--json'], `k2:${current}`)
      expect(revoked.code).toBe(0)
      expect(await store.listUserSessions('erin')).toEqual([])
    } finally {
      await store.close()
      client.destroy()
    }
  })
})
