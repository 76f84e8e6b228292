// One benchmark configuration in its own process: `node bench/server.mjs <config> <redisUrl>`.
// Prints `listening <port>` when ready. Routes:
//   POST /login?user=…   creates a session with a passport user (so the user index is used)
//   GET  /ro             reads the session
//   POST /rmw            reads, changes and saves one key
//   GET  /__stats        near cache counters and heap
import express from 'express'
import expressSession from 'express-session'
import { createClient } from 'redis'
import { SessionStore } from 'sessionmesh'
import { session } from 'sessionmesh/express'
import { redisBackend } from 'sessionmesh/redis'

const [config, redisUrl] = process.argv.slice(2)
// The bench machine may be shared: a CPU stall must not be measured as an outage,
// so sessionmesh's per-call timeout is raised from its 300 ms default.
const guard = { timeout: 5_000 }
const common = {
  secret: 'bench secret',
  resave: false,
  saveUninitialized: false,
  cookie: { maxAge: 86_400_000 },
}

const app = express()
app.disable('x-powered-by')
app.disable('etag')
let middleware
const client =
  config === 'none' || config === 'es-memory' ? undefined : createClient({ url: redisUrl })
client?.on('error', () => {})
await client?.connect()

switch (config) {
  case 'none':
    break
  case 'es-memory':
    middleware = expressSession({ ...common, store: new expressSession.MemoryStore() })
    break
  case 'es-connect-redis': {
    const { RedisStore } = await import('connect-redis')
    middleware = expressSession({ ...common, store: new RedisStore({ client, prefix: 'cr:' }) })
    break
  }
  case 'es-sm-store':
    middleware = expressSession({
      ...common,
      store: new SessionStore({
        backend: redisBackend({ client, prefix: `${config}:` }),
        ...guard,
      }),
    })
    break
  case 'sm':
    middleware = session({
      ...common,
      ...guard,
      backend: redisBackend({ client, prefix: `${config}:` }),
    })
    break
  case 'sm-near':
    middleware = session({
      ...common,
      ...guard,
      backend: redisBackend({ client, prefix: `${config}:` }),
      nearCache: true,
    })
    await middleware.ready
    break
  default:
    throw new Error(`unknown config ${config}`)
}
if (middleware) app.use(middleware)

app.post('/login', (req, res) => {
  const user = String(req.query.user)
  if (req.session) req.session.passport = { user }
  res.json({ user })
})
app.get('/ro', (req, res) => {
  res.json({ user: req.session?.passport?.user ?? null })
})
app.post('/rmw', (req, res) => {
  if (!req.session) return res.json({ views: 0 })
  req.session.views = (req.session.views ?? 0) + 1
  res.json({ views: req.session.views })
})
app.get('/__stats', (_req, res) => {
  res.json({ near: middleware?.nearCacheStats?.() ?? null, heap: process.memoryUsage().heapUsed })
})

const server = app.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`)
})
process.on('SIGTERM', () => process.exit(0))
