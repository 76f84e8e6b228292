// The fleet tests' client: runs inside the client host's network namespace, so
// that every request, socket and load loop starts there, never in the root
// namespace. Driven by the test over stdio with JSON lines: each request line is
// `{ "id": N, "op": "...", ... }`, each answer `{ "id": N, "ok": true, ... }` or
// `{ "id": N, "ok": false, "error": "..." }`. https is verified against the CA
// given in NODE_EXTRA_CA_CERTS.

import { createInterface } from 'node:readline'
import { io } from 'socket.io-client'

const loops = new Map()
const sockets = new Map()

/** One HTTP request; network errors and timeouts are answers too (status 0). */
async function send({ url, method = 'GET', headers = {}, body, timeoutMs = 10_000 }) {
  const started = Date.now()
  try {
    const response = await fetch(url, {
      method,
      headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
    const text = await response.text()
    return {
      status: response.status,
      node: response.headers.get('x-served-by'),
      location: response.headers.get('location'),
      setCookie: response.headers.getSetCookie(),
      body: text,
      ms: Date.now() - started,
    }
  } catch (error) {
    return {
      status: 0,
      node: null,
      error: String(error.cause?.code ?? error.name),
      ms: Date.now() - started,
    }
  }
}

/**
 * A steady loop: one worker per cookie, each sending `request` after the other
 * (with `pauseMs` between) until stopped or `maxRequests` each. Counts answers by
 * status, by node, and logouts (a 401 for a cookie that was logged in).
 */
function startLoop({ name, cookies, request, pauseMs = 20, maxRequests = 5_000 }) {
  const loop = {
    stopped: false,
    count: 0,
    byStatus: {},
    byNode: {},
    byNodeStatus: {},
    errors: {},
    logouts: 0,
    slowestMs: 0,
  }
  loop.done = Promise.all(
    cookies.map(async (cookie) => {
      for (let i = 0; !loop.stopped && i < maxRequests; i++) {
        const answer = await send({ ...request, headers: { ...request.headers, cookie } })
        loop.count++
        loop.byStatus[answer.status] = (loop.byStatus[answer.status] ?? 0) + 1
        if (answer.node) loop.byNode[answer.node] = (loop.byNode[answer.node] ?? 0) + 1
        const pair = `${answer.node ?? 'none'} ${answer.status}`
        loop.byNodeStatus[pair] = (loop.byNodeStatus[pair] ?? 0) + 1
        if (answer.error) loop.errors[answer.error] = (loop.errors[answer.error] ?? 0) + 1
        if (answer.status === 401) loop.logouts++
        loop.slowestMs = Math.max(loop.slowestMs, answer.ms)
        if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs))
      }
    }),
  )
  loops.set(name, loop)
  return {}
}

async function stopLoop({ name }) {
  const loop = loops.get(name)
  if (!loop) throw new Error(`no loop ${name}`)
  loop.stopped = true
  await loop.done
  loops.delete(name)
  const { stopped, done, ...counts } = loop
  return counts
}

/** A socket.io client with `cookie`; resolves once connected (or refused). */
function openSocket({ name, url, cookie }) {
  const socket = io(url, {
    transports: ['websocket'],
    reconnection: false,
    extraHeaders: { cookie },
    timeout: 10_000,
  })
  const state = {
    connected: false,
    disconnectedAt: null,
    reason: null,
    ended: null,
    error: null,
    welcome: null,
  }
  sockets.set(name, { socket, state })
  socket.on('welcome', (message) => {
    state.welcome = message
  })
  socket.on('session:ended', (event) => {
    state.ended = event?.reason ?? null
  })
  socket.on('disconnect', (reason) => {
    state.connected = false
    state.disconnectedAt = Date.now()
    state.reason = reason
  })
  return new Promise((resolve) => {
    socket.once('welcome', () => {
      state.connected = true
      resolve({ ...state })
    })
    socket.once('connect_error', (error) => {
      state.error = error.message
      resolve({ ...state })
    })
  })
}

const ops = {
  fetch: send,
  now: async () => ({ now: Date.now() }),
  startLoop: async (message) => startLoop(message),
  stopLoop,
  openSocket,
  socketState: async ({ name }) => ({ ...sockets.get(name)?.state }),
  closeSockets: async () => {
    for (const { socket } of sockets.values()) socket.disconnect()
    sockets.clear()
    return {}
  },
  /** `count` requests at once; the answers' statuses in order. */
  burst: async ({ requests }) => ({ answers: await Promise.all(requests.map(send)) }),
}

createInterface({ input: process.stdin }).on('line', async (line) => {
  const message = JSON.parse(line)
  try {
    const result = await ops[message.op](message)
    process.stdout.write(`${JSON.stringify({ id: message.id, ok: true, ...result })}\n`)
  } catch (error) {
    process.stdout.write(`${JSON.stringify({ id: message.id, ok: false, error: String(error) })}\n`)
  }
})
process.stdin.on('end', () => process.exit(0))
