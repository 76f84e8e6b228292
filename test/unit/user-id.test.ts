import { InvalidOptionError, SessionStore } from 'sessionmesh'
import { memoryBackend } from 'sessionmesh/memory'
import { describe, expect, it } from 'vitest'

// Issue 11, item 6: an empty-string user id. Decision: '' is no user. A session
// whose user id is '' is stored as anonymous (indexed under nobody), and '' is
// refused as the argument of listUserSessions / revokeUserSessions, so that a
// `req.user?.id ?? ''` slip fails loudly instead of finding nothing.

const cookie = { originalMaxAge: 3_600_000, path: '/' }

describe('an empty-string user id', () => {
  it('is no user: the session is stored unindexed, on every backend alike (memory used to index it)', async () => {
    const backend = memoryBackend()
    const store = new SessionStore({ backend })
    await store.set('sid-empty-passport-1', { cookie, passport: { user: '' } })
    const custom = new SessionStore({ backend, userId: () => '' })
    await custom.set('sid-empty-custom-1', { cookie, n: 1 })
    for (const sid of ['sid-empty-passport-1', 'sid-empty-custom-1']) {
      const stored = await backend.get(sid)
      expect(stored).not.toBeNull()
      expect(stored?.meta.userId).toBeUndefined()
    }
    expect(await backend.listUser('', Date.now())).toEqual([])
  })

  it('is refused by listUserSessions and revokeUserSessions with SESSIONMESH_INVALID_OPTION', async () => {
    const store = new SessionStore({ backend: memoryBackend() })
    await store.set('sid-empty-2', { cookie, passport: { user: '' } })
    await expect(store.listUserSessions('')).rejects.toBeInstanceOf(InvalidOptionError)
    await expect(store.revokeUserSessions('')).rejects.toMatchObject({
      code: 'SESSIONMESH_INVALID_OPTION',
    })
    // Nothing was revoked on the way.
    expect(await store.get('sid-empty-2')).not.toBeNull()
  })

  it('a number user id 0 is still a user (only the empty string is none)', async () => {
    const store = new SessionStore({ backend: memoryBackend() })
    await store.set('sid-zero', { cookie, passport: { user: 0 } })
    expect((await store.listUserSessions('0')).map((s) => s.id)).toEqual(['sid-zero'])
  })
})
