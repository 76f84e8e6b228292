// The cost of encryption at rest: ops/s of the store's load and of a one-key
// change (load, change, delta save), with and without `encryption`, over the
// memory backend (the CPU cost alone) and a Redis (REDIS_URL, default the local
// one at 127.0.0.1:6379). Not a test; run it on a quiet machine:
//
//   npm run build && node bench/encryption.mjs        (BENCH_SECONDS=2, BENCH_CONCURRENCY=16)
//
// It writes under a prefix of its own and removes it afterwards.
import { randomBytes } from 'node:crypto'
import { createClient } from 'redis'
import { SessionStore } from 'sessionmesh'
import { memoryBackend } from 'sessionmesh/memory'
import { redisBackend } from 'sessionmesh/redis'

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2)
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16)
const SESSIONS = 1000
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const encryption = { keys: [{ id: 'k1', key: randomBytes(32) }] }

// A typical logged-in session: passport, a cart, a few flags (about 600 bytes of JSON).
const sessionOf = (i) => ({
  cookie: { originalMaxAge: 86_400_000, path: '/', httpOnly: true },
  passport: { user: `user-${i % 100}` },
  cart: Array.from({ length: 8 }, (_, k) => ({ sku: `sku-${k}`, qty: k + 1, price: 9.99 })),
  prefs: { theme: 'dark', lang: 'en-GB', tz: 'Europe/London' },
  visits: 0,
})

async function measure(store, op) {
  const ids = Array.from(
    { length: SESSIONS },
    (_, i) => `bench-${i}-${randomBytes(8).toString('hex')}`,
  )
  for (const [i, id] of ids.entries()) await store.set(id, sessionOf(i))
  let done = 0
  let next = 0
  const until = performance.now() + SECONDS * 1000
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < until) {
        const id = ids[next++ % SESSIONS]
        const data = await store.get(id)
        if (op === 'change') {
          data.visits += 1
          await store.set(id, data)
        }
        done++
      }
    }),
  )
  return Math.round(done / SECONDS)
}

const rows = []
const client = await createClient({ url }).connect()
const prefix = `bench-enc-${process.pid}:`
try {
  const backends = [
    ['memory', () => memoryBackend()],
    [`redis (${url})`, () => redisBackend({ client, prefix })],
  ]
  for (const [name, make] of backends) {
    for (const op of ['load', 'change']) {
      const plain = await measure(new SessionStore({ backend: make() }), op)
      const sealed = await measure(new SessionStore({ backend: make(), encryption }), op)
      rows.push({ backend: name, op, plain, sealed })
    }
  }
} finally {
  await redisBackend({ client, prefix }).clear()
  client.destroy()
}

console.log(`| backend | operation | ops/s plain | ops/s encrypted | encrypted / plain |`)
console.log(`| --- | --- | ---: | ---: | ---: |`)
for (const { backend, op, plain, sealed } of rows) {
  const label = op === 'load' ? 'load' : 'load + change one key + save'
  console.log(
    `| ${backend} | ${label} | ${plain} | ${sealed} | ${Math.round((sealed / plain) * 100)}% |`,
  )
}
console.log(
  `\n${SECONDS} s each, ${CONCURRENCY} in flight, ${SESSIONS} sessions, Node ${process.version}.`,
)
