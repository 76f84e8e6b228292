// The session layer's own CPU cost per request, without sockets or a load
// generator: Express handles real IncomingMessage/ServerResponse objects over a
// socket that discards what is written, N times in a row, in this one process.
// Prints CPU µs per request for each configuration and no session's share of it:
// the ceiling of the throughput ratio `npm run bench` can measure, and a profile
// target (`node --cpu-prof bench/overhead.mjs`) free of socket and scheduler noise.
//
//   node bench/overhead.mjs [requests]     (needs the local Redis, 127.0.0.1:6379)
import { IncomingMessage, ServerResponse } from 'node:http'
import { Duplex } from 'node:stream'
import { RedisStore } from 'connect-redis'
import express from 'express'
import expressSession from 'express-session'
import { createClient } from 'redis'
import { SessionStore } from 'sessionmesh'
import { session } from 'sessionmesh/express'
import { redisBackend } from 'sessionmesh/redis'

const N = Number(process.argv[2] ?? 20_000)
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379'

class NullSocket extends Duplex {
  _read() {}
  _write(_chunk, _encoding, done) {
    done()
  }
  _writev(_chunks, done) {
    done()
  }
}

/** One request through `app`; resolves with the response's status and Set-Cookie. */
function request(app, method, path, cookie) {
  const socket = new NullSocket()
  const req = new IncomingMessage(socket)
  req.method = method
  req.url = path
  req.headers = { host: 'bench', 'user-agent': 'bench/1.0', ...(cookie ? { cookie } : {}) }
  req.push(null)
  const res = new ServerResponse(req)
  res.assignSocket(socket)
  return new Promise((resolve, reject) => {
    res.once('finish', () =>
      resolve({ status: res.statusCode, cookies: res.getHeader('set-cookie') }),
    )
    res.once('error', reject)
    app(req, res)
  })
}

function jar(cookies, previous = '') {
  const values = new Map(previous ? previous.split('; ').map((p) => p.split('=')) : [])
  for (const line of [cookies ?? []].flat()) {
    const [pair] = line.split(';')
    const at = pair.indexOf('=')
    values.set(pair.slice(0, at), pair.slice(at + 1))
  }
  return [...values].map(([n, v]) => `${n}=${v}`).join('; ')
}

const client = createClient({ url: REDIS_URL })
await client.connect()
const common = {
  secret: 'bench secret',
  resave: false,
  saveUninitialized: false,
  cookie: { maxAge: 86_400_000 },
}

function appWith(middleware) {
  const app = express()
  app.disable('x-powered-by')
  app.disable('etag')
  if (middleware) app.use(middleware)
  app.post('/login', (req, res) => {
    req.session.passport = { user: 'user1' }
    res.json({ ok: true })
  })
  app.get('/ro', (req, res) => res.json({ user: req.session?.passport?.user ?? null }))
  app.post('/rmw', (req, res) => {
    if (!req.session) return res.json({ views: 0 })
    req.session.views = (req.session.views ?? 0) + 1
    res.json({ views: req.session.views })
  })
  return app
}

const configs = {
  none: () => undefined,
  'sm-near': async () => {
    const m = session({
      ...common,
      backend: redisBackend({ client, prefix: 'ovh:' }),
      nearCache: true,
    })
    await m.ready
    return m
  },
  sm: () => session({ ...common, backend: redisBackend({ client, prefix: 'ovh:' }) }),
  'es-memory': () => expressSession({ ...common, store: new expressSession.MemoryStore() }),
  'es-connect-redis': () =>
    expressSession({ ...common, store: new RedisStore({ client, prefix: 'ovh-cr:' }) }),
  'es-sm-store': () =>
    expressSession({
      ...common,
      store: new SessionStore({ backend: redisBackend({ client, prefix: 'ovh-store:' }) }),
    }),
}

const only = process.env.ONLY?.split(',')
const results = {}
for (const [name, make] of Object.entries(configs)) {
  if (only && !only.includes(name)) continue
  const app = appWith(await make())
  let cookie = ''
  if (name !== 'none') cookie = jar((await request(app, 'POST', '/login', '')).cookies)
  for (const [method, path] of [
    ['GET', '/ro'],
    ['POST', '/rmw'],
  ].filter(([, path]) => !process.env.PATHS || process.env.PATHS.split(',').includes(path))) {
    for (let i = 0; i < 2000; i++)
      cookie = jar((await request(app, method, path, cookie)).cookies, cookie)
    const cpu = process.cpuUsage()
    const t0 = performance.now()
    for (let i = 0; i < N; i++)
      cookie = jar((await request(app, method, path, cookie)).cookies, cookie)
    const used = process.cpuUsage(cpu)
    const wall = performance.now() - t0
    results[`${name} ${method} ${path}`] = {
      cpuUs: (used.user + used.system) / N,
      wallUs: (wall * 1000) / N,
    }
  }
}
for (const [key, r] of Object.entries(results)) {
  const base = results[`none ${key.split(' ').slice(1).join(' ')}`]
  const ratio = base
    ? `  no session's cost is ${((base.cpuUs / r.cpuUs) * 100).toFixed(0)}% of this`
    : ''
  console.log(
    `${key.padEnd(22)} CPU ${r.cpuUs.toFixed(1).padStart(6)} µs/req  wall ${r.wallUs.toFixed(1).padStart(6)} µs/req${ratio}`,
  )
}
// The sessions this run wrote (a day's TTL) do not stay behind in the shared Redis.
await redisBackend({ client, prefix: 'ovh:' }).clear()
await redisBackend({ client, prefix: 'ovh-store:' }).clear()
for await (const keys of client.scanIterator({ MATCH: 'ovh-cr:*' }))
  if (keys.length) await client.del(keys)
await client.quit()
process.exit(0)
