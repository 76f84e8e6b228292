// Session writes through a Sentinel group, for the primary-partition test: runs
// inside an app host's namespace with ioredis following the primary Sentinel
// names (`new Redis({ sentinels, name })`) under the sessionmesh store.
//   MODE=write: writes new sessions, 4 at a time, for DURATION_MS; prints
//     { acked: [[sid, ackedAtMs, serverAddress]], failed: [[atMs, code]] }.
//   MODE=read: reads the sessions listed (one sid a line) in SIDS_FILE; prints
//     { missing: [sid] }.
// SENTINELS is `host:port,host:port`; NAME the group; PASSWORD Redis's.

import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Redis } from 'ioredis'
import { SessionStore } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'

const sentinels = process.env.SENTINELS.split(',').map((entry) => {
  const [host, port] = entry.split(':')
  return { host, port: Number(port) }
})
const client = new Redis({
  sentinels,
  name: process.env.NAME,
  password: process.env.PASSWORD,
  // A command sent to a primary that went silent fails instead of waiting forever.
  commandTimeout: 1_000,
  retryStrategy: (times) => Math.min(50 * 2 ** times, 500),
  sentinelRetryStrategy: (times) => Math.min(50 * 2 ** times, 500),
})
client.on('error', () => {})
const store = new SessionStore({ backend: redisBackend({ client }), timeout: 1_500 })

if (process.env.MODE === 'read') {
  const sids = readFileSync(process.env.SIDS_FILE, 'utf8').split('\n').filter(Boolean)
  const missing = []
  for (const sid of sids) if (!(await store.get(sid))) missing.push(sid)
  process.stdout.write(`${JSON.stringify({ missing })}\n`)
} else {
  const duration = Number(process.env.DURATION_MS ?? 10_000)
  const started = Date.now()
  const acked = []
  const failed = []
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (Date.now() - started < duration) {
        const sid = randomBytes(12).toString('base64url')
        try {
          await store.set(sid, { cookie: { originalMaxAge: 600_000, path: '/' }, n: acked.length })
          // Which server the connection that carried it goes to.
          acked.push([sid, Date.now(), client.stream?.remoteAddress ?? null])
        } catch (error) {
          failed.push([Date.now(), error.code ?? error.message])
          await new Promise((done) => setTimeout(done, 50))
        }
      }
    }),
  )
  process.stdout.write(`${JSON.stringify({ acked, failed })}\n`)
}
await store.close()
client.disconnect()
