import fc from 'fast-check'
import { type Backend, SessionStore } from 'sessionmesh'
import { expect } from 'vitest'
import { FUZZ } from './fuzz.js'

// The backend contract as a property: random sequences of set / touch / destroy /
// revoke, each issued through one of two SessionStore instances over the same
// storage (two processes), checked after every step against a plain model.

const SIDS = ['s0', 's1', 's2', 's3']
const USERS = ['u0', 'u1']
const KEYS = ['a', 'b', 'c']
const cookie = { originalMaxAge: 3_600_000, path: '/', httpOnly: true }

type Op =
  | { kind: 'set'; via: number; sid: number; key: number; value: number; user: number | null }
  | { kind: 'unset'; via: number; sid: number; key: number }
  | { kind: 'touch'; via: number; sid: number }
  | { kind: 'destroy'; via: number; sid: number }
  | { kind: 'revoke'; via: number; user: number; except: number | null }

const via = fc.integer({ min: 0, max: 1 })
const sid = fc.integer({ min: 0, max: SIDS.length - 1 })
const user = fc.integer({ min: 0, max: USERS.length - 1 })
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant('set' as const),
    via,
    sid,
    key: fc.integer({ min: 0, max: KEYS.length - 1 }),
    value: fc.integer({ min: -5, max: 5 }),
    user: fc.option(user, { nil: null }),
  }),
  fc.record({
    kind: fc.constant('unset' as const),
    via,
    sid,
    key: fc.integer({ min: 0, max: KEYS.length - 1 }),
  }),
  fc.record({ kind: fc.constant('touch' as const), via, sid }),
  fc.record({ kind: fc.constant('destroy' as const), via, sid }),
  fc.record({
    kind: fc.constant('revoke' as const),
    via,
    user,
    except: fc.option(sid, { nil: null }),
  }),
)

/** What the storage must hold: live sessions' data and user, and destroyed ids. */
interface ModelSession {
  data: Record<string, number>
  user: string | undefined
}

/**
 * Runs the property over `backends()` (two backends over one storage, fresh ids
 * per run). `numRuns` defaults to the suite's bound.
 */
export async function modelFuzz(backends: () => [Backend, Backend], numRuns?: number) {
  let run = 0
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 25 }), async (ops) => {
      run++
      const prefix = `r${run}-${Date.now().toString(36)}-`
      const name = (index: number) => `${prefix}${SIDS[index]}`
      const userName = (index: number) => `${prefix}${USERS[index]}`
      const stores = backends().map((backend) => new SessionStore({ backend }))
      const live = new Map<string, ModelSession>()
      const destroyed = new Set<string>()

      for (const step of ops) {
        const store = stores[step.via] as SessionStore
        if (step.kind === 'set' || step.kind === 'unset') {
          const id = name(step.sid)
          const loaded = (await store.get(id)) as Record<string, unknown> | null
          const session = loaded ?? { cookie }
          const key = KEYS[step.key] as string
          if (step.kind === 'set') session[key] = step.value
          else delete session[key]
          if (step.kind === 'set' && step.user !== null) {
            session.passport = { user: userName(step.user) }
          }
          await store.set(id, session)
          // A create over a tombstone is refused; otherwise the write lands.
          if (!destroyed.has(id)) {
            const model = live.get(id) ?? { data: {}, user: undefined }
            if (step.kind === 'set') model.data[key] = step.value
            else delete model.data[key]
            if (step.kind === 'set' && step.user !== null) model.user = userName(step.user)
            live.set(id, model)
          }
        } else if (step.kind === 'touch') {
          const id = name(step.sid)
          const loaded = await store.get(id)
          if (loaded) await store.touch(id, loaded)
        } else if (step.kind === 'destroy') {
          const id = name(step.sid)
          await store.destroy(id)
          live.delete(id)
          destroyed.add(id)
        } else {
          const owner = userName(step.user)
          const except = step.except === null ? undefined : name(step.except)
          const revoked = await store.revokeUserSessions(
            owner,
            except === undefined ? {} : { except },
          )
          const expected = [...live]
            .filter(([id, model]) => model.user === owner && id !== except)
            .map(([id]) => id)
          expect(revoked.sort()).toEqual(expected.sort())
          for (const id of expected) {
            live.delete(id)
            destroyed.add(id)
          }
        }

        // Both stores see the same thing, and it is the model.
        for (const reader of stores) {
          for (let index = 0; index < SIDS.length; index++) {
            const id = name(index)
            const got = (await reader.get(id)) as Record<string, unknown> | null
            const model = live.get(id)
            if (!model) {
              expect(got, `${id} after ${JSON.stringify(step)}`).toBeNull()
              continue
            }
            const { cookie: _cookie, passport, ...data } = got ?? {}
            expect(data, `${id} after ${JSON.stringify(step)}`).toEqual(model.data)
            expect((passport as { user?: string } | undefined)?.user).toBe(model.user)
          }
          for (let index = 0; index < USERS.length; index++) {
            const owner = userName(index)
            const listed = (await reader.listUserSessions(owner)).map((entry) => entry.id).sort()
            const expected = [...live]
              .filter(([, model]) => model.user === owner)
              .map(([id]) => id)
              .sort()
            expect(listed, `${owner} after ${JSON.stringify(step)}`).toEqual(expected)
          }
        }
      }
    }),
    { ...FUZZ, numRuns: numRuns ?? FUZZ.numRuns ?? 100 },
  )
}
