import { type ChildProcess, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ping } from '../../packages/sessionmesh/src/cli/redis.js'
import {
  command,
  type RunningRedisCluster,
  startRedisCluster,
} from '../../packages/sessionmesh/src/cli/redis-cluster.js'
import { freePort, waitFor } from './redis-server.js'

export { command }

/** A private Redis Cluster (3 primaries, 3 replicas) in a temp dir, for one test file. */
export async function startCluster(): Promise<RunningRedisCluster & { dispose(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'sm-cluster-'))
  const cluster = await startRedisCluster({
    redisServer: 'redis-server',
    redisCli: 'redis-cli',
    dir,
  })
  return Object.assign(cluster, {
    async dispose() {
      await cluster.stop()
      rmSync(dir, { recursive: true, force: true })
    },
  })
}

/** The port of the primary that holds `key`'s slot, asked of any live node. */
export async function primaryOf(cluster: RunningRedisCluster, key: string): Promise<number> {
  for (const node of cluster.nodes) {
    if (!node.process) continue
    const slot = Number((await command('redis-cli', node.port, 'CLUSTER', 'KEYSLOT', key)).trim())
    // "<id> <ip:port@bus> <flags> <primary> <ping> <pong> <epoch> <link> <slot ranges...>"
    const lines = (await command('redis-cli', node.port, 'CLUSTER', 'NODES')).split('\n')
    for (const line of lines) {
      const parts = line.trim().split(' ')
      if (!parts[2]?.includes('master') || parts[2].includes('fail')) continue
      for (const range of parts.slice(8)) {
        const [from, to = from] = range.split('-').map(Number)
        if (from !== undefined && to !== undefined && slot >= from && slot <= to) {
          return Number(parts[1]?.split(':')[1]?.split('@')[0])
        }
      }
    }
  }
  throw new Error(`no live primary holds the slot of ${key}`)
}

/** A primary, its replica and three sentinels watching them as `name`, on free ports. */
export class SentinelGroup {
  readonly name = 'sessions'
  readonly dir: string
  primaryPort = 0
  replicaPort = 0
  sentinelPorts: number[] = []
  readonly #processes = new Map<number, ChildProcess>()

  private constructor(dir: string) {
    this.dir = dir
  }

  /** Sentinel declares a primary down after this long without an answer, in ms. */
  static readonly DOWN_AFTER_MS = 1_000

  static async start(): Promise<SentinelGroup> {
    const group = new SentinelGroup(mkdtempSync(join(tmpdir(), 'sm-sentinel-')))
    group.primaryPort = await freePort()
    group.replicaPort = await freePort()
    await group.#server(group.primaryPort, [])
    await group.#server(group.replicaPort, ['--replicaof', '127.0.0.1', String(group.primaryPort)])
    await waitFor(
      async () =>
        (await command('redis-cli', group.replicaPort, 'INFO', 'replication')).includes(
          'master_link_status:up',
        ),
      'the replica to sync',
    )
    for (let i = 0; i < 3; i++) {
      const port = await freePort()
      group.sentinelPorts.push(port)
      const conf = join(group.dir, `sentinel-${port}.conf`)
      writeFileSync(
        conf,
        [
          `port ${port}`,
          'bind 127.0.0.1',
          `dir ${group.dir}`,
          `sentinel monitor ${group.name} 127.0.0.1 ${group.primaryPort} 2`,
          `sentinel down-after-milliseconds ${group.name} ${SentinelGroup.DOWN_AFTER_MS}`,
          `sentinel failover-timeout ${group.name} 10000`,
          `sentinel parallel-syncs ${group.name} 1`,
          '',
        ].join('\n'),
      )
      group.#spawn(port, [conf, '--sentinel'])
      await waitFor(async () => (await ping(port)) === '+PONG', `sentinel on ${port}`)
    }
    // Every sentinel must know the replica and the other sentinels before a failover can work.
    await waitFor(
      async () => {
        for (const port of group.sentinelPorts) {
          const info = await command('redis-cli', port, 'SENTINEL', 'MASTER', group.name)
          const lines = info.split('\n').map((l) => l.trim())
          const field = (name: string) => lines[lines.indexOf(name) + 1]
          if (field('num-slaves') !== '1' || field('num-other-sentinels') !== '2') return false
        }
        return true
      },
      'the sentinels to discover the replica and each other',
      20_000,
    )
    return group
  }

  /** The sentinels as `{ host, port }`, the form both clients take. */
  get sentinels(): Array<{ host: string; port: number }> {
    return this.sentinelPorts.map((port) => ({ host: '127.0.0.1', port }))
  }

  get url(): string {
    return `redis+sentinel://${this.sentinelPorts.map((p) => `127.0.0.1:${p}`).join(',')}/${this.name}`
  }

  /** The port of the current primary, as the sentinels say. */
  async currentPrimary(): Promise<number> {
    for (const port of this.sentinelPorts) {
      const reply = await command(
        'redis-cli',
        port,
        'SENTINEL',
        'GET-MASTER-ADDR-BY-NAME',
        this.name,
      )
      const lines = reply.trim().split('\n')
      if (lines[1]) return Number(lines[1])
    }
    throw new Error('no sentinel answered')
  }

  /** SIGKILLs the server on `port`. */
  async kill(port: number): Promise<void> {
    const child = this.#processes.get(port)
    if (!child || child.exitCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
    this.#processes.delete(port)
  }

  /**
   * Starts a killed data node again, as a replica of the current primary, and
   * waits until it is in sync and every sentinel counts it as a healthy replica
   * (only then can it be promoted in turn).
   */
  async restartAsReplica(port: number): Promise<void> {
    await this.#server(port, ['--replicaof', '127.0.0.1', String(await this.currentPrimary())])
    await waitFor(
      async () =>
        (await command('redis-cli', port, 'INFO', 'replication')).includes('master_link_status:up'),
      'the restarted replica to sync',
      20_000,
    )
    await waitFor(
      async () => {
        for (const sentinel of this.sentinelPorts) {
          const replicas = await command('redis-cli', sentinel, 'SENTINEL', 'REPLICAS', this.name)
          const healthy = replicas.includes(String(port)) && !/s_down|disconnected/.test(replicas)
          if (!healthy) return false
        }
        return true
      },
      'the sentinels to see the restarted replica as healthy',
      30_000,
    )
  }

  async stop(): Promise<void> {
    for (const port of [...this.#processes.keys()]) await this.kill(port)
    rmSync(this.dir, { recursive: true, force: true })
  }

  async #server(port: number, extra: string[]): Promise<void> {
    const dir = join(this.dir, `redis-${port}`)
    mkdirSync(dir, { recursive: true })
    this.#spawn(port, [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      ...extra,
    ])
    await waitFor(async () => (await ping(port)) === '+PONG', `redis-server on ${port}`)
  }

  #spawn(port: number, args: string[]): void {
    this.#processes.set(port, spawn('redis-server', args, { stdio: 'ignore' }))
  }
}

/**
 * Moves the hash slot of `key` to another primary by hand, as `redis-cli --cluster
 * reshard` does for each slot (IMPORTING / MIGRATING, MIGRATE key by key, SETSLOT
 * NODE), slowly: the slot stays half-moved for `pauseMs` before and after its keys
 * move, so that requests meet ASK redirections meanwhile.
 */
export async function migrateSlot(
  cluster: RunningRedisCluster,
  key: string,
  pauseMs = 500,
): Promise<{ from: number; to: number; keys: number }> {
  const cli = 'redis-cli'
  const from = await primaryOf(cluster, key)
  const slot = (await command(cli, from, 'CLUSTER', 'KEYSLOT', key)).trim()
  const masters = (await command(cli, from, 'CLUSTER', 'NODES'))
    .split('\n')
    .map((line) => line.trim().split(' '))
    .filter((parts) => parts[2]?.includes('master') && !parts[2].includes('fail'))
    .map((parts) => ({ id: parts[0] ?? '', port: Number(parts[1]?.split(':')[1]?.split('@')[0]) }))
  const source = masters.find((m) => m.port === from)
  const target = masters.find((m) => m.port !== from)
  if (!source || !target) throw new Error('need two live primaries')
  const must = async (port: number, ...args: string[]) => {
    const reply = (await command(cli, port, ...args)).trim()
    if (!/^(OK|NOKEY)$/.test(reply)) throw new Error(`${args.join(' ')} on ${port}: ${reply}`)
  }
  await must(target.port, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', source.id)
  await must(source.port, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', target.id)
  await new Promise((resolve) => setTimeout(resolve, pauseMs))
  let moved = 0
  for (;;) {
    const keys = (await command(cli, from, 'CLUSTER', 'GETKEYSINSLOT', slot, '10'))
      .split('\n')
      .filter(Boolean)
    if (keys.length === 0) break
    for (const k of keys) {
      await must(source.port, 'MIGRATE', '127.0.0.1', String(target.port), k, '0', '5000')
      moved++
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  await new Promise((resolve) => setTimeout(resolve, pauseMs))
  for (const node of [target, source, ...masters.filter((m) => m !== source && m !== target)]) {
    await must(node.port, 'CLUSTER', 'SETSLOT', slot, 'NODE', target.id)
  }
  return { from: source.port, to: target.port, keys: moved }
}
