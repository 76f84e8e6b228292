// Where a benchmark's p99 comes from: runs bench/server.mjs configurations one at a
// time under `node --trace-gc` (server on core 0, load on core 1, one hot session,
// 16 connections) and prints, beside throughput and p99, the young-generation
// collections (scavenges) of the measured run: how many per 1,000 requests, their
// mean and longest pause. A request in flight during a pause waits it out, so
// when pauses come every few hundred requests, p99 is about one pause.
//
//   node bench/gc-pauses.mjs [config…]    default: http none es-connect-redis sm sm-near
//        env: SECONDS (4), METHOD (GET), ROUTE (/ro), REDIS_URL
//
// `http` is node:http with no framework, answering the same JSON, for the floor.
// Uses the machine's Redis under each configuration's prefix and removes what it
// wrote there at the end.
import { execFile } from 'node:child_process'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { pin, removeWritten, startListening } from './processes.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const SECONDS = process.env.SECONDS ?? '4'
const METHOD = process.env.METHOD ?? 'GET'
const ROUTE = process.env.ROUTE ?? '/ro'
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const configs = process.argv.slice(2)
if (configs.length === 0) configs.push('http', 'none', 'es-connect-redis', 'sm', 'sm-near')

const PLAIN_HTTP = `
import { createServer } from 'node:http'
const server = createServer((req, res) => {
  res.setHeader('content-type', 'application/json; charset=utf-8')
  res.end(JSON.stringify({ user: null }))
})
server.listen(0, '127.0.0.1', () => process.stdout.write('listening ' + server.address().port + '\\n'))
`

/** Starts a configuration under --trace-gc; resolves once it listens, collecting its GC log from then on. */
async function start(config) {
  const args =
    config === 'http'
      ? ['--trace-gc', '--input-type=module', '-e', PLAIN_HTTP]
      : ['--trace-gc', join(here, 'server.mjs'), config, config === 'none' ? '-' : REDIS_URL]
  const { child, port } = await startListening(args, config)
  const server = { child, port: String(port), log: '' }
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk) => {
    server.log += chunk
  })
  return server
}

/** Runs bench/load.mjs on core 1; asynchronously, so that the server's GC log keeps flowing meanwhile. */
async function load(args) {
  const [cmd, rest] = pin(1, process.execPath, [join(here, 'load.mjs'), ...args])
  const { stdout } = await promisify(execFile)(cmd, rest, { encoding: 'utf8' })
  return JSON.parse(stdout)
}

/** The scavenges in a --trace-gc log: their pauses in ms. */
function scavenges(log) {
  return [...log.matchAll(/Scavenge [^,]*, ([\d.]+) \/ [\d.]+ ms/g)].map((m) => Number(m[1]))
}

try {
  for (const config of configs) {
    const server = await start(config)
    try {
      const anonymous = config === 'http' || config === 'none'
      const cookies = anonymous ? '-' : join(tmpdir(), `sm-gc-${server.port}.json`)
      if (!anonymous) await load(['setup', server.port, '1', cookies])
      await load(['run', server.port, METHOD, ROUTE, '2', '16', cookies, 'hot'])
      const from = server.log.length
      const result = await load(['run', server.port, METHOD, ROUTE, SECONDS, '16', cookies, 'hot'])
      await new Promise((resolve) => setTimeout(resolve, 200)) // the log's last lines
      const pauses = scavenges(server.log.slice(from))
      const mean = pauses.reduce((a, b) => a + b, 0) / Math.max(1, pauses.length)
      process.stdout.write(
        `${config.padEnd(17)} ${result.rps.toFixed(0).padStart(6)} req/s  p50 ${result.p50.toFixed(2)} ms  p99 ${result.p99.toFixed(2).padStart(5)} ms  scavenges ${((pauses.length / result.requests) * 1000).toFixed(2)}/1k req, mean ${mean.toFixed(1)} ms, longest ${Math.max(0, ...pauses).toFixed(1)} ms\n`,
      )
    } finally {
      server.child.kill('SIGTERM')
    }
  }
} finally {
  await removeWritten(
    REDIS_URL,
    configs.filter((c) => c !== 'http' && c !== 'none'),
  )
}
