// `node bench/pubsub-cluster.mjs`: what carrying session events costs on a Redis
// Cluster with classic pub/sub (PUBLISH, broadcast to every node over the cluster
// bus) and with sharded pub/sub (SPUBLISH to the shard that owns the channel), for
// the same events and the same listeners. Prints a table; not a test.
//
// Setup: a private 3 + 3 cluster; APPS listeners, each as one app process would
// listen: classic, one connection to any node, subscribed to one channel; sharded,
// one connection per primary, subscribed to the channels that primary owns (the
// events are spread over CHANNELS channels, as they would be by hash tag).
// Environment: PUBSUB_EVENTS (default 20000), PUBSUB_APPS (default 4).
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Cluster } from 'ioredis'
import { createClient } from 'redis'
import { startRedisCluster } from '../packages/sessionmesh/dist/cli/redis-cluster.js'

const EVENTS = Number(process.env.PUBSUB_EVENTS ?? 20_000)
const APPS = Number(process.env.PUBSUB_APPS ?? 4)
const CHANNELS = 16
const message = JSON.stringify({ v: 1, type: 'changed', sid: 'x'.repeat(32) })

const dir = mkdtempSync(join(tmpdir(), 'sm-pubsub-'))
const cluster = await startRedisCluster({ redisServer: 'redis-server', redisCli: 'redis-cli', dir })
const admin = []
for (const node of cluster.nodes) {
  const client = createClient({ url: `redis://127.0.0.1:${node.port}` })
  client.on('error', () => {})
  await client.connect()
  admin.push(client)
}

async function cpuSeconds() {
  let total = 0
  for (const client of admin) {
    const info = await client.info('cpu')
    total +=
      Number(/used_cpu_user:([\d.]+)/.exec(info)[1]) + Number(/used_cpu_sys:([\d.]+)/.exec(info)[1])
  }
  return total
}

/** Which primary port owns the slot of `channel`. */
async function ownerOf(channel) {
  const slot = await admin[0].sendCommand(['CLUSTER', 'KEYSLOT', channel])
  const shards = await admin[0].sendCommand(['CLUSTER', 'SLOTS'])
  for (const [from, to, primary] of shards)
    if (slot >= from && slot <= to) return Number(primary[1])
  throw new Error(`no owner for ${channel}`)
}

async function measure(kind) {
  const publisher = new Cluster(cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })))
  await new Promise((resolve) => publisher.once('ready', resolve))
  const channels = Array.from({ length: CHANNELS }, (_, k) => `bench:{${k}}:events`)
  const owners = await Promise.all(channels.map(ownerOf))
  const primaries = [...new Set(owners)]
  let delivered = 0
  const listeners = []
  for (let app = 0; app < APPS; app++) {
    if (kind === 'classic') {
      const node = cluster.nodes[app % cluster.nodes.length]
      const client = createClient({ url: `redis://127.0.0.1:${node.port}` })
      client.on('error', () => {})
      await client.connect()
      await client.subscribe('bench:events', () => delivered++)
      listeners.push(client)
    } else {
      for (const port of primaries) {
        const client = createClient({ url: `redis://127.0.0.1:${port}` })
        client.on('error', () => {})
        await client.connect()
        const mine = channels.filter((_, k) => owners[k] === port)
        // One SSUBSCRIBE per channel: the channels of one call must share a slot.
        for (const channel of mine) await client.sSubscribe(channel, () => delivered++)
        listeners.push(client)
      }
    }
  }
  const before = await cpuSeconds()
  const started = performance.now()
  const batch = 500
  for (let i = 0; i < EVENTS; i += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, EVENTS - i) }, (_, j) => {
        const k = (i + j) % CHANNELS
        return kind === 'classic'
          ? publisher.publish('bench:events', message)
          : publisher.call('SPUBLISH', channels[k], message)
      }),
    )
  }
  const deadline = Date.now() + 10_000
  while (delivered < EVENTS * APPS && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 20))
  const elapsed = performance.now() - started
  const cpu = (await cpuSeconds()) - before
  for (const client of listeners) client.destroy()
  publisher.disconnect()
  return {
    kind,
    connectionsPerApp: listeners.length / APPS,
    delivered: delivered / (EVENTS * APPS),
    usPerEvent: (cpu * 1e6) / EVENTS,
    eventsPerSecond: EVENTS / (elapsed / 1000),
  }
}

try {
  const rows = []
  for (const kind of ['classic', 'sharded', 'classic', 'sharded']) {
    rows.push(await measure(kind))
    process.stderr.write(`${kind}: ${JSON.stringify(rows.at(-1))}\n`)
  }
  console.log(
    `# Session events on a 3 + 3 Redis Cluster: ${EVENTS} events, ${APPS} listening apps\n`,
  )
  console.log('| pub/sub | connections per app | delivered | cluster CPU µs per event | events/s |')
  console.log('| --- | ---: | ---: | ---: | ---: |')
  for (const r of rows) {
    console.log(
      `| ${r.kind} | ${r.connectionsPerApp} | ${(r.delivered * 100).toFixed(1)}% | ${r.usPerEvent.toFixed(1)} | ${Math.round(r.eventsPerSecond)} |`,
    )
  }
} finally {
  for (const client of admin) client.destroy()
  await cluster.stop()
  rmSync(dir, { recursive: true, force: true })
}
