import { createRequire } from 'node:module'
import fc from 'fast-check'
import { decodeSession, encodedSize, encodeSession } from 'sessionmesh'
import { describe, expect, it } from 'vitest'
import {
  readCookie,
  serializeCookie,
  sign,
  unsign,
} from '../../packages/sessionmesh/src/integrations/express/cookie.js'
import { FUZZ } from '../support/fuzz.js'

// Property-based tests (fast-check) of the cookie parser and signer and of the
// session codec. Each property runs a bounded number of cases within a time limit.

const require = createRequire(
  createRequire(import.meta.url).resolve('express-session/package.json'),
)
const cookiePackage = require('cookie') as { parse(header: string): Record<string, string> }

const secret = fc.string({ minLength: 1, maxLength: 40 })
/** Cookie names as browsers send them: RFC 6265 tokens. */
const cookieName = fc.stringMatching(/^[A-Za-z0-9!#$&'*+.^_`|~-]{1,16}$/)
/** Cookie values: cookie-octets, with %-escapes and optional quotes. */
const cookieValue = fc
  .array(
    fc.oneof(
      fc.stringMatching(/^[A-Za-z0-9!#$&'()*+./:<=>?@[\]^_`{|}~-]{1,8}$/),
      fc.integer({ min: 0, max: 255 }).map((byte) => `%${byte.toString(16).padStart(2, '0')}`),
    ),
    { maxLength: 6 },
  )
  .map((parts) => parts.join(''))

describe('fuzz: cookie signing', () => {
  it('unsign(sign(v)) is v for every non-empty value and any secret among several', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 64 }),
        secret,
        fc.array(secret, { maxLength: 3 }),
        (value, key, others) => {
          expect(unsign(sign(value, key), [...others, key])).toBe(value)
        },
      ),
      FUZZ,
    )
  })

  it('any change to one character of a signed value, or a wrong secret, is refused', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 40 }),
        secret,
        fc.nat(),
        fc.string({ minLength: 1, maxLength: 1 }),
        (value, key, at, replacement) => {
          const signed = sign(value, key)
          const index = at % signed.length
          fc.pre(signed[index] !== replacement)
          const tampered = signed.slice(0, index) + replacement + signed.slice(index + 1)
          expect(unsign(tampered, [key])).toBeUndefined()
          expect(unsign(signed, [`${key}x`])).toBeUndefined()
        },
      ),
      FUZZ,
    )
  })
})

describe('fuzz: cookie parsing', () => {
  it('reads a cookie exactly as the cookie package express-session uses does', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(cookieName, cookieValue, fc.boolean()), { minLength: 1, maxLength: 6 }),
        fc.constantFrom('; ', ';', ' ; '),
        fc.nat(),
        (pairs, separator, pick) => {
          const header = pairs
            .map(([name, value, quoted]) => `${name}=${quoted ? `"${value}"` : value}`)
            .join(separator)
          const [name] = pairs[pick % pairs.length] as [string, string, boolean]
          const parsed = cookiePackage.parse(header)
          expect(readCookie(header, name)).toBe(
            Object.hasOwn(parsed, name) ? parsed[name] : undefined,
          )
        },
      ),
      FUZZ,
    )
  })

  it('never throws on any header, and finds what serializeCookie wrote', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), cookieName, fc.string(), (junk, name, value) => {
        expect(() => readCookie(junk, name)).not.toThrow()
        const written = serializeCookie(name, value, { path: '/', httpOnly: true })
        const pair = written.slice(0, written.indexOf(';'))
        // `__proto__` reads as absent, as in the cookie package (see readCookie).
        const expected = name === '__proto__' ? undefined : name === 'x' ? '1' : value
        expect(readCookie(`${junk.replaceAll(/[;=]/g, '')}; x=1; ${pair}`, name)).toBe(expected)
      }),
      FUZZ,
    )
  })
})

/** A session's top-level keys: any JSON value, under any key but `cookie`. */
const sessionData = fc.dictionary(
  fc.string({ maxLength: 12 }).filter((key) => key !== 'cookie' && key !== '__proto__'),
  fc.jsonValue({ maxDepth: 3 }),
  { maxKeys: 8 },
)

describe('fuzz: session codec', () => {
  it('decode(encode(s)) is s as JSON would carry it, key by key, for any key name', () => {
    fc.assert(
      fc.property(sessionData, fc.integer({ min: 1, max: 2 ** 40 }), (data, expiresAt) => {
        const cookie = { originalMaxAge: 60_000, path: '/', expires: new Date(0) }
        const session = { ...data, cookie }
        const fields = encodeSession(session)
        const decoded = decodeSession({
          fields,
          meta: { createdAt: 0, lastSeenAt: 0, expiresAt },
        })
        const { cookie: decodedCookie, ...rest } = decoded
        expect(rest).toEqual(JSON.parse(JSON.stringify(data)))
        expect(Object.keys(decoded).sort()).toEqual([...Object.keys(data), 'cookie'].sort())
        // The cookie's expires is not stored; it comes back from the backend's expiry.
        expect(decodedCookie).toEqual({
          originalMaxAge: 60_000,
          path: '/',
          expires: new Date(expiresAt).toISOString(),
        })
        expect(Object.getPrototypeOf(decoded)).toBe(Object.prototype)
        expect(encodedSize(fields)).toBe(
          Object.entries(fields).reduce(
            (sum, [key, value]) => sum + Buffer.byteLength(key) + Buffer.byteLength(value),
            0,
          ),
        )
      }),
      FUZZ,
    )
  })

  it('a key named __proto__ is refused on the way in, and kept as plain data on the way out (it replaced the prototype)', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 2 }), (value) => {
        const session = JSON.parse(`{"__proto__": ${JSON.stringify(value)}}`) as object
        expect(() => encodeSession({ ...session, cookie: {} })).toThrow(
          expect.objectContaining({ code: 'SESSIONMESH_SESSION_NOT_SERIALIZABLE' }),
        )
        // A record written by something else may still hold one.
        const decoded = decodeSession({
          fields: JSON.parse(`{"__proto__": ${JSON.stringify(JSON.stringify(value))}}`),
          meta: { createdAt: 0, lastSeenAt: 0, expiresAt: 1 },
        })
        expect(Object.getPrototypeOf(decoded)).toBe(Object.prototype)
        expect(Object.getOwnPropertyDescriptor(decoded, '__proto__')?.value).toEqual(
          JSON.parse(JSON.stringify(value)),
        )
      }),
      FUZZ,
    )
  })
})
