// What one property added to a request costs, in Node's own server and after the
// prototype change Express makes on every request it handles
// (`Object.setPrototypeOf(req, app.request)`): V8 gives each object whose
// prototype was changed map transitions of its own, so each property the session
// layer adds to `req` or `res` (`session`, `sessionID`, `sessionStore`…) is paid
// in microseconds, not nanoseconds. It explains part of what separates a
// near-cache hit from a request with no session (issue 13).
//
//   node bench/prototype-cost.mjs        (12,000 requests per case, over 127.0.0.1)
import http from 'node:http'
import express from 'express'

const REQUESTS = 12_000
const WARMUP = 2_000
const MARK = Symbol('mark')

/** Nanoseconds per request of reading `req.url` and of adding one property to `req`. */
function probe() {
  const totals = { read: 0n, add: 0n }
  let n = 0
  const measure = (req) => {
    const a = process.hrtime.bigint()
    const url = req.url
    const b = process.hrtime.bigint()
    req[MARK] = url
    const c = process.hrtime.bigint()
    if (n++ >= WARMUP) {
      totals.read += b - a
      totals.add += c - b
    }
  }
  const report = () => ({
    read: Number(totals.read) / (n - WARMUP),
    add: Number(totals.add) / (n - WARMUP),
  })
  return { measure, report }
}

async function drive(server) {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${server.address().port}/`
  for (let i = 0; i < REQUESTS; i++) await (await fetch(url)).text()
  await new Promise((resolve) => server.close(resolve))
}

const cases = {
  'node:http': (p) =>
    http.createServer((req, res) => {
      p.measure(req)
      res.end('{}')
    }),
  'node:http + setPrototypeOf': (p) => {
    const proto = Object.create(http.IncomingMessage.prototype)
    return http.createServer((req, res) => {
      Object.setPrototypeOf(req, proto)
      p.measure(req)
      res.end('{}')
    })
  },
  'express 5 middleware': (p) => {
    const app = express()
    app.use((req, _res, next) => {
      p.measure(req)
      next()
    })
    app.get('/', (_req, res) => res.end('{}'))
    return http.createServer(app)
  },
}

// An empty pair of clock readings, to subtract by eye.
let clock = 0n
for (let i = 0; i < 10_000; i++) {
  const a = process.hrtime.bigint()
  clock += process.hrtime.bigint() - a
}
console.log(`a pair of clock readings alone: ${(Number(clock) / 10_000).toFixed(0)} ns`)
for (const [name, make] of Object.entries(cases)) {
  const p = probe()
  await drive(make(p))
  const { read, add } = p.report()
  console.log(
    `${name.padEnd(28)} read req.url ${read.toFixed(0).padStart(5)} ns   add a property ${add.toFixed(0).padStart(5)} ns`,
  )
}
