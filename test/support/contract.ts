import { randomUUID } from 'node:crypto'
import {
  type Backend,
  MalformedRecordError,
  type SessionEvent,
  type SessionWrite,
} from 'sessionmesh'
import { afterAll, beforeAll, describe, expect, type TestFunction, it as vitestIt } from 'vitest'
import { encryptionContract } from './encryption-contract.js'

/** What a backend's test file hands the contract suite. */
export interface ContractSubject {
  backend: Backend
  /**
   * Makes the stored record of an existing session unreadable (wrong type, missing
   * metadata). Absent for backends whose records only they can write (memory).
   */
  corrupt?(sid: string): Promise<void>
  /**
   * Everything the backend's server holds, as its own dump tool prints it
   * (`redis-cli`, `pg_dump`, `mariadb-dump`, memcached's text protocol): the
   * encryption checks look for plaintext in it. Absent where there is no server
   * to dump (memory) or no one tool dumps it all (a cluster).
   */
  dump?(): Promise<string>
  /** Drops whatever the subject created (schema, server, client). */
  cleanup(): Promise<void>
}

const HOUR = 3_600_000

/** A write as a new session's first save makes it. */
export function createWrite(overrides: Partial<SessionWrite> = {}): SessionWrite {
  const now = Date.now()
  return {
    mode: 'create',
    set: { cookie: '{"originalMaxAge":3600000,"path":"/","httpOnly":true}' },
    unset: [],
    replace: true,
    now,
    expiresAt: now + HOUR,
    maxLifetime: 0,
    userId: undefined,
    device: { userAgent: 'Contract/1.0', ip: '127.0.0.1' },
    ...overrides,
  }
}

/** A delta write by a request that loaded the session. */
export function updateWrite(
  set: Record<string, string>,
  unset: string[] = [],
  overrides: Partial<SessionWrite> = {},
): SessionWrite {
  return { ...createWrite(), mode: 'update', set, unset, replace: false, device: {}, ...overrides }
}

const sid = () => randomUUID().replaceAll('-', '')

/** Options of {@link backendContract}. */
export interface ContractOptions {
  /**
   * Tests this backend cannot pass, by exact title, each with the reason (shown in
   * the skipped test's title). A title that names no test fails the suite.
   */
  skip?: Record<string, string>
}

/**
 * The promises every backend keeps, checked against the real thing. Each backend's
 * test file calls this once with a factory for a fresh, isolated subject.
 */
export function backendContract(
  name: string,
  make: () => Promise<ContractSubject>,
  options: ContractOptions = {},
): void {
  const skip = options.skip ?? {}
  const titles = new Set<string>()
  const it = (title: string, test: TestFunction) => {
    titles.add(title)
    const reason = skip[title]
    if (reason === undefined) vitestIt(title, test)
    else vitestIt.skip(`${title} (skipped: ${reason})`, test)
  }
  describe(`backend contract: ${name}`, () => {
    let subject: ContractSubject
    let backend: Backend

    beforeAll(async () => {
      subject = await make()
      backend = subject.backend
    })
    afterAll(async () => {
      await subject?.cleanup()
    })

    it('answers null for a session it never saw', async () => {
      expect(await backend.get(sid())).toBeNull()
    })

    it('stores a new session with its fields, times and device', async () => {
      const id = sid()
      const write = createWrite({ set: { cookie: '{}', cart: '[1,2]' }, userId: 'u-create' })
      expect(await backend.write(id, write)).toBe('ok')
      const stored = await backend.get(id)
      expect(stored?.fields).toEqual({ cookie: '{}', cart: '[1,2]' })
      expect(stored?.meta).toMatchObject({
        createdAt: write.now,
        lastSeenAt: write.now,
        expiresAt: write.expiresAt,
        userId: 'u-create',
        userAgent: 'Contract/1.0',
        ip: '127.0.0.1',
      })
    })

    it('applies a delta: sets and removes only the keys named, keeps the rest', async () => {
      const id = sid()
      await backend.write(id, createWrite({ set: { cookie: '{}', a: '1', b: '2', c: '3' } }))
      expect(await backend.write(id, updateWrite({ b: '20', d: '4' }, ['c']))).toBe('ok')
      expect((await backend.get(id))?.fields).toEqual({ cookie: '{}', a: '1', b: '20', d: '4' })
    })

    it('keeps every key of 100 concurrent deltas on one session (no lost update)', async () => {
      const id = sid()
      await backend.write(id, createWrite())
      const results = await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          backend.write(id, updateWrite({ [`k${i}`]: `${i}` })),
        ),
      )
      expect(results.every((r) => r === 'ok')).toBe(true)
      const fields = (await backend.get(id))?.fields ?? {}
      for (let i = 0; i < 100; i++) expect(fields[`k${i}`]).toBe(`${i}`)
    })

    it('writeAndRead answers the basis field before the write, and the session only when another write came first', async (context) => {
      const writeAndRead = backend.writeAndRead?.bind(backend)
      if (!writeAndRead) return context.skip()
      const id = sid()
      await backend.write(id, createWrite({ set: { cookie: '{}', v: '"a"', n: '1' } }))
      // Based on what is stored: the delta applied to it, nothing read back.
      expect(
        await writeAndRead(id, updateWrite({ v: '"b"', n: '2' }), { key: 'v', value: '"a"' }),
      ).toEqual({ result: 'ok', previous: '"a"' })
      // Based on "a" again, but "b" came first: the whole session as written comes back.
      const late = await writeAndRead(id, updateWrite({ v: '"c"', m: '3' }, ['n']), {
        key: 'v',
        value: '"a"',
      })
      expect(late).toMatchObject({ result: 'ok', previous: '"b"' })
      const stored = late.result === 'ok' ? late.stored : undefined
      expect(stored?.fields).toEqual({ cookie: '{}', v: '"c"', m: '3' })
      expect(stored?.meta).toEqual((await backend.get(id))?.meta)
      // A session without the field: nothing before it.
      const other = sid()
      await backend.write(other, createWrite({ set: { cookie: '{}' } }))
      expect(
        await writeAndRead(other, updateWrite({ v: '"x"' }), { key: 'v', value: '"w"' }),
      ).toMatchObject({ result: 'ok', previous: undefined, stored: { fields: { v: '"x"' } } })
      // Gone: nothing written, nothing read.
      await backend.destroy(id)
      expect(await writeAndRead(id, updateWrite({ v: '"d"' }), { key: 'v', value: '"c"' })).toEqual(
        { result: 'gone' },
      )
    })

    it('writeAndRead replies come back in the order the writes were made: each one after the one before', async (context) => {
      const writeAndRead = backend.writeAndRead?.bind(backend)
      if (!writeAndRead) return context.skip()
      const id = sid()
      await backend.write(id, createWrite({ set: { cookie: '{}', v: '"0"' } }))
      // 30 writes at once, each based on the version it was sent with ("0"): each
      // reply names the version of the write before it, and holds every key so far.
      const order: number[] = []
      const replies = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          writeAndRead(id, updateWrite({ v: `"${i + 1}"`, [`k${i}`]: '1' }), {
            key: 'v',
            value: '"0"',
          }).then((reply) => {
            order.push(i)
            return reply
          }),
        ),
      )
      expect(order).toEqual(Array.from({ length: 30 }, (_, i) => i))
      replies.forEach((reply, i) => {
        expect(reply).toMatchObject({ result: 'ok', previous: `"${i}"` })
        const fields = reply.result === 'ok' ? (reply.stored?.fields ?? {}) : {}
        if (i > 0) for (let k = 0; k <= i; k++) expect(fields[`k${k}`]).toBe('1')
      })
    })

    it('a whole-session write (replace) removes the keys it does not carry', async () => {
      const id = sid()
      await backend.write(id, createWrite({ set: { cookie: '{}', old: '1' } }))
      await backend.write(id, createWrite({ set: { cookie: '{}', fresh: '2' } }))
      expect((await backend.get(id))?.fields).toEqual({ cookie: '{}', fresh: '2' })
    })

    it('refuses a delta on a session that does not exist, and creates nothing', async () => {
      const id = sid()
      expect(await backend.write(id, updateWrite({ a: '1' }))).toBe('gone')
      expect(await backend.get(id)).toBeNull()
    })

    it('destroy is final: neither a delta nor a whole write brings the session back', async () => {
      const id = sid()
      await backend.write(id, createWrite({ userId: 'u-destroy' }))
      await backend.destroy(id)
      expect(await backend.get(id)).toBeNull()
      expect(await backend.write(id, updateWrite({ a: '1' }))).toBe('gone')
      expect(await backend.write(id, createWrite())).toBe('gone')
      expect(
        await backend.touch(id, { now: Date.now(), expiresAt: Date.now() + HOUR, maxLifetime: 0 }),
      ).toBe('gone')
      expect(await backend.get(id)).toBeNull()
      expect(await backend.listUser('u-destroy', Date.now())).toEqual([])
    })

    it('evict drops a live session with no tombstone and no event, and keeps a tombstone', async (context) => {
      const evict = backend.evict?.bind(backend)
      if (!evict) return context.skip()
      const events: SessionEvent[] = []
      const unsubscribe = await backend.subscribe?.((event) => events.push(event))
      try {
        const live = sid()
        await backend.write(live, createWrite({ set: { a: '1' } }))
        await evict(live)
        expect(await backend.get(live)).toBeNull()
        // No tombstone: the refill a cache tier makes next is a create, and it is taken.
        expect(await backend.write(live, createWrite({ set: { a: '2' } }))).toBe('ok')
        expect((await backend.get(live))?.fields.a).toBe('2')

        const destroyed = sid()
        await backend.write(destroyed, createWrite())
        await backend.destroy(destroyed)
        await evict(destroyed)
        expect(await backend.write(destroyed, createWrite())).toBe('gone')
        expect(await backend.get(destroyed)).toBeNull()

        if (unsubscribe) {
          // The destroy's event arrives; the evictions published none before or after it.
          // (Only this test's sessions count: other tests' events may still be arriving.)
          await expect
            .poll(() => events.some((e) => e.sid === destroyed && e.type === 'destroyed'), {
              timeout: 3000,
            })
            .toBe(true)
          expect(events.filter((e) => e.sid === destroyed && e.type === 'destroyed')).toHaveLength(
            1,
          )
          expect(events.filter((e) => e.sid === live).every((e) => e.type === 'changed')).toBe(true)
        }
      } finally {
        await unsubscribe?.()
      }
    })

    it('a create racing a destroy of the same id never leaves the session alive', async () => {
      for (let i = 0; i < 50; i++) {
        const id = sid()
        const [written] = await Promise.all([backend.write(id, createWrite()), backend.destroy(id)])
        // Whichever ran first, the destroy wins: the session is gone afterwards.
        expect(['ok', 'gone']).toContain(written)
        expect(await backend.get(id)).toBeNull()
        expect(await backend.write(id, updateWrite({ a: '1' }))).toBe('gone')
      }
    })

    it('forgets a session when it expires', async () => {
      const id = sid()
      await backend.write(id, createWrite({ expiresAt: Date.now() + 300, userId: 'u-expire' }))
      expect(await backend.get(id)).not.toBeNull()
      await expect.poll(() => backend.get(id), { timeout: 3000, interval: 50 }).toBeNull()
      expect(await backend.listUser('u-expire', Date.now())).toEqual([])
    })

    it('touch extends the expiry of an existing session and never creates one', async () => {
      const id = sid()
      const write = createWrite({ expiresAt: Date.now() + 2000 })
      await backend.write(id, write)
      const later = Date.now() + 10
      expect(await backend.touch(id, { now: later, expiresAt: later + HOUR, maxLifetime: 0 })).toBe(
        'ok',
      )
      const meta = (await backend.get(id))?.meta
      expect(meta?.expiresAt).toBe(later + HOUR)
      expect(meta?.lastSeenAt).toBe(later)
      expect(meta?.createdAt).toBe(write.now)
      const missing = sid()
      expect(
        await backend.touch(missing, { now: later, expiresAt: later + HOUR, maxLifetime: 0 }),
      ).toBe('gone')
      expect(await backend.get(missing)).toBeNull()
    })

    it('caps the expiry at createdAt + maxLifetime, on writes and touches', async () => {
      const id = sid()
      const write = createWrite({ maxLifetime: 5000 })
      await backend.write(id, write)
      expect((await backend.get(id))?.meta.expiresAt).toBe(write.now + 5000)
      await backend.touch(id, { now: Date.now(), expiresAt: Date.now() + HOUR, maxLifetime: 5000 })
      expect((await backend.get(id))?.meta.expiresAt).toBe(write.now + 5000)
      await backend.write(
        id,
        updateWrite({ a: '1' }, [], { expiresAt: Date.now() + HOUR, maxLifetime: 5000 }),
      )
      expect((await backend.get(id))?.meta.expiresAt).toBe(write.now + 5000)
    })

    it('indexes sessions by user, moves them with the user, and lists only live ones', async () => {
      const user = `u-${sid()}`
      const other = `v-${sid()}`
      const [a, b, c] = [sid(), sid(), sid()]
      await backend.write(a, createWrite({ userId: user }))
      await backend.write(b, createWrite({ userId: user }))
      await backend.write(c, createWrite({ userId: other }))
      const ids = async (u: string) =>
        (await backend.listUser(u, Date.now())).map((s) => s.id).sort()
      expect(await ids(user)).toEqual([a, b].sort())

      await backend.write(b, updateWrite({ x: '1' }, [], { userId: other }))
      expect(await ids(user)).toEqual([a])
      expect(await ids(other)).toEqual([b, c].sort())

      await backend.write(a, updateWrite({ x: '1' }, [], { userId: undefined }))
      expect(await ids(user)).toEqual([])
      expect((await backend.get(a))?.meta.userId).toBeUndefined()

      const listed = await backend.listUser(other, Date.now())
      expect(listed[0]?.meta).toMatchObject({
        userId: other,
        userAgent: 'Contract/1.0',
        ip: '127.0.0.1',
      })
    })

    it('revokes every session of a user but the one kept, atomically', async () => {
      const user = `u-${sid()}`
      const keep = sid()
      const others = [sid(), sid(), sid()]
      for (const id of [keep, ...others]) await backend.write(id, createWrite({ userId: user }))
      const revoked = await backend.destroyUser(user, keep)
      expect(revoked.sort()).toEqual([...others].sort())
      for (const id of others) {
        expect(await backend.get(id)).toBeNull()
        expect(await backend.write(id, updateWrite({ a: '1' }))).toBe('gone')
      }
      expect((await backend.listUser(user, Date.now())).map((s) => s.id)).toEqual([keep])
      expect(await backend.destroyUser(user)).toEqual([keep])
      expect(await backend.listUser(user, Date.now())).toEqual([])
    })

    it('a login under a session limit revokes the oldest in the same step (writeLimited)', async (context) => {
      const writeLimited = backend.writeLimited?.bind(backend)
      if (!writeLimited) return context.skip()
      const user = `u-${sid()}`
      const [first, second, third] = [sid(), sid(), sid()]
      const rule = { max: 2, policy: 'revoke-oldest' } as const
      expect(await writeLimited(first, createWrite({ userId: user }), rule)).toEqual({
        result: 'ok',
        revoked: [],
      })
      await writeLimited(second, createWrite({ userId: user }), rule)
      expect(await writeLimited(third, createWrite({ userId: user }), rule)).toEqual({
        result: 'ok',
        revoked: [first],
      })
      expect(await backend.get(first)).toBeNull()
      // Revoked as destroy revokes: final.
      expect(await backend.write(first, createWrite({ userId: user }))).toBe('gone')
      const listed = (await backend.listUser(user, Date.now())).map((s) => s.id)
      expect(listed.sort()).toEqual([second, third].sort())
    })

    it("'refuse' writes nothing for a login beyond the limit, and a gone session stays gone", async (context) => {
      const writeLimited = backend.writeLimited?.bind(backend)
      if (!writeLimited) return context.skip()
      const user = `u-${sid()}`
      const rule = { max: 1, policy: 'refuse' } as const
      const [held, refused] = [sid(), sid()]
      await writeLimited(held, createWrite({ userId: user }), rule)
      expect(await writeLimited(refused, createWrite({ userId: user }), rule)).toEqual({
        result: 'full',
      })
      expect(await backend.get(refused)).toBeNull()
      expect((await backend.listUser(user, Date.now())).map((s) => s.id)).toEqual([held])
      await backend.destroy(held)
      expect(await writeLimited(held, createWrite({ userId: user }), rule)).toEqual({
        result: 'gone',
      })
    })

    it('applies the limit atomically: of 20 concurrent logins of one user, exactly max stay', async (context) => {
      const writeLimited = backend.writeLimited?.bind(backend)
      if (!writeLimited) return context.skip()
      for (const policy of ['refuse', 'revoke-oldest'] as const) {
        const user = `u-${sid()}`
        const ids = Array.from({ length: 20 }, sid)
        const outcomes = await Promise.all(
          ids.map((id) => writeLimited(id, createWrite({ userId: user }), { max: 3, policy })),
        )
        const live = (await backend.listUser(user, Date.now())).map((s) => s.id)
        expect(live).toHaveLength(3)
        const written = ids.filter((_, k) => outcomes[k]?.result === 'ok')
        if (policy === 'refuse') {
          expect(written.sort()).toEqual([...live].sort())
        } else {
          expect(written).toHaveLength(20)
          const revoked = outcomes.flatMap((o) => (o.result === 'ok' ? o.revoked : []))
          expect(new Set([...revoked, ...live]).size).toBe(20)
          for (const id of revoked) expect(await backend.get(id)).toBeNull()
        }
      }
    })

    it('reports a record it cannot read as malformed', async (context) => {
      if (!subject.corrupt) return context.skip()
      const id = sid()
      await backend.write(id, createWrite())
      await subject.corrupt(id)
      await expect(backend.get(id)).rejects.toBeInstanceOf(MalformedRecordError)
    })

    it('publishes changes and destroys to subscribers', async (context) => {
      if (!backend.subscribe) return context.skip()
      const events: SessionEvent[] = []
      const unsubscribe = await backend.subscribe((event) => events.push(event))
      try {
        const id = sid()
        await backend.write(id, createWrite())
        await backend.destroy(id, { reason: 'logout' })
        await expect
          .poll(() => events.filter((e) => e.sid === id).map((e) => e.type), { timeout: 3000 })
          .toEqual(['changed', 'destroyed'])
        expect(events.every((e) => e.v === 1)).toBe(true)
        // A destroy carries its reason, so that every process can report why.
        expect(events.find((e) => e.sid === id && e.type === 'destroyed')?.reason).toBe('logout')
        const user = `u-${sid()}`
        const revoked = sid()
        await backend.write(revoked, createWrite({ userId: user }))
        await backend.destroyUser(user, undefined, { reason: 'revoked' })
        await expect
          .poll(() => events.find((e) => e.sid === revoked && e.type === 'destroyed')?.reason, {
            timeout: 3000,
          })
          .toBe('revoked')
      } finally {
        await unsubscribe()
      }
    })

    it('lists the ids of live sessions only: not destroyed, not expired ones', async (context) => {
      if (!backend.ids) return context.skip()
      const [live, destroyed, expiring] = [sid(), sid(), sid()]
      await backend.write(live, createWrite())
      await backend.write(destroyed, createWrite())
      await backend.write(expiring, createWrite({ expiresAt: Date.now() + 300 }))
      await backend.destroy(destroyed)
      const ids = await backend.ids()
      expect(ids).toContain(live)
      expect(ids).toContain(expiring)
      expect(ids).not.toContain(destroyed)
      expect(new Set(ids).size).toBe(ids.length)
      await expect
        .poll(async () => (await backend.ids?.())?.includes(expiring), {
          timeout: 3000,
          interval: 50,
        })
        .toBe(false)
      expect(await backend.ids()).toContain(live)
    })

    it('an update writes the device fields it carries; a create of a live session keeps its own', async () => {
      const id = sid()
      await backend.write(id, createWrite())
      await backend.write(id, createWrite({ device: { userAgent: 'Other/2.0', ip: '10.0.0.9' } }))
      expect((await backend.get(id))?.meta).toMatchObject({
        userAgent: 'Contract/1.0',
        ip: '127.0.0.1',
      })
      await backend.write(
        id,
        updateWrite({ a: '1' }, [], { device: { userAgent: 'Resealed/1.0' } }),
      )
      expect((await backend.get(id))?.meta).toMatchObject({
        userAgent: 'Resealed/1.0',
        ip: '127.0.0.1',
      })
      await backend.write(id, updateWrite({ a: '2' }))
      expect((await backend.get(id))?.meta).toMatchObject({
        userAgent: 'Resealed/1.0',
        ip: '127.0.0.1',
      })
    })

    it('keeps a long user agent whole, any characters, through reads, listings and a shorter one', async () => {
      // Redis stores an agent over 64 bytes in pieces; these cut inside 2-, 3- and 4-byte characters.
      const long = `${'Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0 '}${'é€😀'.repeat(24)}`
      const user = `u-${sid()}`
      const id = sid()
      await backend.write(id, createWrite({ userId: user, device: { userAgent: long } }))
      expect((await backend.get(id))?.meta.userAgent).toBe(long)
      expect((await backend.listUser(user, Date.now()))[0]?.meta.userAgent).toBe(long)
      for (const agent of ['Resealed/1.0', long.slice(0, 98), long]) {
        await backend.write(
          id,
          updateWrite({ a: agent }, [], { userId: user, device: { userAgent: agent } }),
        )
        expect((await backend.get(id))?.meta.userAgent).toBe(agent)
      }
      expect((await backend.listUser(user, Date.now()))[0]?.meta.userAgent).toBe(long)
    })

    it('a reseal rewrites keys that still hold the value named, and never one that changed', async () => {
      const id = sid()
      await backend.write(id, createWrite({ set: { cookie: '{}', a: '1', b: '2', c: '3' } }))
      const reseal = (pairs: Record<string, [string, string]>) =>
        Object.fromEntries(Object.entries(pairs).map(([k, [from, to]]) => [k, { from, to }]))
      await backend.write(
        id,
        updateWrite({ x: '9' }, [], { reseal: reseal({ a: ['1', 'A'], b: ['2', 'B'] }) }),
      )
      expect((await backend.get(id))?.fields).toEqual({
        cookie: '{}',
        a: 'A',
        b: 'B',
        c: '3',
        x: '9',
      })
      // `c` changed since (a concurrent request): it is kept; `cookie` may or may not be rewritten.
      await backend.write(id, updateWrite({ c: '30' }))
      await backend.write(
        id,
        updateWrite({ y: '1' }, [], { reseal: reseal({ c: ['3', 'C'], cookie: ['{}', '[]'] }) }),
      )
      const fields = (await backend.get(id))?.fields
      expect(fields?.c).toBe('30')
      expect(['{}', '[]']).toContain(fields?.cookie)
      expect(fields).toMatchObject({ a: 'A', b: 'B', x: '9', y: '1' })
      // A key removed since stays removed.
      await backend.write(id, updateWrite({}, ['x']))
      await backend.write(id, updateWrite({ z: '1' }, [], { reseal: reseal({ x: ['9', 'X'] }) }))
      expect((await backend.get(id))?.fields).not.toHaveProperty('x')
    })

    encryptionContract(it, () => subject)

    it('counts live sessions and clears them all', async () => {
      await backend.write(sid(), createWrite())
      expect(await backend.count()).toBeGreaterThan(0)
      await backend.clear()
      expect(await backend.count()).toBe(0)
    })

    for (const title of Object.keys(skip))
      if (!titles.has(title)) throw new Error(`backendContract skip: no test is titled "${title}"`)
  })
}
