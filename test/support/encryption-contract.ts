import { randomBytes, randomUUID } from 'node:crypto'
import { type Backend, channels, type EncryptionOptions, SessionStore } from 'sessionmesh'
import { expect, type TestFunction } from 'vitest'

/** What the encryption checks need of a backend's test subject. */
export interface EncryptionSubject {
  backend: Backend
  /** Everything the backend's server holds, as its own dump tool prints it. */
  dump?(): Promise<string>
}

const k1 = { id: 'k1', key: randomBytes(32) }
const k2 = { id: 'k2', key: randomBytes(32).toString('base64') }
const k3 = { id: 'k3', key: randomBytes(32) }

const sid = () => randomUUID().replaceAll('-', '')
const HOUR = 3_600_000

/** A session as express-session hands it to a store: its request rides along, not enumerable. */
function session(user: string, data: Record<string, unknown>, agent: string, ip: string) {
  const value = {
    cookie: { originalMaxAge: HOUR, path: '/', httpOnly: true },
    passport: { user },
    ...data,
  }
  Object.defineProperty(value, 'req', {
    value: { headers: { 'user-agent': agent }, ip },
    enumerable: false,
  })
  return value
}

function storeWith(backend: Backend, encryption: EncryptionOptions): SessionStore {
  // Never closed: close() would close the shared backend the suite still uses.
  return new SessionStore({ backend, encryption })
}

/** Key ids of every sealed value (session values, then device) of a raw record. */
async function keyIds(backend: Backend, id: string) {
  const stored = await backend.get(id)
  if (!stored) throw new Error(`session ${id} is not stored`)
  const idOf = (value: string | undefined) => /^e1\.([^.]+)\./.exec(value ?? '')?.[1]
  return {
    // Every value but the write version (a random tag, stored in clear).
    fields: Object.entries(stored.fields)
      .filter(([name]) => name !== '__smv')
      .map(([, value]) => idOf(value)),
    device: idOf(stored.meta.userAgent),
    userId: stored.meta.userId,
  }
}

/**
 * Encryption at rest over a backend, through the store: what the backend's server
 * holds, key rotation, a wrong key, and the hashed user index. Registered by the
 * backend contract, so every backend runs it.
 */
export function encryptionContract(
  it: (title: string, test: TestFunction) => void,
  subjectOf: () => EncryptionSubject,
): void {
  it('encryption: a raw dump shows none of the data, user agent, IP or user id', async (context) => {
    const { backend, dump } = subjectOf()
    if (!dump) return context.skip()
    const mark = randomBytes(6).toString('hex')
    const [data, agent, ip, user] = [
      `secret-${mark}`,
      `Agent-${mark}/1.0`,
      `198.51.${parseInt(mark.slice(0, 2), 16)}.${parseInt(mark.slice(2, 4), 16)}`,
      `user-${mark}`,
    ]
    const store = storeWith(backend, { keys: [k1] })
    const id = sid()
    await store.set(id, session(user, { note: data }, agent, ip))
    const raw = await dump()
    // The dump is of the right place: the session is in it, by its id.
    expect(raw).toContain(id)
    for (const marker of [data, agent, ip, user, mark]) expect(raw).not.toContain(marker)
    // And the store reads all of it back.
    expect(await store.get(id)).toMatchObject({ note: data, passport: { user } })
    expect(await store.listUserSessions(user)).toMatchObject([{ id, userAgent: agent, ip }])
  })

  it('encryption: rotation (k1 → [k2, k1]) logs nobody out, and the next write reseals with k2', async () => {
    const { backend } = subjectOf()
    const user = `rot-${sid()}`
    const before = storeWith(backend, { keys: [k1] })
    const id = sid()
    await before.set(id, session(user, { a: 1, b: 'two' }, 'Rotating/1', '192.0.2.1'))
    const first = await keyIds(backend, id)
    expect(new Set(first.fields)).toEqual(new Set(['k1']))
    expect(first.device).toBe('k1')

    const after = storeWith(backend, { keys: [k2, k1] })
    const loaded = await after.get<Record<string, unknown>>(id)
    expect(loaded).toMatchObject({ a: 1, b: 'two', passport: { user } })
    expect((await after.listUserSessions(user)).map((s) => s.id)).toEqual([id])
    // A write that changes one key seals every key, the device and the index entry anew.
    if (!loaded) throw new Error('not loaded')
    loaded.a = 2
    await after.set(id, loaded)
    const ids = await keyIds(backend, id)
    expect(new Set(ids.fields)).toEqual(new Set(['k2']))
    expect(ids.device).toBe('k2')
    expect(ids.userId).toMatch(/^h\.k2\./)

    // So k1 can go: a store with k2 alone reads it, lists it and revokes it.
    const only = storeWith(backend, { keys: [k2] })
    expect(await only.get(id)).toMatchObject({ a: 2, b: 'two' })
    expect(await only.listUserSessions(user)).toMatchObject([
      { id, userAgent: 'Rotating/1', ip: '192.0.2.1' },
    ])
  })

  it('encryption: a record no key opens is reported as malformed, not fatal', async () => {
    const { backend } = subjectOf()
    const id = sid()
    await storeWith(backend, { keys: [k1] }).set(
      id,
      session('wrong-key', { x: 1 }, 'A', '192.0.2.2'),
    )
    const reported: unknown[] = []
    const listener = (message: unknown) => reported.push(message)
    channels.malformed.subscribe(listener)
    try {
      const stranger = storeWith(backend, { keys: [k3] })
      expect(await stranger.get(id)).toBeNull()
      expect(reported).toHaveLength(1)
      // The record is left alone: the right key still reads it.
      expect(await storeWith(backend, { keys: [k1] }).get(id)).toMatchObject({ x: 1 })
    } finally {
      channels.malformed.unsubscribe(listener)
    }
  })

  it('encryption: a value moved to another key or session does not open there', async () => {
    const { backend } = subjectOf()
    const store = storeWith(backend, { keys: [k1] })
    const [a, b] = [sid(), sid()]
    await store.set(a, session('swap', { role: 'admin', name: 'x' }, 'A', '192.0.2.3'))
    await store.set(b, session('swap', { role: 'guest', name: 'y' }, 'A', '192.0.2.3'))
    const stored = await backend.get(a)
    const other = await backend.get(b)
    if (!stored || !other) throw new Error('not stored')
    // Swap within a session: the value of `role` written under `name`.
    await backend.write(a, {
      mode: 'update',
      set: { name: stored.fields.role as string },
      unset: [],
      replace: false,
      now: Date.now(),
      expiresAt: Date.now() + HOUR,
      maxLifetime: 0,
      userId: stored.meta.userId,
      device: {},
    })
    expect(await store.get(a)).toBeNull()
    // Across sessions: b's `role` copied into a fresh session c.
    const c = sid()
    await backend.write(c, {
      mode: 'create',
      set: { role: other.fields.role as string },
      unset: [],
      replace: true,
      now: Date.now(),
      expiresAt: Date.now() + HOUR,
      maxLifetime: 0,
      userId: undefined,
      device: {},
    })
    expect(await store.get(c)).toBeNull()
    expect(await store.get(b)).toMatchObject({ role: 'guest' })
  })

  it('encryption: listUserSessions and revokeUserSessions work over the hashed index', async () => {
    const { backend } = subjectOf()
    const user = `ix-${sid()}`
    const store = storeWith(backend, { keys: [k1] })
    const [keep, x, y] = [sid(), sid(), sid()]
    for (const id of [keep, x, y]) await store.set(id, session(user, {}, 'Idx/1', '192.0.2.4'))
    // The backend knows the user only by the hash.
    expect(await backend.listUser(user, Date.now())).toEqual([])
    // One session written after a rotation: its entry is under k2's hash, the others under k1's.
    const rotated = storeWith(backend, { keys: [k2, k1] })
    const moved = await rotated.get<Record<string, unknown>>(x)
    if (!moved) throw new Error('not loaded')
    moved.seen = true
    await rotated.set(x, moved)
    expect((await rotated.listUserSessions(user)).map((s) => s.id).sort()).toEqual(
      [keep, x, y].sort(),
    )
    expect((await rotated.revokeUserSessions(user, { except: keep })).sort()).toEqual([x, y].sort())
    expect(await rotated.get(x)).toBeNull()
    expect(await rotated.get(y)).toBeNull()
    expect((await rotated.listUserSessions(user)).map((s) => s.id)).toEqual([keep])
  })

  it('encryption: the first writes after a rotation lose no concurrent update', async () => {
    const { backend } = subjectOf()
    const id = sid()
    await storeWith(backend, { keys: [k1] }).set(
      id,
      session('race', { a: 1, b: 1 }, 'R', '192.0.2.6'),
    )
    const rotated = storeWith(backend, { keys: [k2, k1] })
    // Two requests load the session, both seeing every value sealed with k1.
    const [one, two] = await Promise.all([
      rotated.get<Record<string, unknown>>(id),
      rotated.get<Record<string, unknown>>(id),
    ])
    if (!one || !two) throw new Error('not loaded')
    one.a = 2
    await rotated.set(id, one)
    // The second reseals what it did not change, but must not put back its `a`.
    two.b = 2
    await rotated.set(id, two)
    expect(await rotated.get(id)).toMatchObject({ a: 2, b: 2 })
    const ids = await keyIds(backend, id)
    expect(new Set(ids.fields)).toEqual(new Set(['k2']))
  })

  it('encryption: concurrent deltas on different keys both survive', async () => {
    const { backend } = subjectOf()
    const store = storeWith(backend, { keys: [k1] })
    const id = sid()
    await store.set(id, session('delta', { base: 0 }, 'D', '192.0.2.5'))
    const [one, two] = await Promise.all([
      store.get<Record<string, unknown>>(id),
      store.get<Record<string, unknown>>(id),
    ])
    if (!one || !two) throw new Error('not loaded')
    one.left = 'L'
    two.right = 'R'
    await Promise.all([store.set(id, one), store.set(id, two)])
    expect(await store.get(id)).toMatchObject({ base: 0, left: 'L', right: 'R' })
  })
}
