import { randomBytes } from 'node:crypto'
import { ErrorCode, SessionStore } from 'sessionmesh'
import { session } from 'sessionmesh/express'
import { memoryBackend } from 'sessionmesh/memory'
import { describe, expect, it } from 'vitest'

const good = randomBytes(32)

describe('the encryption option', () => {
  const refused: Array<[string, unknown]> = [
    ['an empty key list', { keys: [] }],
    ['no key list', {}],
    ['a key of 16 bytes', { keys: [{ id: 'k1', key: randomBytes(16) }] }],
    ['a base64 key of 31 bytes', { keys: [{ id: 'k1', key: randomBytes(31).toString('base64') }] }],
    ['a key that is not base64', { keys: [{ id: 'k1', key: 'not a key!'.repeat(5) }] }],
    ['a key that is a number', { keys: [{ id: 'k1', key: 42 }] }],
    [
      'a duplicate id',
      {
        keys: [
          { id: 'k1', key: good },
          { id: 'k1', key: randomBytes(32) },
        ],
      },
    ],
    ['an id with a dot', { keys: [{ id: 'k.1', key: good }] }],
    ['an empty id', { keys: [{ id: '', key: good }] }],
  ]
  for (const [what, encryption] of refused) {
    it(`refuses ${what} with SESSIONMESH_INVALID_OPTION, in the store and the middleware`, () => {
      const options = { encryption } as never
      expect(() => new SessionStore({ backend: memoryBackend(), ...(options as object) })).toThrow(
        expect.objectContaining({ code: ErrorCode.INVALID_OPTION }),
      )
      expect(() => session({ secret: 's', ...(options as object) })).toThrow(
        expect.objectContaining({ code: ErrorCode.INVALID_OPTION }),
      )
    })
  }

  it('a key given as a Buffer and as its base64 text is the same key', async () => {
    const backend = memoryBackend()
    const asBuffer = new SessionStore({ backend, encryption: { keys: [{ id: 'k', key: good }] } })
    const asText = new SessionStore({
      backend,
      encryption: { keys: [{ id: 'k', key: good.toString('base64') }] },
    })
    await asBuffer.set('sid-one-of-the-tests', { cookie: {}, n: 1 })
    expect(await asText.get('sid-one-of-the-tests')).toMatchObject({ n: 1 })
  })

  it('a sealed value changed by one character does not open (malformed, no session)', async () => {
    const backend = memoryBackend()
    const store = new SessionStore({ backend, encryption: { keys: [{ id: 'k', key: good }] } })
    await store.set('sid-tampered-value', { cookie: {}, role: 'guest' })
    const stored = await backend.get('sid-tampered-value')
    const sealed = stored?.fields.role as string
    const flipped = `${sealed.slice(0, -2)}${sealed.at(-2) === 'A' ? 'B' : 'A'}${sealed.at(-1)}`
    await backend.write('sid-tampered-value', {
      mode: 'update',
      set: { role: flipped },
      unset: [],
      replace: false,
      now: Date.now(),
      expiresAt: Date.now() + 60_000,
      maxLifetime: 0,
      userId: undefined,
      device: {},
    })
    expect(await store.get('sid-tampered-value')).toBeNull()
  })
})
