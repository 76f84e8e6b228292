// Measures how many store writes per second one app host gets over its link to
// Redis: runs inside that host's namespace with its REDIS_URL, as the demo
// connects (node-redis, the sessionmesh store with its timeout). Prints one JSON
// line: { ok, failed, perSecond, codes }. Bounded: DURATION_MS (default 3000).

import { randomBytes } from 'node:crypto'
import { createClient } from 'redis'
import { SessionStore } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'

const duration = Number(process.env.DURATION_MS ?? 3_000)
const workers = Number(process.env.WORKERS ?? 32)
const client = createClient({ url: process.env.REDIS_URL })
client.on('error', () => {})
await client.connect()
const store = new SessionStore({
  backend: redisBackend({ client }),
  timeout: Number(process.env.SESSIONMESH_TIMEOUT_MS ?? 300),
})
let ok = 0
let failed = 0
const codes = {}
const started = Date.now()
await Promise.all(
  Array.from({ length: workers }, async () => {
    while (Date.now() - started < duration) {
      const sid = randomBytes(12).toString('base64url')
      try {
        await store.set(sid, {
          cookie: { originalMaxAge: 60_000, path: '/', httpOnly: true },
          n: ok,
        })
        ok++
      } catch (error) {
        failed++
        codes[error.code ?? error.message] = (codes[error.code ?? error.message] ?? 0) + 1
      }
    }
  }),
)
const seconds = (Date.now() - started) / 1_000
process.stdout.write(
  `${JSON.stringify({ ok, failed, perSecond: Math.round(ok / seconds), codes })}\n`,
)
await store.close()
client.destroy()
