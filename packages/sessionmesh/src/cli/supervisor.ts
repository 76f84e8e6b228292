import { type ChildProcess, spawn } from 'node:child_process'
import { get } from 'node:http'
import type { Logger } from 'pino'
import { REJOIN_SECONDS } from './nginx-config.js'
import { isListening, sleep, stopProcess, waitUntil } from './system.js'

/** Options of {@link Supervisor}. */
export interface SupervisorOptions {
  /** The app module each node runs as `node <app>`. */
  app: string
  /** One entry per node: its id and the port it listens on. */
  nodes: Array<{ id: string; port: number }>
  /** Extra environment for every node (REDIS_URL, SESSION_SECRET, …). */
  env: Record<string, string>
  logger: Logger
  /**
   * Longest wait for a node to answer `GET /healthz` with 200 after it was started.
   * @default 30_000
   */
  startTimeout?: number
}

/** A node as `sessionmesh up` reports it. */
export interface NodeInfo {
  id: string
  port: number
  pid: number | undefined
  restarts: number
}

interface Node {
  id: string
  port: number
  child: ChildProcess | undefined
  startedAt: number
  restarts: number
  /** Crashes in a row; the restart delay doubles with each. */
  crashes: number
  timer: NodeJS.Timeout | undefined
  log: Logger
}

/** Restart delay after the first crash; doubles with each crash in a row. */
const BACKOFF_MS = 250
const MAX_BACKOFF_MS = 10_000
/** A node that ran this long before crashing starts over at the shortest delay. */
const STABLE_MS = 30_000
/** How long a stopped node may drain before it is killed. */
const DRAIN_TIMEOUT_MS = 12_000

/**
 * Runs the app nodes: starts them, restarts crashed ones with exponential backoff,
 * and replaces them one at a time on request.
 *
 * A replacement listens on the port of the node it replaces, so nginx's config
 * never changes: the old node closes its listener first (nginx sends new requests
 * elsewhere, as a refused connection is retried on the next node, even for a POST),
 * and the new one starts on the freed port while the old one finishes its requests.
 */
export class Supervisor {
  readonly #options: SupervisorOptions
  readonly #nodes: Node[]
  #stopping = false
  #rolling: Promise<void> | undefined

  constructor(options: SupervisorOptions) {
    this.#options = options
    this.#nodes = options.nodes.map(({ id, port }) => ({
      id,
      port,
      child: undefined,
      startedAt: 0,
      restarts: 0,
      crashes: 0,
      timer: undefined,
      log: options.logger.child({ node: id }),
    }))
  }

  /** Starts every node and resolves when all of them are healthy. */
  async start(): Promise<void> {
    await Promise.all(
      this.#nodes.map(async (node) => {
        await this.#waitHealthy(node, this.#spawn(node))
      }),
    )
  }

  /** The nodes, their ports and current processes. */
  list(): NodeInfo[] {
    return this.#nodes.map((node) => ({
      id: node.id,
      port: node.port,
      pid: node.child?.pid,
      restarts: node.restarts,
    }))
  }

  /** Every process id the supervisor has running (for a last-resort kill at exit). */
  pids(): number[] {
    return this.#nodes.flatMap((node) => (node.child?.pid ? [node.child.pid] : []))
  }

  /**
   * Replaces every node, one at a time, each only once its predecessor's replacement
   * is healthy. Concurrent calls share one run.
   */
  rollingRestart(): Promise<void> {
    this.#rolling ??= (async () => {
      const log = this.#options.logger
      log.info({ nodes: this.#nodes.length }, 'rolling restart started')
      try {
        for (const node of this.#nodes) {
          if (this.#stopping) return
          await this.#replace(node)
        }
        log.info('rolling restart done')
      } finally {
        this.#rolling = undefined
      }
    })()
    return this.#rolling
  }

  /** Stops every node (each drains first) and restarts none. */
  async stop(): Promise<void> {
    this.#stopping = true
    await Promise.all(
      this.#nodes.map(async (node) => {
        clearTimeout(node.timer)
        if (node.child) await stopProcess(node.child, 'SIGTERM', DRAIN_TIMEOUT_MS)
      }),
    )
  }

  async #replace(node: Node): Promise<void> {
    // A node in crash backoff is brought up first; there is nothing to drain.
    const old = node.child
    if (!old || !alive(old)) {
      clearTimeout(node.timer)
      node.timer = undefined
      await this.#waitHealthy(node, this.#spawn(node))
      return
    }
    node.log.info({ nodePid: old.pid }, 'replacing node')
    node.child = undefined
    const drained = stopProcess(old, 'SIGTERM', DRAIN_TIMEOUT_MS)
    await waitUntil(
      async () => !alive(old) || !(await isListening(node.port)),
      `node ${node.id} to close its listener`,
      DRAIN_TIMEOUT_MS,
    )
    // Stopped meanwhile: stop() has already taken the nodes it knew of down.
    if (this.#stopping) return
    const fresh = this.#spawn(node)
    await this.#waitHealthy(node, fresh)
    node.restarts++
    // nginx saw a refused connection while the port was free and may skip this
    // node for up to REJOIN_SECONDS: wait it out, or the next node would be out too.
    await sleep(REJOIN_SECONDS * 1_000 + 500)
    // The old process keeps draining in the background; its exit is not waited for
    // before the next node, but it is never left behind.
    drained.catch(() => {})
  }

  #spawn(node: Node): ChildProcess {
    const options = this.#options
    const child = spawn(process.execPath, [options.app], {
      env: {
        ...process.env,
        ...options.env,
        SESSIONMESH_NODE_ID: node.id,
        PORT: String(node.port),
      },
      // The nodes' structured logs go to this process's stderr, next to its own;
      // stdout stays for the `ready` line. Its own process group, so that a Ctrl-C
      // in the terminal reaches the supervisor only, which then stops nodes in order.
      stdio: ['ignore', 2, 2],
      detached: true,
    })
    node.child = child
    node.startedAt = Date.now()
    node.log.info({ nodePid: child.pid, port: node.port }, 'node started')
    child.once('exit', (code, signal) => this.#exited(node, child, code, signal))
    return child
  }

  #exited(
    node: Node,
    child: ChildProcess,
    code: number | null,
    signal: NodeJS.Signals | null,
  ): void {
    // Exits of replaced nodes and at shutdown are expected.
    if (node.child !== child || this.#stopping) {
      node.log.info({ nodePid: child.pid, code, signal }, 'node stopped')
      return
    }
    node.child = undefined
    if (Date.now() - node.startedAt > STABLE_MS) node.crashes = 0
    const delay = Math.min(BACKOFF_MS * 2 ** node.crashes, MAX_BACKOFF_MS)
    node.crashes++
    node.log.error({ nodePid: child.pid, code, signal, restartInMs: delay }, 'node crashed')
    node.timer = setTimeout(() => {
      node.timer = undefined
      if (this.#stopping || node.child) return
      node.restarts++
      const fresh = this.#spawn(node)
      this.#waitHealthy(node, fresh).then(
        () => node.log.info({ nodePid: fresh.pid }, 'node healthy again'),
        (error: Error) => node.log.error({ err: error.message }, 'restarted node not healthy'),
      )
    }, delay)
  }

  async #waitHealthy(node: Node, child: ChildProcess): Promise<void> {
    await waitUntil(
      async () => (await healthStatus(node.port)) === 200,
      `node ${node.id} to answer GET /healthz on port ${node.port}`,
      this.#options.startTimeout ?? 30_000,
      () =>
        alive(child) ? undefined : `it exited (code ${child.exitCode}, signal ${child.signalCode})`,
    )
  }
}

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null
}

/**
 * The status of `GET /healthz`, on a connection of its own that is closed right
 * after, so that the supervisor never holds a keepalive connection a draining
 * node would have to wait for. 0 when nothing answers.
 */
function healthStatus(port: number): Promise<number> {
  return new Promise((resolve) => {
    const request = get(
      {
        host: '127.0.0.1',
        port,
        path: '/healthz',
        agent: false,
        timeout: 1_000,
        headers: { connection: 'close' },
      },
      (response) => {
        response.resume()
        resolve(response.statusCode ?? 0)
      },
    )
    request.once('error', () => resolve(0))
    request.once('timeout', () => request.destroy())
  })
}
