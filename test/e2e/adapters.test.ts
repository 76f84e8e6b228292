import { io as connect, type Socket } from 'socket.io-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Browser, Cluster, freePortRange } from '../support/cluster.js'
import { RedisServer } from '../support/redis-server.js'

// The demo's chat on 4 nodes behind nginx, with each of the two socket.io Redis
// adapters: `sessionmesh up --adapter streams|classic`. Fan-out to every client,
// and what becomes of messages sent while Redis restarts (kept on disk: the
// sessions survive it, so only the adapter decides what arrives). The counts are
// printed, and docs/adapters.md shows them side by side.

const NODES = 4
/** Messages sent while Redis is down. */
const DURING_OUTAGE = 20

interface Client {
  socket: Socket
  node: string
  texts: string[]
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** A chat client through nginx, resolved with the node that welcomed it. */
async function chatClient(base: string, browser: Browser): Promise<Client> {
  const cookie = [...browser.cookies].map(([name, value]) => `${name}=${value}`).join('; ')
  const socket = connect(base, {
    transports: ['websocket'],
    reconnection: false,
    extraHeaders: { cookie },
  })
  const texts: string[] = []
  socket.on('chat', (message: { text: string }) => texts.push(message.text))
  const welcome = await new Promise<{ node: string }>((resolve, reject) => {
    socket.once('welcome', resolve)
    socket.once('connect_error', reject)
  })
  return { socket, node: welcome.node, texts }
}

for (const adapter of ['streams', 'classic'] as const) {
  describe(`the chat across ${NODES} nodes with --adapter ${adapter}`, () => {
    let redis: RedisServer
    let cluster: Cluster
    const clients: Client[] = []

    beforeAll(async () => {
      redis = await RedisServer.start({ durable: true })
      cluster = await Cluster.start(
        ['--nodes', String(NODES), '--adapter', adapter, '--redis', redis.url],
        await freePortRange(NODES),
      )
      const browser = new Browser(cluster.base)
      expect((await browser.login('alice')).status).toBe(200)
      // Until every node holds at least one client (nginx balances the upgrades).
      for (let i = 0; i < 40 && new Set(clients.map((c) => c.node)).size < NODES; i++) {
        clients.push(await chatClient(cluster.base, browser))
      }
    })

    afterAll(async () => {
      for (const client of clients) client.socket.disconnect()
      await cluster?.stop()
      await redis?.stop()
    })

    it('says which adapter each node runs', () => {
      const ready = cluster.logs().filter((line) => line.msg === 'chat ready')
      expect(ready.map((line) => line.adapter)).toEqual(Array(NODES).fill(adapter))
    })

    it('fans a message out to every client on every node', async () => {
      expect(new Set(clients.map((c) => c.node)).size).toBe(NODES)
      const [sender] = clients
      sender?.socket.emit('chat', { text: `fan-out ${adapter}` })
      await expect
        .poll(() => clients.filter((c) => c.texts.includes(`fan-out ${adapter}`)).length)
        .toBe(clients.length)
    })

    it(`measures how many of ${DURING_OUTAGE} messages sent during a Redis restart reach other nodes`, async () => {
      const sender = clients[0] as Client
      const remote = clients.filter((c) => c.node !== sender.node)
      const local = clients.filter((c) => c.node === sender.node)
      await redis.kill()
      for (let i = 0; i < DURING_OUTAGE; i++) {
        sender.socket.emit('chat', { text: `outage ${i}` })
        await sleep(50)
      }
      await redis.start()
      // Recovered once a fresh message reaches every client; anything from the
      // outage that is still coming was sent before it, and has arrived by then.
      let probes = 0
      for (; probes < 60; probes++) {
        sender.socket.emit('chat', { text: `probe ${probes}` })
        await sleep(500)
        if (clients.every((c) => c.texts.some((text) => text.startsWith('probe ')))) break
      }
      expect(clients.every((c) => c.texts.some((text) => text.startsWith('probe ')))).toBe(true)

      const arrived = (client: Client) => client.texts.filter((t) => t.startsWith('outage ')).length
      // The sender's own node needs no Redis to deliver to its clients.
      for (const client of local) expect(arrived(client)).toBe(DURING_OUTAGE)
      const total = remote.reduce((sum, client) => sum + arrived(client), 0)
      process.stdout.write(
        `adapter ${adapter}: ${total} of ${DURING_OUTAGE * remote.length} outage messages reached ${remote.length} clients on the other ${NODES - 1} nodes (${remote.map(arrived).join(', ')})\n`,
      )
      if (adapter === 'streams') expect(total).toBe(DURING_OUTAGE * remote.length)
      // Every client is still connected: nothing but the adapter was disturbed.
      expect(clients.every((c) => c.socket.connected)).toBe(true)
    })
  })
}
