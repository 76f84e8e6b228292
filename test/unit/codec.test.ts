import { decodeSession, ErrorCode, encodeSession } from 'sessionmesh'
import { describe, expect, it } from 'vitest'

const meta = { createdAt: 1, lastSeenAt: 1, expiresAt: Date.UTC(2030, 0, 1) }

describe('codec', () => {
  it('encodes each top-level key on its own and round-trips them', () => {
    const session = { cookie: { originalMaxAge: 1000, path: '/' }, cart: [1, 2], user: { id: 'a' } }
    const fields = encodeSession(session)
    expect(fields).toEqual({
      cookie: '{"originalMaxAge":1000,"path":"/"}',
      cart: '[1,2]',
      user: '{"id":"a"}',
    })
    expect(decodeSession({ fields, meta })).toEqual({
      ...session,
      cookie: { ...session.cookie, expires: '2030-01-01T00:00:00.000Z' },
    })
  })

  it('leaves the cookie’s moving expiry out, so an untouched session encodes the same', () => {
    const a = encodeSession({ cookie: { originalMaxAge: 10, expires: new Date(1) } })
    const b = encodeSession({ cookie: { originalMaxAge: 10, expires: new Date(2) } })
    expect(a).toEqual(b)
  })

  it('skips undefined and function values, as JSON does', () => {
    expect(encodeSession({ a: undefined, b: () => 1, c: null })).toEqual({ c: 'null' })
  })

  it('refuses a value JSON cannot hold with a coded error', () => {
    expect(() => encodeSession({ big: 1n })).toThrow(
      expect.objectContaining({ code: ErrorCode.SESSION_NOT_SERIALIZABLE }),
    )
  })

  it('reports a field that is not JSON as a malformed record', () => {
    expect(() => decodeSession({ fields: { a: '{' }, meta })).toThrow(/malformed session record/)
  })
})
