// One benchmark configuration in its own process:
// `node bench/server.mjs <config> <redisUrl|-> [<clusterUrl>]` (sm-cluster uses the
// cluster, as redis+cluster://host:port,…; `-` for the configurations without Redis).
// Prints `listening <port>` when ready. Routes:
//   POST /login?user=…   creates a session with a passport user (so the user index is used)
//   GET  /ro             reads the session
//   POST /rmw            reads, changes and saves one key
//   GET  /__stats        near cache counters, heap, SQL statements and sessionmesh backend calls sent, CPU used
import express from 'express'
import expressSession from 'express-session'
import { Cluster } from 'ioredis'
import { createClient } from 'redis'
import { SessionStore } from 'sessionmesh'
import { session } from 'sessionmesh/express'
import { parseRedisUrl, redisBackend } from 'sessionmesh/redis'
import { tieredBackend } from 'sessionmesh/tiered'

const [config, redisUrl, clusterUrl] = process.argv.slice(2)
const PG_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const MYSQL_URL = process.env.BENCH_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'
// The bench machine may be shared: a CPU stall must not be measured as an outage,
// so sessionmesh's per-call timeout is raised from its 300 ms default.
const guard = { timeout: 5_000 }
const common = {
  secret: 'bench secret',
  resave: false,
  saveUninitialized: false,
  cookie: { maxAge: 86_400_000 },
}

// The SQL configurations count the statements they send, as the Redis ones count
// commands; each uses a table of its own, dropped when the process stops.
let sqlStatements = 0
let dropTable = async () => {}
const table = `sm_bench_${config.replaceAll('-', '_')}`

async function sqlBackend(kind) {
  if (kind === 'mysql') {
    const { createPool } = await import('mysql2/promise')
    const pool = counting(createPool({ uri: MYSQL_URL, connectionLimit: 16 }))
    const { migrateMysql, mysqlBackend } = await import('sessionmesh/mysql')
    await migrateMysql(pool, { table })
    dropTable = () => pool.query(`DROP TABLE IF EXISTS ${table}`)
    return mysqlBackend({ pool, table })
  }
  const { default: pg } = await import('pg')
  const pool = counting(new pg.Pool({ connectionString: PG_URL, max: 16 }))
  const { migratePostgres, postgresBackend } = await import('sessionmesh/postgres')
  await migratePostgres(pool, { table })
  dropTable = () => pool.query(`DROP TABLE IF EXISTS ${table}`)
  return postgresBackend({ pool, table })
}

// The sessionmesh configurations count the backend calls they make: each is one
// round trip (a script's own commands run inside it), whatever Redis runs for it.
let backendCalls = 0
const CALLS = ['get', 'write', 'writeAndRead', 'writeLimited', 'touch', 'destroy']

function counted(backend) {
  for (const name of CALLS) {
    const call = backend[name]
    if (typeof call !== 'function') continue
    backend[name] = (...args) => {
      backendCalls++
      return call.apply(backend, args)
    }
  }
  return backend
}

// Plain queries and prepared statements (mysql2's execute) alike.
function counting(pool) {
  for (const method of ['query', 'execute']) {
    const call = pool[method]?.bind(pool)
    if (!call) continue
    pool[method] = (...args) => {
      sqlStatements++
      return call(...args)
    }
  }
  return pool
}

const app = express()
app.disable('x-powered-by')
app.disable('etag')
let middleware
const client = redisUrl === '-' ? undefined : createClient({ url: redisUrl })
client?.on('error', () => {})
await client?.connect()
// The cluster configuration: ioredis, as docs/redis-cluster.md recommends.
let cluster
if (config === 'sm-cluster') {
  const target = parseRedisUrl(clusterUrl)
  cluster = new Cluster(target.nodes, { retryDelayOnFailover: 200 })
  await new Promise((resolve) => cluster.once('ready', resolve))
}

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
        backend: counted(redisBackend({ client, prefix: `${config}:` })),
        ...guard,
      }),
    })
    break
  case 'sm':
    middleware = session({
      ...common,
      ...guard,
      backend: counted(redisBackend({ client, prefix: `${config}:` })),
    })
    break
  case 'sm-near':
    middleware = session({
      ...common,
      ...guard,
      backend: counted(redisBackend({ client, prefix: `${config}:` })),
      nearCache: true,
    })
    await middleware.ready
    break
  case 'sm-cluster':
    middleware = session({
      ...common,
      ...guard,
      backend: counted(redisBackend({ client: cluster, prefix: `${config}:` })),
    })
    break
  // The stores PostgreSQL and MySQL users would pick instead, under express-session.
  case 'es-pg-simple': {
    const { default: pg } = await import('pg')
    const pool = counting(new pg.Pool({ connectionString: PG_URL, max: 16 }))
    const { default: connectPgSimple } = await import('connect-pg-simple')
    const PgStore = connectPgSimple(expressSession)
    const store = new PgStore({ pool, tableName: table, createTableIfMissing: true })
    dropTable = () => pool.query(`DROP TABLE IF EXISTS ${table}`)
    // The table is created on the first call; make it before any load arrives.
    await new Promise((resolve, reject) => store.get('warm-up', (e) => (e ? reject(e) : resolve())))
    middleware = expressSession({ ...common, store })
    break
  }
  case 'es-mysql-session': {
    const { createPool } = await import('mysql2/promise')
    const pool = counting(createPool({ uri: MYSQL_URL, connectionLimit: 16 }))
    const { default: mysqlSession } = await import('express-mysql-session')
    const MySqlStore = mysqlSession(expressSession)
    const store = new MySqlStore(
      { createDatabaseTable: true, clearExpired: false, schema: { tableName: table } },
      pool,
    )
    await store.onReady()
    dropTable = () => pool.query(`DROP TABLE IF EXISTS ${table}`)
    middleware = expressSession({ ...common, store })
    break
  }
  case 'sm-postgres':
  case 'sm-mysql':
  case 'sm-tiered': {
    const durable = await sqlBackend(config === 'sm-mysql' ? 'mysql' : 'postgres')
    const backend =
      config === 'sm-tiered'
        ? tieredBackend({ cache: counted(redisBackend({ client, prefix: `${config}:` })), durable })
        : durable
    middleware = session({ ...common, ...guard, backend })
    break
  }
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
  res.json({
    near: middleware?.nearCacheStats?.() ?? null,
    heap: process.memoryUsage().heapUsed,
    sqlStatements,
    // null: this configuration's round trips are counted on the Redis server.
    backendCalls: config.startsWith('sm') ? backendCalls : null,
    cpu: process.cpuUsage(),
  })
})

const server = app.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`)
})
process.on('SIGTERM', () => {
  dropTable().then(
    () => process.exit(0),
    () => process.exit(0),
  )
})
