// What change notifications cost PostgreSQL's write throughput: many session
// writes in flight at once (CONCURRENCY calls, each a pool connection), through
// the PostgreSQL backend with `notify` off and on (on: each write's event follows
// its commit, batched), and, for reference, the design the backend left: the
// same backend's update with its `pg_notify` inside the write's statement. A
// transaction that notifies takes PostgreSQL's notify lock at commit and holds it
// through the WAL flush, so such commits flush one at a time. Spread over SESSIONS
// sessions (row locks apart) and on one hot session (every write waits for the
// row anyway). Rounds alternate the order; prints the median writes/s of each.
//
//   node bench/pg-notify.mjs      env: ROUNDS (4), CALLS (3000), CONCURRENCY (16),
//                                      SESSIONS (500), BENCH_PG_URL
//
// Uses tables of its own and drops them at the end.
import pg from 'pg'
import { migratePostgres, postgresBackend } from 'sessionmesh/postgres'

const PG_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const ROUNDS = Number(process.env.ROUNDS ?? 4)
const CALLS = Number(process.env.CALLS ?? 3000)
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 16)
const SESSIONS = Number(process.env.SESSIONS ?? 500)
const DAY = 86_400_000
const table = 'sm_bench_notify'

const pool = new pg.Pool({ connectionString: PG_URL, max: CONCURRENCY + 2 })
const write = (mode, views) => {
  const now = Date.now()
  return {
    mode,
    set: { views: String(views) },
    unset: [],
    replace: false,
    now,
    expiresAt: now + DAY,
    maxLifetime: 0,
    userId: 'user1',
    device: {},
  }
}

// The backend's own update with the notification inside it, as before: a pool
// whose update statement is rewritten on the way to PostgreSQL.
const inside = {
  query(statement) {
    const text = statement.text
    if (!text.startsWith('UPDATE')) return pool.query(statement)
    const values = [...statement.values, `${table}_events`, `{"v":1,"type":"changed"}`]
    const n = values.length
    return pool.query({
      name: 'sm_bench_notify_inside',
      text: `WITH w AS (${text}) SELECT pg_notify($${n - 1}::text, $${n}::text) FROM w`,
      values,
    })
  },
  connect: () => pool.connect(),
}

const configs = {
  'notify off': postgresBackend({ pool, table, notify: false, cleanupInterval: 0 }),
  'notify on (after the commit)': postgresBackend({ pool, table, cleanupInterval: 0 }),
  'notify inside the write (before)': postgresBackend({
    pool: inside,
    table,
    notify: false,
    cleanupInterval: 0,
  }),
}

/** Writes/s of `backend` updating `sessions` sessions, CONCURRENCY at a time. */
async function measure(backend, sessions) {
  let next = 0
  const started = performance.now()
  const worker = async () => {
    while (next < CALLS) {
      const i = next++
      const result = await backend.write(`s${i % sessions}`, write('update', i))
      if (result !== 'ok') throw new Error(`a write answered ${result}`)
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  return (CALLS * 1000) / (performance.now() - started)
}

try {
  await migratePostgres(pool, { table })
  const setup = configs['notify off']
  for (let i = 0; i < SESSIONS; i++) await setup.write(`s${i}`, write('create', 0))
  for (const sessions of [SESSIONS, 1]) {
    const results = Object.fromEntries(Object.keys(configs).map((name) => [name, []]))
    for (let round = 0; round < ROUNDS; round++) {
      const names = Object.keys(configs)
      for (const name of round % 2 ? names.reverse() : names) {
        results[name].push(await measure(configs[name], sessions))
      }
    }
    const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
    const off = median(results['notify off'])
    process.stdout.write(
      `${sessions} session${sessions === 1 ? '' : 's'}, ${CONCURRENCY} writes in flight:\n`,
    )
    for (const [name, values] of Object.entries(results)) {
      const rate = median(values)
      process.stdout.write(
        `  ${name.padEnd(34)} ${Math.round(rate).toLocaleString('en-US').padStart(7)} writes/s  ${((rate / off) * 100).toFixed(0).padStart(4)}% of notify off\n`,
      )
    }
  }
} finally {
  for (const backend of Object.values(configs)) await backend.close()
  await pool.query(`DROP TABLE IF EXISTS ${table}`)
  await pool.end()
}
