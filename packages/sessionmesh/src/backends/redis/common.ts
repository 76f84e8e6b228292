import { createHash } from 'node:crypto'
import {
  MalformedRecordError,
  type ReadWriteResult,
  resealPairs,
  type SessionMeta,
  type StoredSession,
  type WriteBasis,
} from '../../core/backend.js'
import { packAgent, unpackAgent } from './agent.js'
import type { Send } from './client.js'
import { codecValue, formsOf, namesOf, readShort, SHORT_KEYS } from './fields.js'

/** Options both layouts share, resolved. */
export interface Layout {
  prefix: string
  tombstoneTtl: string
  buckets: number
}

/** Where a session lives. */
export function sessionKey(prefix: string, sid: string): string {
  return `${prefix}s:${sid}`
}

/** Where a destroyed session's tombstone lives on one server: its own key, as in the previous release. */
export function tombstoneKey(prefix: string, sid: string): string {
  return `${prefix}t:${sid}`
}

/** The user index bucket of `uid`: the same function as `bucket()` in lua.ts. */
export function bucketKey(layout: Layout, uid: string): string {
  const digest = createHash('sha1').update(uid).digest('hex')
  return `${layout.prefix}ix:${Number.parseInt(digest.slice(0, 8), 16) % layout.buckets}`
}

/** Replies that mean the server is there but cannot serve now: an outage, not a bug. */
const UNAVAILABLE_REPLIES =
  /^(LOADING|BUSY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|READONLY|NOREPLICAS|LATE)\b/

/** True when `error` means Redis is unreachable or cannot serve (opens the breaker). */
export function isOutage(error: unknown): boolean {
  return !isReply(error) || UNAVAILABLE_REPLIES.test(error.message)
}

/** An error reply from the server (ioredis's ReplyError, node-redis's ErrorReply): the server is up. */
export function isReply(error: unknown): error is Error {
  if (!(error instanceof Error)) return false
  // node-redis leaves `name` as 'Error' on its subclasses, so look at the classes.
  for (let proto = Object.getPrototypeOf(error); proto && proto !== Error.prototype; ) {
    const name = (proto as { constructor?: { name?: string } }).constructor?.name
    if (name === 'ReplyError' || name === 'ErrorReply') return true
    proto = Object.getPrototypeOf(proto)
  }
  return false
}

/** Runs scripts by EVALSHA, falling back to EVAL once when the server does not have one cached. */
export class Scripts {
  readonly #send: Send
  readonly #shas = new Map<string, string>()

  constructor(send: Send) {
    this.#send = send
  }

  async run(source: string, keys: string[], args: string[]): Promise<unknown> {
    let sha = this.#shas.get(source)
    if (!sha) {
      sha = createHash('sha1').update(source).digest('hex')
      this.#shas.set(source, sha)
    }
    const tail = [String(keys.length), ...keys, ...args]
    try {
      return await this.#send(keys[0], ['EVALSHA', sha, ...tail])
    } catch (error) {
      if (!(isReply(error) && /^NOSCRIPT\b/.test(error.message))) throw error
      return this.#send(keys[0], ['EVAL', source, ...tail])
    }
  }
}

/** How often the estimate of Redis's clock is refreshed. */
const CLOCK_REFRESH_MS = 60_000

/**
 * Redis's clock as seen from here, for the deadlines scripts check against `TIME`.
 * The offset kept is the smallest the measurement allows (server time minus the
 * moment the reply arrived), so a deadline converted with it is never later in
 * Redis's terms than the moment this process gives up.
 */
export class ServerClock {
  readonly #send: Send
  #offset: number | undefined
  #measuredAt = 0
  #measuring: Promise<void> | undefined

  constructor(send: Send) {
    this.#send = send
  }

  /** `deadline` (this process's epoch ms) in Redis's clock; '0' for none. */
  async convert(deadline: number | undefined): Promise<string> {
    if (deadline === undefined) return '0'
    if (this.#offset === undefined) await this.#measure()
    else if (Date.now() - this.#measuredAt > CLOCK_REFRESH_MS) this.#measure().catch(() => {})
    return String(Math.floor(deadline + (this.#offset ?? 0)))
  }

  #measure(): Promise<void> {
    this.#measuring ??= (async () => {
      try {
        const reply = (await this.#send(undefined, ['TIME'])) as unknown[]
        const arrived = Date.now()
        const server = Number(reply[0]) * 1000 + Math.floor(Number(reply[1]) / 1000)
        if (Number.isFinite(server)) {
          this.#offset = server - arrived
          this.#measuredAt = arrived
        }
      } finally {
        this.#measuring = undefined
      }
    })()
    return this.#measuring
  }
}

/** HGETALL answers a flat array in RESP2 and a map in RESP3. */
export function toPairs(reply: unknown): Array<[string, string]> {
  if (Array.isArray(reply)) {
    const pairs: Array<[string, string]> = []
    for (let i = 0; i + 1 < reply.length; i += 2)
      pairs.push([String(reply[i]), String(reply[i + 1])])
    return pairs
  }
  if (reply instanceof Map) return [...reply].map(([k, v]) => [String(k), String(v)])
  if (reply && typeof reply === 'object')
    return Object.entries(reply).map(([k, v]) => [k, String(v)])
  return []
}

/** HGETALL's answer as a flat list, name, value, name, value…, whichever protocol answered. */
function flatHash(reply: unknown): readonly unknown[] {
  // RESP2's flat array (node-redis, ioredis) is read as it is, without pairs.
  return Array.isArray(reply) ? reply : toPairs(reply).flat()
}

/** A session hash as the scripts write it, from {@link flatHash}. */
function decodeHash(flat: readonly unknown[]): StoredSession {
  const fields: Record<string, string> = {}
  const raw: Record<string, string> = {}
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const name = String(flat[i])
    const value = String(flat[i + 1])
    // 46 is '.': a data key; the others are the meta fields and the short data
    // fields (fields.ts).
    if (name.charCodeAt(0) === 46) fields[name.slice(1)] = value
    else if (!readShort(name, value, fields)) raw[name] = value
  }
  const createdAt = Number(raw.c)
  const lastSeenAt = Number(raw.l)
  const expiresAt = Number(raw.e)
  if (!Number.isFinite(createdAt) || !Number.isFinite(lastSeenAt) || !Number.isFinite(expiresAt)) {
    throw new MalformedRecordError('the hash lacks its created/last-seen/expiry fields')
  }
  const meta: SessionMeta = { createdAt, lastSeenAt, expiresAt }
  if (raw.u !== undefined) meta.userId = raw.u
  const userAgent = agentOf(raw)
  if (userAgent !== undefined) meta.userAgent = userAgent
  if (raw.i !== undefined) meta.ip = raw.i
  return { fields, meta }
}

/**
 * The user agent from a session's meta fields (see lua.ts): packed in 'A' and the
 * pieces A1, A2, … after it, or as the previous release stored it, in 'a'. Where
 * both are, 'a' is the newer: this release deletes it when it writes 'A', and a
 * process of the previous release writes 'a' alone (a reseal during an upgrade).
 */
function agentOf(raw: Record<string, string>): string | undefined {
  const unpacked = joined(raw, 'a')
  if (unpacked !== undefined) return unpacked
  const packed = joined(raw, 'A')
  return packed === undefined ? undefined : unpackAgent(packed)
}

function joined(raw: Record<string, string>, name: string): string | undefined {
  let value = raw[name]
  if (value === undefined) return undefined
  for (let k = 1; raw[`${name}${k}`] !== undefined; k++) value += raw[`${name}${k}`]
  return value
}

/** Reads a session with HGETALL; a key of another type is a malformed record. */
export async function readSession(send: Send, key: string): Promise<StoredSession | null> {
  let reply: unknown
  try {
    reply = await send(key, ['HGETALL', key])
  } catch (error) {
    if (isReply(error) && /^WRONGTYPE\b/.test(error.message)) {
      throw new MalformedRecordError(
        'the key holds another data type (another library’s format?)',
        {
          cause: error,
        },
      )
    }
    throw error
  }
  const pairs = flatHash(reply)
  // On a cluster a tombstone is the session key holding only 't' (see lua.ts).
  if (pairs.length === 0 || (pairs.length === 2 && String(pairs[0]) === 't')) return null
  return decodeHash(pairs)
}

/** The arguments of a session write from the store's `SessionWrite`, as lua.ts lays them out. */
export function writeArgs(
  prefix: string,
  sid: string,
  write: import('../../core/backend.js').SessionWrite,
  extra: string[],
): string[] {
  const set = Object.entries(write.set)
  const args = [
    prefix,
    sid,
    write.mode,
    write.replace ? '1' : '0',
    String(write.now),
    String(Math.floor(write.expiresAt)),
    String(write.maxLifetime),
    write.userId ?? '',
    write.device.userAgent === undefined ? '' : packAgent(write.device.userAgent),
    write.device.ip ?? '',
    resealArg(write),
    ...extra,
    String(set.length),
  ]
  // Each key set is stored in its first form (fields.ts); its other fields go.
  const unset: string[] = []
  for (const [key, value] of set) {
    const [name, stored] = formsOf(key, value)[0] as [string, string]
    args.push(name, stored)
    for (const other of namesOf(key)) if (other !== name) unset.push(other)
  }
  for (const key of write.unset) unset.push(...namesOf(key))
  // A replace deletes every dotted field itself (lua.ts), the short ones here.
  if (write.replace) {
    for (const key of SHORT_KEYS) if (!(key in write.set)) unset.push(...namesOf(key))
  }
  args.push(...unset)
  return args
}

/** A write's basis as the scripts read it: the field and value it is stored as, or '' twice. */
export function basisArgs(basis: WriteBasis | undefined): [string, string] {
  return basis ? (formsOf(basis.key, basis.value)[0] as [string, string]) : ['', '']
}

/** A write script's answer with a basis, from position `at`: the field before, and the session when another write came first. */
export function basisResult(reply: unknown, at: number, basis: WriteBasis): ReadWriteResult {
  const parts = reply as unknown[]
  const before = String(parts[at] ?? '')
  const previous = before === '' ? undefined : codecValue(basisArgs(basis)[0], before)
  const hash = parts[at + 1]
  if (hash === undefined) return { result: 'ok', previous }
  return { result: 'ok', previous, stored: decodeHash(flatHash(hash)) }
}

/**
 * The write's reseal as the scripts read it: JSON `{ field: [from, to] }`, or ''
 * for none. A key is named in each form it may be stored in: only the form the
 * session holds it in matches its `from`.
 */
function resealArg(write: import('../../core/backend.js').SessionWrite): string {
  if (!write.reseal || write.mode !== 'update') return ''
  const fields: Record<string, [string, string]> = {}
  for (const [key, [from, to]] of Object.entries(resealPairs(write))) {
    const targets = new Map(formsOf(key, to))
    for (const [name, stored] of formsOf(key, from)) {
      const target = targets.get(name)
      if (target !== undefined) fields[name] = [stored, target]
    }
  }
  return JSON.stringify(fields)
}

/** Counts and deletes across every primary with SCAN, never KEYS. */
export async function scanAll(
  primaries: Array<(args: string[]) => Promise<unknown>>,
  pattern: string,
  each: (keys: string[], send: (args: string[]) => Promise<unknown>) => Promise<void>,
): Promise<void> {
  await Promise.all(
    primaries.map(async (send) => {
      let cursor = '0'
      do {
        const reply = (await send(['SCAN', cursor, 'MATCH', pattern, 'COUNT', '500'])) as [
          unknown,
          unknown[],
        ]
        cursor = String(reply[0])
        if (reply[1].length > 0) await each(reply[1].map(String), send)
      } while (cursor !== '0')
    }),
  )
}

/** A row of the listUser answer: id, created, last seen, expires, agent (unpacked), ip, agent (packed). */
export function indexedSession(row: unknown[], userId: string) {
  const [id, created, seen, expires, unpacked, ip, packed] = row.map((v) =>
    v == null ? '' : String(v),
  )
  // As in agentOf: an unpacked agent beside a packed one is the newer.
  const userAgent = unpacked || (packed ? unpackAgent(packed) : '')
  const meta: SessionMeta = {
    createdAt: Number(created),
    lastSeenAt: Number(seen),
    expiresAt: Number(expires),
    userId,
  }
  if (userAgent) meta.userAgent = userAgent
  if (ip) meta.ip = ip
  return { id: id ?? '', meta }
}
