import { randomBytes } from 'node:crypto'
import { SessionStore } from 'sessionmesh'
import { memoryBackend } from 'sessionmesh/memory'
import { describe, expect, it } from 'vitest'

const encryption = { keys: [{ id: 'k1', key: randomBytes(32) }] }
const HOUR = 3_600_000
const loggedIn = (user: string) => ({
  cookie: { originalMaxAge: HOUR, path: '/', httpOnly: true },
  passport: { user },
})

describe('the store over an encrypted backend', () => {
  it('an unchanged save of a logged-in session is a touch, not a write (the hashed user is recognised)', async () => {
    const backend = memoryBackend()
    const store = new SessionStore({ backend, encryption, touchAfter: 0 })
    await store.set('sid-unchanged-save', loggedIn('alice'))
    const version = (await backend.get('sid-unchanged-save'))?.fields.__smv
    const loaded = await store.get('sid-unchanged-save')
    if (!loaded) throw new Error('not loaded')
    await store.set('sid-unchanged-save', loaded)
    expect((await backend.get('sid-unchanged-save'))?.fields.__smv).toBe(version)
  })

  it('maxSessionsPerUser counts the user over the hashed index', async () => {
    const store = new SessionStore({ backend: memoryBackend(), encryption, maxSessionsPerUser: 2 })
    for (const id of ['sid-limit-one', 'sid-limit-two', 'sid-limit-three']) {
      await store.set(id, loggedIn('bob'))
    }
    const ids = (await store.listUserSessions('bob')).map((s) => s.id).sort()
    expect(ids).toEqual(['sid-limit-three', 'sid-limit-two'])
    expect(await store.get('sid-limit-one')).toBeNull()
  })
})
