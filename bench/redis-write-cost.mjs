// What a session write costs Redis itself: the server CPU (`INFO commandstats`) of
// a read-modify-write through SessionStore, as express-session drives it (get,
// then set with one key changed), against connect-redis doing the same, on a
// private redis-server pinned to a core of its own (core 1; this process on
// core 0) so that nothing else shares its core. `npm run bench` reports the same
// figure with Redis sharing a core with the load generator and nginx, which
// makes it larger. Many sessions, CONCURRENCY calls in flight (a busy shard), in
// rounds that alternate between the two stores. Prints per store the median µs of
// Redis CPU per read-modify-write, the requests/s one Redis core carries at that
// cost, and the ratio to connect-redis.
//
//   node bench/redis-write-cost.mjs      env: ROUNDS (5), CALLS (10000),
//                                        CONCURRENCY (16), SESSIONS (2000)
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RedisStore } from 'connect-redis'
import { createClient } from 'redis'
import { SessionStore } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'
import { findTool, freePort, tools } from '../packages/sessionmesh/dist/cli/system.js'
import { connectWhenUp, pin, REDIS_TOP_LEVEL } from './processes.mjs'

const ROUNDS = Number(process.env.ROUNDS ?? 5)
const CALLS = Number(process.env.CALLS ?? 10_000)
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 16)
const SESSIONS = Number(process.env.SESSIONS ?? 2000)
const DAY = 86_400_000
const USER_AGENT =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36'
// What a logged-in session holds in the other benchmarks: a passport user, a counter, the cookie.
const session = (i, views) => ({
  cookie: { originalMaxAge: DAY, expires: new Date(Date.now() + DAY), httpOnly: true, path: '/' },
  passport: { user: `user${i}` },
  views,
})
const callback = (run) =>
  new Promise((resolve, reject) => run((e, v) => (e ? reject(e) : resolve(v))))

const dir = mkdtempSync(join(tmpdir(), 'sm-write-cost-'))
const port = await freePort()
const bin = findTool(tools.redis)
if (!bin) throw new Error('redis-server is not installed')
const [cmd, args] = pin(1, bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', ''])
const server = spawn(cmd, [...args, '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' })
const client = createClient({ url: `redis://127.0.0.1:${port}` })
client.on('error', () => {})
try {
  await connectWhenUp(client)
  const stores = {
    'connect-redis': new RedisStore({ client, prefix: 'cr:' }),
    'sessionmesh SessionStore': new SessionStore({
      backend: redisBackend({ client, prefix: 'sm:' }),
    }),
  }
  // express-session's request: get, change a key, set. A new session carries its
  // request (not enumerable, as express-session's Session does), whose browser
  // User-Agent SessionStore records on the first save; connect-redis records none.
  const req = { headers: { 'user-agent': USER_AGENT }, ip: '203.0.113.7' }
  for (const store of Object.values(stores)) {
    for (let i = 0; i < SESSIONS; i++) {
      const fresh = Object.defineProperty(session(i, 0), 'req', { value: req, enumerable: false })
      await callback((done) => store.set(`s${i}`, fresh, done))
    }
  }
  const results = Object.fromEntries(Object.keys(stores).map((name) => [name, []]))
  for (let round = 0; round < ROUNDS; round++) {
    const names = Object.keys(stores)
    for (const name of round % 2 ? names.reverse() : names) {
      const store = stores[name]
      await client.configResetStat()
      let next = 0
      const worker = async () => {
        while (next < CALLS) {
          const i = next++ % SESSIONS
          const loaded = await callback((done) => store.get(`s${i}`, done))
          loaded.views += 1
          await callback((done) => store.set(`s${i}`, loaded, done))
        }
      }
      await Promise.all(Array.from({ length: CONCURRENCY }, worker))
      let usec = 0
      for (const match of (await client.info('commandstats')).matchAll(
        /cmdstat_([a-z|]+):calls=\d+,usec=(\d+)/g,
      )) {
        if (REDIS_TOP_LEVEL.has(match[1])) usec += Number(match[2])
      }
      results[name].push(usec / CALLS)
    }
  }
  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
  const peer = median(results['connect-redis'])
  for (const [name, values] of Object.entries(results)) {
    const us = median(values)
    process.stdout.write(
      `${name.padEnd(26)} ${us.toFixed(2).padStart(6)} µs of Redis CPU per read-modify-write  ${Math.round(
        1e6 / us,
      )
        .toLocaleString('en-US')
        .padStart(9)} per Redis core  ${(us / peer).toFixed(1)}× connect-redis\n`,
    )
  }
  await client.flushAll()
} finally {
  await client.close().catch(() => {})
  server.kill('SIGKILL')
  rmSync(dir, { recursive: true, force: true })
}
