import { createHash, randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import {
  codecValue,
  formsOf,
  namesOf,
} from '../../packages/sessionmesh/src/backends/redis/fields.js'

// Cookies as the codec stores them (`expires` left out when there is a maxAge).
const COOKIES = [
  // express-session and sessionmesh/express, defaults and a day's maxAge.
  '{"originalMaxAge":86400000,"httpOnly":true,"path":"/"}',
  '{"originalMaxAge":604800000,"secure":true,"httpOnly":true,"path":"/","sameSite":"lax"}',
  '{"originalMaxAge":2592000000,"partitioned":true,"priority":"high","secure":true,"httpOnly":true,"domain":"example.com","path":"/app","sameSite":"none"}',
  '{"originalMaxAge":null,"expires":"2026-12-31T23:59:59.000Z","httpOnly":true,"path":"/"}',
  // @fastify/session's order, and its nulls.
  '{"originalMaxAge":86400000,"sameSite":null,"secure":null,"path":"/","httpOnly":true,"domain":null}',
  '{"originalMaxAge":3600000,"sameSite":"strict","secure":true,"path":"/","httpOnly":true}',
]

const pack = (cookie: string) => formsOf('cookie', cookie)[0] as [string, string]

describe('the Redis backend’s short fields', () => {
  it('packs every framework’s cookie well under 64 bytes, and back', () => {
    for (const cookie of COOKIES) {
      const [name, stored] = pack(cookie)
      expect(name).toBe('k')
      expect(codecValue('k', stored)).toBe(cookie)
      expect(Buffer.byteLength(stored)).toBeLessThan(cookie.length / 2)
    }
    // The default cookie's 54 bytes, as the benchmarks store it.
    expect(pack(COOKIES[0] as string)[1]).toHaveLength(5)
  })

  it('gives back exactly any string stored as a cookie', () => {
    const samples = ['', 'null', '"e1.k1.AAAA"', '\x01\x1f\x1b\x00{"originalMaxAge":\x1f']
    for (let i = 0; i < 200; i++) {
      let text = ''
      for (const byte of randomBytes(40)) {
        text += byte % 3 === 0 ? ',"path":"/"' : String.fromCharCode(byte % 40)
      }
      samples.push(text)
    }
    for (const sample of samples) expect(codecValue('k', pack(sample)[1])).toBe(sample)
  })

  it('keeps the cookie dictionary it has stored cookies with: no code may change meaning', () => {
    // Each code unpacked on its own gives its fragment. Stored sessions depend on
    // this table; the digest changes if any entry is edited or moved.
    const codes = Array.from({ length: 30 }, (_, i) => i + 1).filter(
      (code) => ![9, 10, 13, 27].includes(code),
    )
    const table = codes.map((code) => codecValue('k', String.fromCharCode(code)))
    expect(table.filter((fragment) => fragment.length > 0)).toHaveLength(24)
    const digest = createHash('sha256').update(table.join('\n')).digest('hex')
    expect(digest).toBe('4ec6ddcd7c392d4dcefc0f8b42d1645649d922d5a779e40d00b748fcd738b808')
    // As this release stores the default cookie.
    expect(codecValue('k', '\x01\x18\x0e\x0f}')).toBe(COOKIES[0])
  })

  it('stores a version without its quotes only when nothing in it needs escaping', () => {
    expect(formsOf('__smv', '"UHjMeVft"')[0]).toEqual(['v', 'UHjMeVft'])
    expect(codecValue('v', 'UHjMeVft')).toBe('"UHjMeVft"')
    for (const odd of ['"a\\"b"', '"é"', '"a b"', '42', '{"v":1}', '"x']) {
      expect(formsOf('__smv', odd)).toEqual([['.__smv', odd]])
    }
  })

  it('names every field a key may be in, and keeps other keys as data fields', () => {
    expect(namesOf('cookie')).toEqual(['k', '.cookie'])
    expect(namesOf('__smv')).toEqual(['v', '.__smv'])
    // An application's own keys named like the short fields stay data fields.
    for (const key of ['k', 'v', 'passport', 'A', '']) {
      expect(namesOf(key)).toEqual([`.${key}`])
      expect(formsOf(key, '"x"')).toEqual([[`.${key}`, '"x"']])
    }
  })
})
