import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { COMPACT_HASHES, ping } from './redis.js'
import { freePort, stopProcess, waitUntil } from './system.js'

const run = promisify(execFile)

/** How long a cluster node may be unreachable before its replica takes over, in ms. */
export const CLUSTER_NODE_TIMEOUT_MS = 2_000

/** One redis-server of a local cluster. */
export interface ClusterNodeProcess {
  port: number
  /** The cluster bus port, set explicitly: the default (port + 10000) may be taken. */
  busPort: number
  dir: string
  process: ChildProcess | undefined
}

/** A local Redis Cluster that `sessionmesh up --redis-cluster` (or a test) started. */
export interface RunningRedisCluster {
  nodes: ClusterNodeProcess[]
  /** `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…`, the form the demo reads. */
  url: string
  /** Kills one node at once (SIGKILL): an outage, not a shutdown. */
  kill(port: number): Promise<void>
  /** Starts a killed node again, with its nodes.conf: it rejoins the cluster. */
  restart(port: number): Promise<void>
  stop(): Promise<void>
}

/** Options of {@link startRedisCluster}. */
export interface RedisClusterOptions {
  redisServer: string
  redisCli: string
  dir: string
  /** @default 3 */
  primaries?: number
  /** @default 1 */
  replicasPerPrimary?: number
  /** @default CLUSTER_NODE_TIMEOUT_MS */
  nodeTimeout?: number
  /** Called with a node's process once it runs (to watch it). */
  onStart?: (node: ClusterNodeProcess) => void
}

/**
 * Starts `primaries × (1 + replicasPerPrimary)` redis-servers on free loopback
 * ports with cluster mode on, creates the cluster with `redis-cli --cluster
 * create`, and waits until every node reports the cluster ok and every replica
 * is linked to its primary. `cluster-require-full-coverage no`: while one shard
 * fails over, the others keep serving.
 */
export async function startRedisCluster(
  options: RedisClusterOptions,
): Promise<RunningRedisCluster> {
  const primaries = options.primaries ?? 3
  const replicas = options.replicasPerPrimary ?? 1
  const nodeTimeout = options.nodeTimeout ?? CLUSTER_NODE_TIMEOUT_MS
  const nodes: ClusterNodeProcess[] = []
  // Ports the kernel handed out free a moment ago: distinct within the cluster, and
  // a node that still finds its port taken when it starts is given new ones.
  const taken = new Set<number>()
  const port = async () => {
    for (;;) {
      const candidate = await freePort()
      if (!taken.has(candidate)) {
        taken.add(candidate)
        return candidate
      }
    }
  }
  for (let i = 0; i < primaries * (1 + replicas); i++) {
    const dir = join(options.dir, `node-${i + 1}`)
    mkdirSync(dir, { recursive: true })
    nodes.push({ port: await port(), busPort: await port(), dir, process: undefined })
  }

  const launch = async (node: ClusterNodeProcess) => {
    const child = spawn(
      options.redisServer,
      [
        '--port',
        String(node.port),
        '--cluster-port',
        String(node.busPort),
        '--bind',
        '127.0.0.1',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        'nodes.conf',
        '--cluster-node-timeout',
        String(nodeTimeout),
        '--cluster-require-full-coverage',
        'no',
        '--dir',
        node.dir,
        '--save',
        '',
        '--appendonly',
        'no',
        ...COMPACT_HASHES,
        '--logfile',
        'redis.log',
      ],
      { stdio: 'ignore', detached: true },
    )
    node.process = child
    await waitUntil(
      async () => (await ping(node.port)) === '+PONG',
      `cluster node on port ${node.port}`,
      10_000,
      () =>
        child.exitCode !== null
          ? `redis-server exited with code ${child.exitCode}: ${logTail(node.dir)}`
          : undefined,
    )
    options.onStart?.(node)
  }
  // The first start only: a port taken between freePort() and the bind gets new ports.
  const firstLaunch = async (node: ClusterNodeProcess) => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await launch(node)
      } catch (error) {
        const inUse = /Address already in use/i.test(logTail(node.dir))
        if (!inUse || attempt === 3) throw error
        node.port = await port()
        node.busPort = await port()
      }
    }
  }

  const cluster: RunningRedisCluster = {
    nodes,
    get url() {
      return `redis+cluster://${nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`
    },
    async kill(port) {
      const node = nodes.find((n) => n.port === port)
      const child = node?.process
      if (!node || !child || child.exitCode !== null) return
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGKILL')
      await exited
      node.process = undefined
    },
    async restart(port) {
      const node = nodes.find((n) => n.port === port)
      if (node && !node.process) await launch(node)
    },
    async stop() {
      await Promise.all(
        nodes.map(async (node) => {
          if (node.process) await stopProcess(node.process, 'SIGTERM', 5_000)
          node.process = undefined
        }),
      )
    },
  }
  try {
    await Promise.all(nodes.map(firstLaunch))
    await run(options.redisCli, [
      '--cluster',
      'create',
      ...nodes.map((n) => `127.0.0.1:${n.port}`),
      '--cluster-replicas',
      String(replicas),
      '--cluster-yes',
    ])
    await waitUntil(
      () => clusterReady(options.redisCli, nodes, primaries * replicas),
      'the cluster to agree and every replica to be in sync',
      30_000,
    )
  } catch (error) {
    await cluster.stop()
    throw error
  }
  return cluster
}

/** Every node says `cluster_state:ok`, and the replicas are linked to their primaries. */
async function clusterReady(
  cli: string,
  nodes: ClusterNodeProcess[],
  replicas: number,
): Promise<boolean> {
  let linked = 0
  for (const node of nodes) {
    const info = await command(cli, node.port, 'CLUSTER', 'INFO')
    if (!info.includes('cluster_state:ok')) return false
    const replication = await command(cli, node.port, 'INFO', 'replication')
    if (replication.includes('role:slave') && replication.includes('master_link_status:up'))
      linked++
  }
  return linked === replicas
}

/** One command through redis-cli; '' when the node does not answer. */
export async function command(cli: string, port: number, ...args: string[]): Promise<string> {
  try {
    const { stdout } = await run(cli, ['-h', '127.0.0.1', '-p', String(port), ...args], {
      timeout: 2_000,
    })
    return stdout
  } catch {
    return ''
  }
}

/** The last lines redis-server logged in `dir`, for an error message. */
function logTail(dir: string): string {
  const file = join(dir, 'redis.log')
  if (!existsSync(file)) return 'no log'
  return readFileSync(file, 'utf8').trim().split('\n').slice(-3).join(' | ')
}
