// The load generator: raw keep-alive HTTP/1.1 over net sockets, one request in
// flight per connection, a cookie jar per session that follows Set-Cookie like a
// browser does. Runs in its own process (pinned by bench/run.mjs).
//
//   node bench/load.mjs setup <port> <count> <out.json>   creates sessions, writes their cookies
//   node bench/load.mjs run <port> <method> <path> <seconds> <connections> <cookies.json|-> [hot]
//   node bench/load.mjs serve   the same commands as JSON arrays, one a line on stdin
//
// `run` prints one JSON line: { requests, seconds, rps, p50, p99, errors } (latencies in ms).
import { readFileSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { createInterface } from 'node:readline'

const [mode, port, ...rest] = process.argv.slice(2)
// A browser's User-Agent, as sessions record it: its length decides how Redis
// encodes sessionmesh's hash (a value over 64 bytes turns a listpack into a
// hashtable by default), so a short made-up one would flatter the memory figures.
const USER_AGENT =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36'

/** One keep-alive connection that sends a request and resolves with status and Set-Cookie lines. */
class Connection {
  constructor(port) {
    this.socket = connect({ port: Number(port), host: '127.0.0.1', noDelay: true })
    this.buffer = ''
    this.pending = undefined
    this.socket.setEncoding('latin1')
    this.socket.on('data', (chunk) => this.#data(chunk))
    this.socket.on('error', (error) => this.pending?.reject(error))
  }

  request(method, path, cookie) {
    let head = `${method} ${path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: ${USER_AGENT}\r\n`
    if (cookie) head += `Cookie: ${cookie}\r\n`
    if (method === 'POST') head += 'Content-Length: 0\r\n'
    head += '\r\n'
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject }
      this.socket.write(head)
    })
  }

  #data(chunk) {
    this.buffer += chunk
    for (;;) {
      const end = this.buffer.indexOf('\r\n\r\n')
      if (end === -1) return
      const head = this.buffer.slice(0, end)
      const match = /\r\ncontent-length: *(\d+)/i.exec(head)
      const length = match ? Number(match[1]) : 0
      if (this.buffer.length < end + 4 + length) return
      this.buffer = this.buffer.slice(end + 4 + length)
      const status = Number(head.slice(9, 12))
      const cookies = []
      for (const line of head.split('\r\n')) {
        if (line.length > 11 && line.slice(0, 11).toLowerCase() === 'set-cookie:') {
          cookies.push(line.slice(11).trim())
        }
      }
      const pending = this.pending
      this.pending = undefined
      pending?.resolve({ status, cookies })
    }
  }

  close() {
    this.socket.destroy()
  }
}

/** A browser's cookie jar, reduced to what the bench needs: name=value pairs. */
class Jar {
  constructor(header = '') {
    this.values = new Map()
    for (const pair of header.split('; ')) {
      const eq = pair.indexOf('=')
      if (eq > 0) this.values.set(pair.slice(0, eq), pair.slice(eq + 1))
    }
    this.header = header
  }

  update(setCookies) {
    if (setCookies.length === 0) return
    for (const line of setCookies) {
      const pair = line.split(';', 1)[0]
      const eq = pair.indexOf('=')
      const name = pair.slice(0, eq)
      const value = pair.slice(eq + 1)
      if (value === '' || /expires=thu, 01 jan 1970/i.test(line)) this.values.delete(name)
      else this.values.set(name, value)
    }
    this.header = [...this.values].map(([n, v]) => `${n}=${v}`).join('; ')
  }
}

async function setup(port, count, out) {
  const jars = []
  let next = 0
  const worker = async () => {
    const connection = new Connection(port)
    while (next < count) {
      const k = next++
      const jar = new Jar()
      const { cookies } = await connection.request('POST', `/login?user=user${k}`, '')
      jar.update(cookies)
      jars[k] = jar.header
    }
    connection.close()
  }
  await Promise.all(Array.from({ length: 16 }, worker))
  writeFileSync(out, JSON.stringify(jars))
  return {}
}

async function run(port, method, path, seconds, connections, cookieFile, hot) {
  const headers = cookieFile === '-' ? [''] : JSON.parse(readFileSync(cookieFile, 'utf8'))
  const jars = (hot ? headers.slice(0, 1) : headers).map((h) => new Jar(h))
  const latencies = new Float64Array(4_000_000)
  let count = 0
  let errors = 0
  const stopAt = performance.now() + Number(seconds) * 1000
  let started = 0
  const worker = async () => {
    const connection = new Connection(port)
    while (performance.now() < stopAt) {
      const jar = jars.length === 1 ? jars[0] : jars[(Math.random() * jars.length) | 0]
      const t0 = performance.now()
      const { status, cookies } = await connection.request(method, path, jar.header)
      if (status !== 200) errors++
      jar.update(cookies)
      if (count < latencies.length) latencies[count] = performance.now() - t0
      count++
    }
    connection.close()
  }
  started = performance.now()
  await Promise.all(Array.from({ length: Number(connections) }, worker))
  // Clients keep their cookies from one run to the next, as browsers do (the near
  // cache's version cookie among them).
  if (cookieFile !== '-') {
    const kept = hot ? [jars[0].header, ...headers.slice(1)] : jars.map((jar) => jar.header)
    writeFileSync(cookieFile, JSON.stringify(kept))
  }
  const elapsed = (performance.now() - started) / 1000
  const sorted = latencies.subarray(0, Math.min(count, latencies.length)).sort()
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0
  return {
    requests: count,
    seconds: elapsed,
    rps: count / elapsed,
    p50: at(0.5),
    p99: at(0.99),
    errors,
  }
}

/** One command line (`setup …` or `run …`, the arguments as above): its result. */
function perform([command, port, ...args]) {
  if (command === 'setup') return setup(port, Number(args[0]), args[1])
  if (command === 'run') return run(port, ...args.slice(0, 5), args[5] === 'hot')
  throw new Error(`unknown command ${command}`)
}

if (mode === 'serve') {
  // bench/run.mjs keeps one generator for the whole run (a process start per
  // measurement cost more than some measurements): a JSON array of arguments per
  // line on stdin, a JSON result per line on stdout.
  const lines = createInterface({ input: process.stdin })
  for await (const line of lines) {
    process.stdout.write(`${JSON.stringify(await perform(JSON.parse(line)))}\n`)
  }
} else if (mode === 'setup' || mode === 'run') {
  process.stdout.write(`${JSON.stringify(await perform([mode, port, ...rest]))}\n`)
} else {
  process.stderr.write('usage: load.mjs setup|run|serve …\n')
  process.exit(2)
}
