// Two or more configurations of bench/server.mjs side by side, measured in short
// runs that alternate between them (A B C, C B A, …), so that the machine's speed,
// which drifts on a shared host, weighs on each alike. Prints, per configuration,
// the median throughput, server CPU per request, and the median of each round's
// ratio to the first configuration. A quicker and steadier look at one comparison
// than `npm run bench`, which measures everything. Also prints the backend calls
// (round trips) per request of the sessionmesh middleware configurations.
//
//   node bench/pair.mjs none sm-near [more…]    env: ROUNDS (8), SECONDS (1.5),
//        CONNECTIONS (16), METHOD (GET), ROUTE (/ro), SESSIONS (1), REDIS_URL
//
// Uses the machine's Redis (127.0.0.1:6379 unless REDIS_URL), under each
// configuration's prefix, and removes what it wrote there at the end; not the
// configurations that need a cluster or a database of their own (sm-cluster, SQL).
// Pins servers to core 0 and the load generator to core 1 when it can.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { get } from 'node:http'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pin, removeWritten, startServer } from './processes.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const ROUNDS = Number(process.env.ROUNDS ?? 8)
const SECONDS = process.env.SECONDS ?? '1.5'
const CONNECTIONS = process.env.CONNECTIONS ?? '16'
const METHOD = process.env.METHOD ?? 'GET'
const ROUTE = process.env.ROUTE ?? '/ro'
const SESSIONS = process.env.SESSIONS ?? '1'
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const configs = process.argv.slice(2)
if (configs.length < 2) {
  process.stderr.write(
    'usage: node bench/pair.mjs <config> <config> [...] (see bench/server.mjs)\n',
  )
  process.exit(2)
}

/** CPU time (user + system) of a process so far, in µs, from /proc. */
function cpuOf(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) * 10_000
}

async function start(config) {
  const server = await startServer(config, [config === 'none' ? '-' : REDIS_URL])
  return { config, child: server.child, port: String(server.port), runs: [] }
}

function load(args) {
  const [cmd, rest] = pin(1, process.execPath, [join(here, 'load.mjs'), ...args])
  return JSON.parse(execFileSync(cmd, rest, { encoding: 'utf8' }))
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/** The backend calls a sessionmesh configuration has sent so far (bench/server.mjs /__stats), else null. */
async function backendCalls(server) {
  if (server.config === 'none') return null
  // A connection of its own each time: a kept-alive one would have timed out during a run.
  const body = await new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port: server.port, path: '/__stats', agent: false }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => {
        text += chunk
      })
      res.on('end', () => resolve(text))
    }).on('error', reject)
  })
  return JSON.parse(body).backendCalls ?? null
}

const servers = []
try {
  for (const config of configs) servers.push(await start(config))
  for (const server of servers) {
    server.cookies = server.config === 'none' ? '-' : join(tmpdir(), `sm-pair-${server.port}.json`)
    if (server.cookies !== '-') load(['setup', server.port, SESSIONS, server.cookies])
    load(['run', server.port, METHOD, ROUTE, '2', CONNECTIONS, server.cookies, 'hot'])
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const server of round % 2 ? [...servers].reverse() : servers) {
      const before = cpuOf(server.child.pid)
      const callsBefore = await backendCalls(server)
      const result = load([
        'run',
        server.port,
        METHOD,
        ROUTE,
        SECONDS,
        CONNECTIONS,
        server.cookies,
        'hot',
      ])
      const cpu = (cpuOf(server.child.pid) - before) / result.requests
      const calls = await backendCalls(server)
      const roundTrips = calls === null ? null : (calls - callsBefore) / result.requests
      server.runs.push({ rps: result.rps, cpu, p99: result.p99, roundTrips })
    }
  }
  const [first] = servers
  for (const { config, runs } of servers) {
    const ratio = median(runs.map((run, k) => run.rps / first.runs[k].rps))
    const roundTrips =
      runs[0].roundTrips === null
        ? ''
        : `  round trips/req ${median(runs.map((r) => r.roundTrips)).toFixed(2)}`
    const cpuRatio = median(runs.map((run, k) => first.runs[k].cpu / run.cpu))
    process.stdout.write(
      `${config.padEnd(18)} ${median(runs.map((r) => r.rps))
        .toFixed(0)
        .padStart(6)} req/s  ${median(runs.map((r) => r.cpu))
        .toFixed(0)
        .padStart(
          4,
        )} µs CPU/req  vs ${first.config}: ${(ratio * 100).toFixed(0)}% (CPU ${(cpuRatio * 100).toFixed(0)}%)  p99 ${median(runs.map((r) => r.p99)).toFixed(1)} ms${roundTrips}\n`,
    )
  }
} finally {
  for (const server of servers) server.child.kill('SIGTERM')
  // The sessions the runs made (a day's TTL) do not stay behind in the shared Redis.
  await removeWritten(
    REDIS_URL,
    configs.filter((c) => c !== 'none'),
  )
}
