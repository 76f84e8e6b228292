// What it costs SessionStore to remember what a session was loaded as, held by
// the session object itself (store.ts, Tags): a private field added through a
// base class whose constructor returns its argument, against the non-enumerable
// symbol property it replaced, on express-session's own Session objects.
//
//   node bench/tag-cost.mjs [count]     prints ns per session for each way
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const Session = require('express-session/session/session.js')
const Cookie = require('express-session/session/cookie.js')
const N = Number(process.argv[2] ?? 300_000)
const RECORD =
  '{"cookie":{"originalMaxAge":86400000,"expires":"2026-12-03T00:00:00.000Z","httpOnly":true,"path":"/"},"passport":{"user":"u1"},"views":3}'

/** A Session as express-session makes one from a stored record. */
function session(i) {
  const data = JSON.parse(RECORD)
  data.cookie = new Cookie(data.cookie)
  return new Session({ sessionID: `s${i}` }, data)
}

class Adopt {
  constructor(target) {
    // biome-ignore lint/correctness/noConstructorReturn: the technique measured
    return target
  }
}
class Slot extends Adopt {
  static write(target, value) {
    const slot = #value in target ? target : new Slot(target)
    slot.#value = value
  }
  #value
}
const KEY = Symbol('tag')

const ways = {
  'session only': () => {},
  'symbol property': (s) => Object.defineProperty(s, KEY, { value: 1, writable: true }),
  'private field': (s) => Slot.write(s, 1),
}
// Rounds alternate between the ways, so that the machine's drift and the GC weigh on each alike.
const ROUNDS = 7
const times = Object.fromEntries(Object.keys(ways).map((name) => [name, []]))
for (const tag of Object.values(ways)) for (let i = 0; i < N / 5; i++) tag(session(i)) // warm-up
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, tag] of Object.entries(ways)) {
    const started = process.hrtime.bigint()
    for (let i = 0; i < N; i++) tag(session(i))
    times[name].push(Number(process.hrtime.bigint() - started) / N)
  }
}
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
const alone = median(times['session only'])
for (const [name, ns] of Object.entries(times)) {
  process.stdout.write(
    `${name.padEnd(16)} ${median(ns).toFixed(0).padStart(5)} ns per session, median of ${ROUNDS} rounds (${(median(ns) - alone).toFixed(0)} ns over the session alone)\n`,
  )
}
