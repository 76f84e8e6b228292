import { execFileSync } from 'node:child_process'
import { SessionStore } from 'sessionmesh'
import { describe, expect, it } from 'vitest'

// The optional express-session store methods (all, ids) and records written by
// other stores, over the memory backend.

const cookie = { originalMaxAge: 60_000, path: '/', httpOnly: true }

describe('SessionStore: all() and ids()', () => {
  it('lists the ids and the sessions (each with its id) of live sessions only', async () => {
    const store = new SessionStore()
    await store.set('a', { cookie, n: 1 })
    await store.set('b', { cookie, n: 2 })
    await store.set('gone', { cookie, n: 3 })
    await store.destroy('gone')
    expect((await store.ids()).sort()).toEqual(['a', 'b'])
    const all = await store.all<{ n: number }>()
    expect(all.map(({ id, n }) => ({ id, n })).sort((x, y) => x.n - y.n)).toEqual([
      { id: 'a', n: 1 },
      { id: 'b', n: 2 },
    ])
  })

  it('answers through a callback too, as express-session calls it', async () => {
    const store = new SessionStore()
    await store.set('a', { cookie })
    const ids = await new Promise((resolve, reject) =>
      store.ids((error, value) => (error ? reject(error) : resolve(value))),
    )
    expect(ids).toEqual(['a'])
    const all = await new Promise<unknown[] | undefined>((resolve, reject) =>
      store.all((error, value) => (error ? reject(error) : resolve(value))),
    )
    expect(all).toHaveLength(1)
  })

  it('fails with SESSIONMESH_NOT_SUPPORTED on a backend that cannot list ids', async () => {
    // The memory backend with its ids() hidden: a backend written before ids() existed.
    const backend = Object.create(new SessionStore().backend, { ids: { value: undefined } })
    const bare = new SessionStore({ backend })
    await expect(bare.ids()).rejects.toMatchObject({ code: 'SESSIONMESH_NOT_SUPPORTED' })
    await expect(bare.all()).rejects.toMatchObject({ code: 'SESSIONMESH_NOT_SUPPORTED' })
  })
})

describe('SessionStore: sessions without a cookie object', () => {
  it('regression: a session stored without a cookie reads back as stored, not as null', async () => {
    const store = new SessionStore()
    await store.set('fixture', { user: 'ann' })
    expect(await store.get('fixture')).toEqual({ user: 'ann' })
  })

  it("express-session's createSession gets a browser-session cookie for it", async () => {
    const store = new SessionStore()
    await store.set('fixture', { user: 'ann' })
    const loaded = await new Promise<Record<string, unknown> | undefined>((resolve, reject) =>
      store.load('fixture', (error, session) => (error ? reject(error) : resolve(session))),
    )
    expect(loaded?.user).toBe('ann')
    expect(loaded?.cookie).toMatchObject({ originalMaxAge: null, expires: null })
  })
})

describe('SessionStore: what it remembers of a loaded session', () => {
  it('a copy of a loaded session saved under another id is written whole, not as a delta of the first', async () => {
    const store = new SessionStore()
    await store.set('a', { cookie, n: 1, kept: 'yes' })
    const a = (await store.get('a')) as Record<string, unknown>
    await store.set('b', { ...a, n: 2 })
    await store.set('c', Object.assign({}, a, { n: 3 }))
    expect(JSON.stringify(a)).not.toContain('snapshot')
    expect(await store.get('b')).toMatchObject({ n: 2, kept: 'yes' })
    expect(await store.get('c')).toMatchObject({ n: 3, kept: 'yes' })
  })

  it('keeps what it remembers out of sight: no key listing or clone of a loaded session shows it', async () => {
    const store = new SessionStore()
    await store.set('a', { cookie, n: 1 })
    const a = (await store.get('a')) as Record<string, unknown>
    await store.set('a', a) // remembered again after a save
    expect(Reflect.ownKeys(a)).toEqual(['cookie', 'n'])
    expect(Object.getOwnPropertySymbols(a)).toEqual([])
    expect(structuredClone(a)).toStrictEqual({ ...a })
  })

  it('a frozen session object is loaded and saved as any other', async () => {
    const store = new SessionStore()
    await store.set('f', Object.freeze({ cookie, n: 1 }))
    const f = (await store.get('f')) as Record<string, unknown>
    await store.set('f', Object.freeze({ ...f, n: 2 }))
    expect(await store.get('f')).toMatchObject({ n: 2 })
  })
})

describe('SessionStore: callbacks', () => {
  // In a process of its own: an uncaught exception here would be the test runner's.
  function thrownFrom(call: string): string {
    const script = `
      import { SessionStore } from 'sessionmesh'
      process.on('uncaughtException', (e) => { console.log('uncaught ' + e.message); process.exit(0) })
      process.on('unhandledRejection', (e) => { console.log('unhandled ' + e.message); process.exit(0) })
      const store = new SessionStore()
      ${call}
    `
    return execFileSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 20_000,
    }).trim()
  }

  it('an error thrown by a callback is an uncaught exception, not a rejection of a promise nobody holds (a failed assertion in a store callback showed as a test timeout under mocha)', () => {
    expect(thrownFrom(`store.length(() => { throw new Error('in length') })`)).toBe(
      'uncaught in length',
    )
    expect(
      thrownFrom(`store.set('a', { n: 1 }, () => store.get('a', (error, session) => {
        throw new Error('in get ' + session.n)
      }))`),
    ).toBe('uncaught in get 1')
    // The error path too: a session over maxBytes is refused.
    expect(
      thrownFrom(`store.set('a', { big: 'x'.repeat(70_000) }, (error) => {
        throw new Error('in set ' + error.code)
      })`),
    ).toBe('uncaught in set SESSIONMESH_SESSION_TOO_LARGE')
  })
})
