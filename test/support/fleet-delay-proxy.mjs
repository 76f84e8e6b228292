// A TCP proxy that delays each direction by a set time, for the fleet tests (the
// kernel has no netem). Run inside a host's network namespace:
//   node fleet-delay-proxy.mjs LISTEN_PORT TARGET_HOST TARGET_PORT
// It listens on 127.0.0.1:LISTEN_PORT, prints `listening` once it does, and reads
// settings as JSON lines on stdin: {"upMs": 200, "downMs": 0} (up: towards the
// target). Each line is answered with `ok`. Order within a direction is kept: a
// chunk is never delivered before one that came earlier.

import { createConnection, createServer } from 'node:net'
import { createInterface } from 'node:readline'

const [listenPort, targetHost, targetPort] = process.argv.slice(2)
const delay = { upMs: 0, downMs: 0 }

/** Forwards `from` to `to`, each chunk `delay[key]` ms late, in order. */
function pipeDelayed(from, to, key) {
  let lastDue = 0
  let pending = 0
  let ended = false
  const finish = () => {
    if (ended && pending === 0) to.end()
  }
  from.on('data', (chunk) => {
    const due = Math.max(Date.now() + delay[key], lastDue)
    lastDue = due
    pending++
    const deliver = () => {
      pending--
      if (!to.destroyed) to.write(chunk)
      finish()
    }
    if (due <= Date.now() && pending === 1) deliver()
    else setTimeout(deliver, due - Date.now())
  })
  from.on('end', () => {
    ended = true
    finish()
  })
}

const server = createServer((client) => {
  const upstream = createConnection({ host: targetHost, port: Number(targetPort) })
  client.setNoDelay(true)
  upstream.setNoDelay(true)
  pipeDelayed(client, upstream, 'upMs')
  pipeDelayed(upstream, client, 'downMs')
  const destroyBoth = () => {
    client.destroy()
    upstream.destroy()
  }
  client.on('error', destroyBoth)
  upstream.on('error', destroyBoth)
  client.on('close', () => setTimeout(() => upstream.destroy(), delay.upMs + 50))
  upstream.on('close', () => setTimeout(() => client.destroy(), delay.downMs + 50))
})

server.listen(Number(listenPort), '127.0.0.1', () => process.stdout.write('listening\n'))
createInterface({ input: process.stdin }).on('line', (line) => {
  const settings = JSON.parse(line)
  delay.upMs = Number(settings.upMs ?? 0)
  delay.downMs = Number(settings.downMs ?? 0)
  process.stdout.write('ok\n')
})
process.stdin.on('end', () => process.exit(0))
