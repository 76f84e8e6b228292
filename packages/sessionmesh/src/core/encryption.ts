import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto'
import { MalformedRecordError } from './backend.js'
import { InvalidOptionError } from './errors.js'

/** One key of {@link EncryptionOptions.keys}. */
export interface EncryptionKey {
  /**
   * A short name stored in clear with every value it seals, so that a reader knows
   * which key opens it: 1 to 32 characters of `A-Z a-z 0-9 _ -`, unique in the list.
   */
  id: string
  /** 32 random bytes: a Buffer (or Uint8Array) of 32 bytes, or their base64 encoding. */
  key: Uint8Array | string
}

/**
 * Encryption at rest (AES-256-GCM). The first key seals every value written; every
 * key in the list opens what it sealed. Rotate by putting a new key first and
 * keeping the old ones until the sessions they sealed have been written again or
 * have expired.
 *
 * @example
 * encryption: { keys: [{ id: 'k2', key: process.env.SESSION_KEY_2 }, { id: 'k1', key: process.env.SESSION_KEY_1 }] }
 */
export interface EncryptionOptions {
  keys: readonly EncryptionKey[]
}

/**
 * The `encryption` option from one line of text, as an environment variable holds
 * it: `id:key` pairs separated by commas, the current key first, each key 32 bytes
 * in base64 (`k2:<base64>,k1:<base64>`). Throws {@link InvalidOptionError} naming
 * the entry that is wrong; the keys themselves are checked as the option checks them.
 *
 * @example
 * encryption: parseEncryptionKeys(process.env.SESSION_KEYS ?? '')
 */
export function parseEncryptionKeys(text: string): EncryptionOptions {
  const entries = text
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '')
  if (entries.length === 0) {
    throw new InvalidOptionError(
      'encryption keys: expected id:base64key[,id:base64key…], got nothing',
    )
  }
  const keys = entries.map((entry, index) => {
    const colon = entry.indexOf(':')
    if (colon <= 0 || colon === entry.length - 1) {
      throw new InvalidOptionError(
        `encryption keys: entry ${index + 1} is not id:base64key (keys are separated by commas)`,
      )
    }
    return { id: entry.slice(0, colon), key: entry.slice(colon + 1) }
  })
  // The same checks as the option, so a bad key is refused here, not at the first request.
  new SessionCipher({ keys })
  return { keys }
}

/** Sealed values start with this, then the key id, a dot and the base64url of nonce, ciphertext and tag. */
const PREFIX = 'e1.'
const NONCE_BYTES = 12
const TAG_BYTES = 16
const KEY_ID = /^[A-Za-z0-9_-]{1,32}$/

interface DerivedKey {
  id: string
  /** AES-256-GCM key for session data and device fields. */
  seal: Buffer
  /** HMAC-SHA-256 key for the user index. */
  index: Buffer
}

/** A value opened, and whether it was sealed with a key other than the current one. */
export interface Opened {
  plaintext: string
  stale: boolean
}

/**
 * The keys of the `encryption` option, checked and derived. From each key two
 * subkeys are derived with HKDF-SHA-256 (one to seal, one to hash user ids), so the
 * same 32 bytes are never used by two algorithms.
 *
 * Associated data binds each sealed value to where it belongs (session id and
 * top-level key, or the session's device): a value copied to another key or
 * another session does not open there.
 */
export class SessionCipher {
  readonly #keys: readonly DerivedKey[]
  readonly #byId: ReadonlyMap<string, DerivedKey>

  constructor(options: EncryptionOptions) {
    const keys = (options as { keys?: unknown } | undefined)?.keys
    if (!Array.isArray(keys) || keys.length === 0) {
      throw new InvalidOptionError('encryption.keys must be a non-empty array of { id, key }')
    }
    const byId = new Map<string, DerivedKey>()
    for (const entry of keys as unknown[]) {
      const { id, key } = (entry ?? {}) as { id?: unknown; key?: unknown }
      if (typeof id !== 'string' || !KEY_ID.test(id)) {
        throw new InvalidOptionError(
          `encryption key id ${JSON.stringify(id) ?? String(id)} must be 1 to 32 characters of A-Z a-z 0-9 _ -`,
        )
      }
      if (byId.has(id)) throw new InvalidOptionError(`encryption key id "${id}" is given twice`)
      const raw = keyBytes(id, key)
      byId.set(id, {
        id,
        seal: derive(raw, 'sessionmesh 1 seal'),
        index: derive(raw, 'sessionmesh 1 user index'),
      })
    }
    this.#byId = byId
    this.#keys = [...byId.values()]
  }

  /** The id of the key new values are sealed with. */
  get currentKeyId(): string {
    return (this.#keys[0] as DerivedKey).id
  }

  /** Seals `plaintext` with the current key, bound to `context`. */
  seal(context: string, plaintext: string): string {
    const key = this.#keys[0] as DerivedKey
    const nonce = nextNonce()
    const cipher = createCipheriv('aes-256-gcm', key.seal, nonce)
    cipher.setAAD(Buffer.from(context))
    const body = Buffer.concat([
      nonce,
      cipher.update(plaintext, 'utf8'),
      cipher.final(),
      cipher.getAuthTag(),
    ])
    return `${PREFIX}${key.id}.${body.toString('base64url')}`
  }

  /** Opens a value {@link seal} made; throws {@link MalformedRecordError} when no key can. */
  open(context: string, sealed: string): Opened {
    const id = keyIdOf(sealed)
    if (id === undefined) throw new MalformedRecordError('a value is not encrypted')
    const key = this.#byId.get(id)
    if (!key)
      throw new MalformedRecordError(`a value is sealed with key "${id}", which is not configured`)
    const body = Buffer.from(sealed.slice(PREFIX.length + id.length + 1), 'base64url')
    if (body.length < NONCE_BYTES + TAG_BYTES)
      throw new MalformedRecordError('an encrypted value is truncated')
    try {
      const decipher = createDecipheriv('aes-256-gcm', key.seal, body.subarray(0, NONCE_BYTES))
      decipher.setAAD(Buffer.from(context))
      decipher.setAuthTag(body.subarray(body.length - TAG_BYTES))
      const plaintext = Buffer.concat([
        decipher.update(body.subarray(NONCE_BYTES, body.length - TAG_BYTES)),
        decipher.final(),
      ]).toString('utf8')
      return { plaintext, stale: key !== this.#keys[0] }
    } catch (cause) {
      throw new MalformedRecordError(`an encrypted value does not open with key "${id}"`, { cause })
    }
  }

  /** What the user index stores for `userId` in writes: its keyed hash under the current key. */
  indexId(userId: string): string {
    return indexIdOf(this.#keys[0] as DerivedKey, userId)
  }

  /** Every form `userId` may have in the index: one per configured key, the current one first. */
  indexIds(userId: string): string[] {
    return this.#keys.map((key) => indexIdOf(key, userId))
  }
}

// Nonces are random (never a counter: many processes seal with one key), drawn
// from a pool refilled in bulk: one randomBytes call per 256 seals instead of one
// each, which costs as much as the sealing itself.
const POOL = NONCE_BYTES * 256
let pool = Buffer.alloc(0)
let used = POOL

function nextNonce(): Buffer {
  if (used >= pool.length) {
    pool = randomBytes(POOL)
    used = 0
  }
  used += NONCE_BYTES
  // A copy: createCipheriv may keep a reference, and the pool is replaced, not reused.
  return Buffer.from(pool.subarray(used - NONCE_BYTES, used))
}

/** The key id a sealed value names, or `undefined` for a value that is not sealed. */
export function keyIdOf(value: string): string | undefined {
  if (!value.startsWith(PREFIX)) return undefined
  const end = value.indexOf('.', PREFIX.length)
  if (end < 0) return undefined
  const id = value.slice(PREFIX.length, end)
  return KEY_ID.test(id) ? id : undefined
}

/** Associated data of a session's top-level key. JSON: unambiguous whatever the id or key holds. */
export function fieldContext(sid: string, key: string): string {
  return JSON.stringify(['field', sid, key])
}

/** Associated data of a session's device fields. */
export function deviceContext(sid: string): string {
  return JSON.stringify(['device', sid])
}

// The index id names the key it was made with, so a reader can tell which key a
// session's index entry belongs to; the hash itself reveals nothing of the user id.
function indexIdOf(key: DerivedKey, userId: string): string {
  return `h.${key.id}.${createHmac('sha256', key.index).update(userId).digest('base64url')}`
}

function derive(key: Buffer, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), info, 32))
}

function keyBytes(id: string, key: unknown): Buffer {
  let bytes: Buffer | undefined
  if (key instanceof Uint8Array) bytes = Buffer.from(key)
  else if (typeof key === 'string' && /^[A-Za-z0-9+/_-]*={0,2}$/.test(key)) {
    bytes = Buffer.from(key, 'base64')
  }
  if (bytes?.length !== 32) {
    throw new InvalidOptionError(
      `encryption key "${id}" must be 32 bytes (a Buffer, or their base64 or base64url encoding), ${
        bytes ? `not ${bytes.length} bytes` : 'not a base64 string'
      }`,
    )
  }
  return bytes
}
