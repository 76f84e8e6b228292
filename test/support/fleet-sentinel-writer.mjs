// Session writes through a Sentinel group, for the primary-partition test: runs
// inside an app host's namespace with the demo's own Redis client for REDIS_URL
// (`redis+sentinel://:PASSWORD@S1:26379,…/NAME`, examples/chat/redis.js: ioredis
// following the sentinels) under the sessionmesh store, as the demo runs it.
//   MODE=write: writes new sessions, 4 at a time, for DURATION_MS from its first
//     acknowledged write (then it creates READY_FILE, if given); prints
//     { acked: [[sid, ackedAtMs, serverAddress, sentAtMs]], failed: [[atMs, code: cause]] }.
//   MODE=read: reads the sessions listed (one sid a line) in SIDS_FILE; prints
//     { missing: [sid] }.

import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { SessionStore } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'
import { connectSessionClient } from '../../examples/chat/redis.js'

const redis = await connectSessionClient(process.env.REDIS_URL, { onError: () => {} })
const client = redis.client
const store = new SessionStore({ backend: redisBackend({ client }), timeout: 1_500 })

if (process.env.MODE === 'read') {
  const sids = readFileSync(process.env.SIDS_FILE, 'utf8').split('\n').filter(Boolean)
  const missing = []
  for (const sid of sids) if (!(await store.get(sid))) missing.push(sid)
  process.stdout.write(`${JSON.stringify({ missing })}\n`)
} else {
  const duration = Number(process.env.DURATION_MS ?? 10_000)
  const acked = []
  const failed = []
  // The clock starts at the first acknowledged write (or at once, if none comes
  // within a second: a node that refuses every write is a case of its own).
  const first = { cookie: { originalMaxAge: 600_000, path: '/' }, n: 0 }
  const firstSid = randomBytes(12).toString('base64url')
  try {
    const sentAt = Date.now()
    await store.set(firstSid, first)
    acked.push([firstSid, Date.now(), client.stream?.remoteAddress ?? null, sentAt])
  } catch (error) {
    failed.push([Date.now(), reason(error)])
  }
  if (process.env.READY_FILE) writeFileSync(process.env.READY_FILE, '')
  const started = Date.now()
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (Date.now() - started < duration) {
        const sid = randomBytes(12).toString('base64url')
        const sentAt = Date.now()
        try {
          await store.set(sid, { cookie: { originalMaxAge: 600_000, path: '/' }, n: acked.length })
          // Which server the connection that carried it goes to.
          acked.push([sid, Date.now(), client.stream?.remoteAddress ?? null, sentAt])
        } catch (error) {
          failed.push([Date.now(), reason(error)])
          await new Promise((done) => setTimeout(done, 50))
        }
      }
    }),
  )
  process.stdout.write(`${JSON.stringify({ acked, failed })}\n`)
}
await store.close()
redis.close()

/** The error's code, and what Redis or the client said (NOREPLICAS, READONLY, a timeout). */
function reason(error) {
  const cause = error.cause instanceof Error ? `: ${error.cause.message.slice(0, 60)}` : ''
  return `${error.code ?? error.message}${cause}`
}
