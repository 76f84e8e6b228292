// A session's data keys as its hash stores them: '.' + key, holding the JSON the
// codec made. Two keys nearly every session has are stored shorter, as meta fields:
//
//   k   the cookie, packed with the dictionary below (a default cookie's 54 bytes
//       of JSON are 5)
//   v   the near cache's version, a JSON string stored without its quotes (one of
//       base64url characters, as the engine makes them; any other stays in '.__smv')
//
// With the agent packed (agent.ts) this keeps a session hash in the next smaller
// allocation, 64 bytes less a session. The previous release stored both dotted,
// and those fields are still read. Where a key has both forms, the dotted one is
// the newer: a write of the key deletes the other form, and only a process of the
// previous release writes the dotted one beside a short one (during an upgrade).
import { VERSION_KEY } from '../../core/engine/snapshot.js'
import { Dictionary } from './packing.js'

/**
 * The cookie's JSON fragments, as express-session, sessionmesh/express and
 * @fastify/session write it: each attribute's name, common values, and the two
 * pairs nearly every cookie has (see packing.ts).
 */
const COOKIE = new Dictionary([
  '{"originalMaxAge":',
  ',"expires":',
  ',"originalExpires":',
  ',"partitioned":',
  ',"priority":',
  ',"secure":',
  ',"httpOnly":',
  ',"domain":',
  ',"path":',
  ',"sameSite":',
  ',"httpOnly":true',
  ',"path":"/"',
  'null',
  'true',
  'false',
  '"/"',
  '"lax"',
  '"strict"',
  '"none"',
  // maxAge: an hour, a day, a week, two weeks, 30 days.
  '3600000',
  '86400000',
  '604800000',
  '1209600000',
  '2592000000',
])

/** A version as the engine makes them (base64url), in JSON: stored without its quotes. */
const PLAIN_STRING = /^"[\w-]*"$/

/** A data key stored in a short field: its stored form (`undefined`: it stays dotted), and back. */
interface Short {
  key: string
  field: string
  store(value: string): string | undefined
  read(stored: string): string
}

const SHORT: readonly Short[] = [
  {
    key: 'cookie',
    field: 'k',
    store: (value) => COOKIE.pack(value),
    read: (s) => COOKIE.unpack(s),
  },
  {
    key: VERSION_KEY,
    field: 'v',
    store: (value) => (PLAIN_STRING.test(value) ? value.slice(1, -1) : undefined),
    read: (stored) => `"${stored}"`,
  },
]

// A scan of two entries: cheaper than a Map lookup for every field of every read.
function byKey(key: string): Short | undefined {
  for (const short of SHORT) if (short.key === key) return short
  return undefined
}

function byField(name: string): Short | undefined {
  for (const short of SHORT) if (short.field === name) return short
  return undefined
}

/** The fields that may hold data key `key`, the one a write uses first. */
export function namesOf(key: string): string[] {
  const short = byKey(key)
  return short ? [short.field, `.${key}`] : [`.${key}`]
}

/**
 * The forms `value` of data key `key` can be stored in, as [field, stored value]:
 * the first is the one a write stores (and then deletes the key's other fields).
 */
export function formsOf(key: string, value: string): Array<[name: string, stored: string]> {
  const short = byKey(key)
  const stored = short?.store(value)
  if (short === undefined || stored === undefined) return [[`.${key}`, value]]
  return [
    [short.field, stored],
    [`.${key}`, value],
  ]
}

/** The keys with a short field: a write that replaces the data deletes those it does not set. */
export const SHORT_KEYS: readonly string[] = SHORT.map((short) => short.key)

/**
 * When `name` is a short field, puts the data key it holds into `fields`, as the
 * codec made it (unless the key's dotted field, the newer, is already there), and
 * answers true; false for a meta field.
 */
export function readShort(name: string, stored: string, fields: Record<string, string>): boolean {
  const short = byField(name)
  if (short === undefined) return false
  fields[short.key] ??= short.read(stored)
  return true
}

/** A stored value back as the codec made it, from the field `name` it was read from. */
export function codecValue(name: string, stored: string): string {
  const short = byField(name)
  return short === undefined ? stored : short.read(stored)
}
