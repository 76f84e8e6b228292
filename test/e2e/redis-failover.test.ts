import { SessionStore } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'
import { shareSession } from 'sessionmesh/socket.io'
import { Server } from 'socket.io'
import { io as connectSocket } from 'socket.io-client'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import {
  clusterClient,
  type Library,
  sentinelClient,
  type TestClient,
} from '../support/cluster-clients.js'
import { Client, startApp, type TestApp } from '../support/express-app.js'
import { waitFor } from '../support/redis-server.js'
import {
  command,
  migrateSlot,
  primaryOf,
  SentinelGroup,
  startCluster,
} from '../support/redis-topologies.js'

// Failover under load (in the e2e project: alone on the machine, since it measures
// answers against the timeout): a steady request loop of logged-in users runs through the
// store while the Redis primary that holds a user's session is SIGKILLed and a
// replica takes over (a cluster promotes it; Sentinel does). Every request must be
// answered, 2xx or the documented 503 within the timeout, the store must recover by
// itself, and nobody who was logged in before the kill may be logged out.

/** The store's timeout in these tests; a 503 must come within it (plus scheduling slack). */
const TIMEOUT = 1_000
const USERS = 12

interface Outcome {
  status: number
  ms: number
  at: number
}

/** Logs in USERS users, each with its own browser, and waits for replication to catch up. */
async function logIn(app: TestApp, tag: string): Promise<Client[]> {
  const browsers = Array.from({ length: USERS }, () => new Client(app.url))
  for (const [i, browser] of browsers.entries()) {
    expect((await browser.login(`${tag}-${i}`)).status).toBe(200)
  }
  await new Promise((resolve) => setTimeout(resolve, 300))
  return browsers
}

/** Each browser reads and writes its session in a loop until `stop()`; every answer is kept. */
function requestLoop(browsers: Client[]) {
  const outcomes: Outcome[] = []
  let running = true
  const loops = browsers.map(async (browser, i) => {
    for (let n = 0; running; n++) {
      const started = Date.now()
      const response =
        n % 2 === 0
          ? await browser.request('GET', '/me')
          : await browser.request('PUT', `/kv/n${i}`, n)
      outcomes.push({ status: response.status, ms: Date.now() - started, at: started })
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
  })
  return {
    outcomes,
    async stop() {
      running = false
      await Promise.all(loops)
    },
  }
}

/** What the loop saw: every answer 2xx or a quick 503, and the last second all 2xx. */
function expectAnswered(outcomes: Outcome[]) {
  const statuses = new Map<number, number>()
  for (const o of outcomes) statuses.set(o.status, (statuses.get(o.status) ?? 0) + 1)
  const unexpected = outcomes.filter((o) => ![200, 204, 503].includes(o.status))
  expect(unexpected, JSON.stringify([...statuses])).toEqual([])
  // A request makes at most two backend calls (its load, then its save), each
  // bounded by the timeout; 500 ms of slack for a loaded machine.
  const slow503 = outcomes.filter((o) => o.status === 503 && o.ms > 2 * TIMEOUT + 500)
  expect(slow503).toEqual([])
  const end = Math.max(...outcomes.map((o) => o.at))
  const tail = outcomes.filter((o) => o.at > end - 1_000)
  expect(tail.length).toBeGreaterThan(USERS)
  expect(tail.filter((o) => o.status === 503)).toEqual([])
  return Object.fromEntries(statuses)
}

async function everyoneStillLoggedIn(browsers: Client[]) {
  for (const browser of browsers) expect((await browser.request('GET', '/me')).status).toBe(200)
}

/** How one topology loses its primary and gets a new one. */
interface Failover {
  /** Kills the primary that serves `victim`'s session; answers its port. */
  kill(victim: Client): Promise<number>
  /** True once another primary has taken over from `killed`. */
  promoted(victim: Client, killed: number): Promise<boolean>
  /** Brings the killed server back as a replica, for the next test. */
  rejoin(killed: number): Promise<void>
}

/**
 * The failover scenario: users in a request loop, the primary killed, then every
 * answer checked (2xx or a quick 503), recovery by itself, nobody logged out.
 */
async function failoverUnderLoad(name: string, app: TestApp, failover: Failover): Promise<void> {
  const browsers = await logIn(app, name)
  const victim = browsers[0]
  if (!victim) throw new Error('no browser')
  const loop = requestLoop(browsers)
  onTestFinished(() => loop.stop())
  await new Promise((resolve) => setTimeout(resolve, 500))
  const killedAt = Date.now()
  const killed = await failover.kill(victim)
  await waitFor(() => failover.promoted(victim, killed), 'a replica to be promoted', 20_000)
  const promotedAt = Date.now()
  // The store must come back by itself: wait until the victim is served again,
  // then keep the loop going for a while.
  await waitFor(async () => (await victim.request('GET', '/me')).status === 200, 'recovery', 15_000)
  const recoveredAt = Date.now()
  await new Promise((resolve) => setTimeout(resolve, 2_000))
  await loop.stop()
  const statuses = expectAnswered(loop.outcomes)
  await everyoneStillLoggedIn(browsers)
  console.log(
    `${name}: promoted after ${promotedAt - killedAt} ms, served again after ${recoveredAt - killedAt} ms; answers ${JSON.stringify(statuses)}`,
  )
  await failover.rejoin(killed)
}

/**
 * The test app over a store on the client `connect` makes, for the describe block
 * this is called in (made before its tests, closed after them).
 */
function appOver(connect: () => Promise<TestClient>, prefix: string): { app: TestApp } {
  const subject = {} as { app: TestApp; redis: TestClient }
  beforeAll(async () => {
    subject.redis = await connect()
    const store = new SessionStore({
      backend: redisBackend({ client: subject.redis.client, prefix }),
      timeout: TIMEOUT,
      retryAfter: 200,
    })
    subject.app = await startApp(store)
  })
  afterAll(async () => {
    await subject.app?.close()
    await subject.redis?.close()
  })
  return subject
}

describe('Redis Cluster: SIGKILL of the primary that holds a logged-in session', () => {
  let cluster: Awaited<ReturnType<typeof startCluster>>
  beforeAll(async () => {
    cluster = await startCluster()
  }, 60_000)
  afterAll(async () => {
    await cluster?.dispose()
  })

  describe.each<Library>(['ioredis', 'node-redis'])('through %s', (library) => {
    const prefix = `fo-${library}:`
    const subject = appOver(() => clusterClient(library, cluster), prefix)

    it('serves every request while the slot of a logged-in session migrates to another primary', async () => {
      const browsers = await logIn(subject.app, `${library}-mig`)
      const victim = browsers[0]
      const loop = requestLoop(browsers)
      onTestFinished(() => loop.stop())
      await new Promise((resolve) => setTimeout(resolve, 300))
      const moved = await migrateSlot(cluster, `${prefix}s:${victim?.sid}`)
      expect(await primaryOf(cluster, `${prefix}s:${victim?.sid}`)).toBe(moved.to)
      await new Promise((resolve) => setTimeout(resolve, 500))
      await loop.stop()
      const failed = loop.outcomes.filter((o) => o.status !== 200 && o.status !== 204)
      expect(failed).toEqual([])
      expect(loop.outcomes.length).toBeGreaterThan(USERS * 10)
      await everyoneStillLoggedIn(browsers)
      console.log(
        `slot migration via ${library}: ${moved.keys} keys moved ${moved.from} -> ${moved.to}; ${loop.outcomes.length} requests, none failed`,
      )
    })

    it('answers every request (2xx or a quick 503), recovers by itself, and logs nobody out', async () => {
      const slotOf = (victim: Client) => `${prefix}s:${victim.sid}`
      await failoverUnderLoad(`cluster failover via ${library}`, subject.app, {
        async kill(victim) {
          const primary = await primaryOf(cluster, slotOf(victim))
          await cluster.kill(primary)
          return primary
        },
        // Meanwhile no live primary may hold the slot at all: that is not promoted yet.
        promoted: async (victim, killed) =>
          (await primaryOf(cluster, slotOf(victim)).catch(() => killed)) !== killed,
        async rejoin(killed) {
          await cluster.restart(killed)
          await waitFor(
            async () =>
              (await command('redis-cli', killed, 'INFO', 'replication')).includes(
                'master_link_status:up',
              ),
            'the killed primary to rejoin as a replica',
            20_000,
          )
        },
      })
    })
  })

  it('after a failover, revoking a session on one node still closes its socket on another', async () => {
    const clients = [
      await clusterClient('ioredis', cluster),
      await clusterClient('ioredis', cluster),
    ]
    const nodes = await Promise.all(
      clients.map(async (redis) => {
        const store = new SessionStore({
          backend: redisBackend({ client: redis.client, prefix: 'sock:' }),
          timeout: TIMEOUT,
        })
        const app = await startApp(store)
        const io = new Server(app.server)
        const binding = await shareSession(io, { session: app.sessionMiddleware, store })
        return { store, app, io, binding, redis }
      }),
    )
    const [a, b] = nodes
    if (!a || !b) throw new Error('two nodes')
    try {
      const browser = new Client(a.app.url)
      await browser.login('socket-user')
      // Kill the node B's event subscription is on (a primary or a replica), so the
      // bus itself must notice and move.
      const subscribed = await subscribedNode(cluster.nodes.map((n) => n.port))
      await cluster.kill(subscribed)
      await new Promise((resolve) => setTimeout(resolve, 6_000)) // failover, and the bus moves
      const socket = connectSocket(b.app.url, {
        transports: ['websocket'],
        reconnection: false,
        extraHeaders: { cookie: browser.cookie },
      })
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve())
        socket.once('connect_error', reject)
      })
      const closed = new Promise<number>((resolve) =>
        socket.once('disconnect', () => resolve(Date.now())),
      )
      await waitFor(
        async () =>
          await a.store.revokeSession(browser.sid).then(
            () => true,
            () => false,
          ),
        'revoke',
        10_000,
      )
      const revokedAt = Date.now()
      expect((await closed) - revokedAt).toBeLessThan(1_000)
      await cluster.restart(subscribed)
    } finally {
      for (const node of nodes) {
        await node.binding.close()
        node.io.close()
        await node.app.close()
        await node.redis.close()
      }
    }
  })
})

/** The port of a node that has a client subscribed to the session events. */
async function subscribedNode(ports: number[]): Promise<number> {
  for (const port of ports) {
    const channels = await command('redis-cli', port, 'PUBSUB', 'CHANNELS', 'sock:events')
    const clients = await command('redis-cli', port, 'CLIENT', 'LIST', 'TYPE', 'pubsub')
    if (channels.trim() !== '' && clients.includes('sub=')) {
      if (/sub=[1-9]/.test(clients)) return port
    }
  }
  throw new Error('no node holds a subscription to the session events')
}

describe('Sentinel: SIGKILL of the primary', () => {
  let group: SentinelGroup
  beforeAll(async () => {
    group = await SentinelGroup.start()
  }, 60_000)
  afterAll(async () => {
    await group?.stop()
  })

  describe.each<Library>(['ioredis', 'node-redis'])('through %s', (library) => {
    const subject = appOver(() => sentinelClient(library, group), `sf-${library}:`)

    it('answers every request (2xx or a quick 503), recovers by itself, and logs nobody out', async () => {
      await failoverUnderLoad(`sentinel failover via ${library}`, subject.app, {
        async kill() {
          const primary = await group.currentPrimary()
          await group.kill(primary)
          return primary
        },
        promoted: async (_victim, killed) => (await group.currentPrimary()) !== killed,
        rejoin: (killed) => group.restartAsReplica(killed),
      })
    })
  })
})
