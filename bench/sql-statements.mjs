// What a session read and a read-modify-write cost in the database alone, without
// HTTP: sessionmesh's SessionStore over its SQL backend with prepared statements
// (the default) and without (`prepare: false`), and the store its users would pick
// instead (connect-pg-simple, express-mysql-session). One session, one call at a
// time (the latency a request waits for), in rounds that alternate between the
// three so that the machine's drift weighs on each alike. Prints the median per
// round and the ratio to the peer.
//
//   node bench/sql-statements.mjs postgres|mysql   env: ROUNDS (6), CALLS (400),
//                                                   BENCH_PG_URL, BENCH_MYSQL_URL
//
// Uses tables of its own in that database and drops them at the end.
import connectPgSimple from 'connect-pg-simple'
import expressMysqlSession from 'express-mysql-session'
import expressSession from 'express-session'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { SessionStore } from 'sessionmesh'
import { migrateMysql, mysqlBackend } from 'sessionmesh/mysql'
import { migratePostgres, postgresBackend } from 'sessionmesh/postgres'

const kind = process.argv[2]
if (kind !== 'postgres' && kind !== 'mysql') {
  process.stderr.write('usage: node bench/sql-statements.mjs postgres|mysql\n')
  process.exit(2)
}
const PG_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const MYSQL_URL = process.env.BENCH_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'
const ROUNDS = Number(process.env.ROUNDS ?? 6)
const CALLS = Number(process.env.CALLS ?? 400)
const tables = { prepared: 'sm_bench_stmt_prepared', unprepared: 'sm_bench_stmt_plain' }
const peerTable = 'sm_bench_stmt_peer'

const pool =
  kind === 'postgres'
    ? new pg.Pool({ connectionString: PG_URL, max: 4 })
    : mysql.createPool({ uri: MYSQL_URL, connectionLimit: 4 })
const callback = (run) =>
  new Promise((resolve, reject) => run((e, v) => (e ? reject(e) : resolve(v))))

const stores = {}
for (const [name, table] of Object.entries(tables)) {
  const prepare = name === 'prepared'
  let backend
  if (kind === 'postgres') {
    await migratePostgres(pool, { table })
    backend = postgresBackend({ pool, table, cleanupInterval: 0, prepare })
  } else {
    await migrateMysql(pool, { table })
    backend = mysqlBackend({ pool, table, cleanupInterval: 0, prepare })
  }
  stores[`sessionmesh, ${name}`] = new SessionStore({ backend })
}
let peerName
if (kind === 'postgres') {
  peerName = 'connect-pg-simple'
  const PgStore = connectPgSimple(expressSession)
  stores[peerName] = new PgStore({ pool, tableName: peerTable, createTableIfMissing: true })
} else {
  peerName = 'express-mysql-session'
  const MySqlStore = expressMysqlSession(expressSession)
  const store = new MySqlStore(
    { createDatabaseTable: true, clearExpired: false, schema: { tableName: peerTable } },
    pool,
  )
  await store.onReady()
  stores[peerName] = store
}
const session = () => ({
  cookie: {
    originalMaxAge: 86_400_000,
    expires: new Date(Date.now() + 86_400_000),
    httpOnly: true,
    path: '/',
  },
  passport: { user: 'alice' },
  views: 0,
})
for (const store of Object.values(stores))
  await callback((done) => store.set('bench', session(), done))

/** µs per call of `op`, CALLS calls one after another. */
async function perCall(op) {
  const started = process.hrtime.bigint()
  for (let i = 0; i < CALLS; i++) await op(i)
  return Number(process.hrtime.bigint() - started) / 1000 / CALLS
}

const read = (store) => () => callback((done) => store.get('bench', done))
const readModifyWrite = (store) => async (i) => {
  const loaded = await callback((done) => store.get('bench', done))
  loaded.views = i
  await callback((done) => store.set('bench', loaded, done))
}

const names = Object.keys(stores)
const runs = {
  read: Object.fromEntries(names.map((name) => [name, []])),
  'read-modify-write': Object.fromEntries(names.map((name) => [name, []])),
}
for (let round = 0; round < ROUNDS; round++) {
  const order = round % 2 === 0 ? names : [...names].reverse()
  for (const [scenario, op] of [
    ['read', read],
    ['read-modify-write', readModifyWrite],
  ]) {
    for (const name of order) {
      runs[scenario][name].push(await perCall(op(stores[name])))
    }
  }
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}
for (const [scenario, byStore] of Object.entries(runs)) {
  const peer = byStore[peerName]
  process.stdout.write(`\n${scenario}, one call at a time (${ROUNDS} rounds × ${CALLS} calls)\n`)
  for (const name of names) {
    const ratios = byStore[name].map((us, round) => peer[round] / us)
    process.stdout.write(
      `  ${name.padEnd(26)} ${median(byStore[name]).toFixed(0).padStart(6)} µs/call` +
        `   speed vs ${peerName}: ${(median(ratios) * 100).toFixed(0)}%\n`,
    )
  }
}

for (const table of [...Object.values(tables), peerTable]) {
  await pool.query(`DROP TABLE IF EXISTS ${table}`)
}
await pool.end()
