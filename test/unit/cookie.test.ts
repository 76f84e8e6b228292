import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'
import {
  readCookie,
  serializeCookie,
  sign,
  unsign,
  VerifiedCookies,
} from '../../packages/sessionmesh/src/integrations/express/cookie.js'

// express-session's own helpers, to check that both write and read the same bytes.
const require = createRequire(
  createRequire(import.meta.url).resolve('express-session/package.json'),
)
const signature = require('cookie-signature') as {
  sign(value: string, secret: string): string
  unsign(value: string, secret: string): string | false
}
const cookie = require('cookie') as {
  parse(header: string): Record<string, string>
  serialize(name: string, value: string, options: object): string
}

describe('cookie signing', () => {
  it('signs exactly as cookie-signature does, and each reads the other', () => {
    for (const value of ['abc', 'Zx_-0123456789abcdefghijklmnopqrstuv', 'a.b.c', '']) {
      expect(sign(value, 'secret')).toBe(signature.sign(value, 'secret'))
      expect(unsign(signature.sign(value, 'k2'), ['k1', 'k2'])).toBe(value || undefined)
      expect(signature.unsign(sign(value, 'k'), 'k')).toBe(value)
    }
  })

  it('refuses a tampered value, a tampered signature and an unknown secret', () => {
    const signed = sign('sid123', 'k')
    expect(unsign(signed.replace('sid123', 'sid124'), ['k'])).toBeUndefined()
    expect(unsign(`${signed.slice(0, -1)}A`, ['k'])).toBeUndefined()
    expect(unsign(signed, ['other'])).toBeUndefined()
    expect(unsign('no-dot', ['k'])).toBeUndefined()
  })

  it('remembers only cookies that verified, and signs with the first secret', () => {
    const cookies = new VerifiedCookies(['new', 'old'], 2)
    expect(cookies.sid(`s:${sign('a', 'old')}`)).toBe('a')
    expect(cookies.sid(`s:${sign('a', 'nope')}`)).toBeUndefined()
    expect(cookies.sid(sign('a', 'old'))).toBeUndefined() // no s: prefix: unsigned in express-session's terms
    expect(cookies.value('a')).toBe(`s:${sign('a', 'new')}`)
  })
})

describe('cookie header parsing', () => {
  it('reads what the cookie package reads', () => {
    const headers = [
      'connect.sid=s%3Aabc.def; other=1',
      'other=1;connect.sid=plain',
      ' connect.sid = "quoted" ; x=y',
      'connect.sid=first; connect.sid=second',
      'connect.sid=%E0%A4%A; a=b',
      'a=b; c',
      'connect.sid.v=abc; connect.sid=real',
    ]
    for (const header of headers) {
      expect(readCookie(header, 'connect.sid')).toBe(cookie.parse(header)['connect.sid'])
    }
    expect(readCookie(undefined, 'x')).toBeUndefined()
  })

  it('serializes attributes as the cookie package does', () => {
    const options = {
      domain: 'example.com',
      path: '/app',
      expires: new Date(1_800_000_000_000),
      httpOnly: true,
      secure: true,
      partitioned: true,
      priority: 'medium' as const,
      sameSite: 'none' as const,
    }
    expect(serializeCookie('n', 's:a+b/c', options)).toBe(cookie.serialize('n', 's:a+b/c', options))
    expect(serializeCookie('n', 'v', { path: '/', sameSite: true })).toBe(
      cookie.serialize('n', 'v', { path: '/', sameSite: true }),
    )
  })
})
