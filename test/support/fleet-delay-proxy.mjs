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

/**
 * Forwards `from` to `to`, each chunk `delay[key]` ms late, in order. One queue and
 * one timer per direction: a timer per chunk could fire out of order (Node starts a
 * timer from the loop's cached time, not Date.now()), and a reordered TLS record
 * fails its MAC check, which tore down the connection under load.
 */
function pipeDelayed(from, to, key) {
  const queue = [] // { due, chunk }, oldest first; `due` never decreases
  let timer = null
  let ended = false
  const flush = () => {
    timer = null
    while (queue.length > 0 && queue[0].due <= Date.now()) {
      const { chunk } = queue.shift()
      if (!to.destroyed) to.write(chunk)
    }
    if (queue.length > 0) timer = setTimeout(flush, queue[0].due - Date.now())
    else if (ended) to.end()
  }
  from.on('data', (chunk) => {
    const last = queue.at(-1)?.due ?? 0
    queue.push({ due: Math.max(Date.now() + delay[key], last), chunk })
    if (timer === null) flush()
  })
  from.on('end', () => {
    ended = true
    if (timer === null) flush()
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
