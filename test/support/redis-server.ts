import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ping } from '../../packages/sessionmesh/src/cli/redis.js'
import { freePort } from '../../packages/sessionmesh/src/cli/system.js'

export { freePort }

/**
 * A private `redis-server` on a free loopback port, with nothing kept on disk
 * unless asked, that a test may stop and start again on the same port.
 */
export class RedisServer {
  readonly port: number
  readonly url: string
  readonly #dir: string
  readonly #durable: boolean
  #process: ChildProcess | undefined

  private constructor(port: number, durable: boolean) {
    this.port = port
    this.#durable = durable
    this.url = `redis://127.0.0.1:${port}`
    this.#dir = mkdtempSync(join(tmpdir(), 'sm-redis-'))
  }

  /**
   * `durable`: an append-only file, so that a kill and a start keep the data (a
   * restart); otherwise a restart comes back empty. Redis writes the file before it
   * replies, so what a client was told is written survives a SIGKILL without an
   * fsync (fsync guards against the machine crashing, and on a busy CI disk one
   * costs more than a store's timeout).
   */
  static async start(options: { durable?: boolean } = {}): Promise<RedisServer> {
    const server = new RedisServer(await freePort(), options.durable ?? false)
    await server.start()
    return server
  }

  async start(): Promise<void> {
    const child = spawn(
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        this.#durable ? 'yes' : 'no',
        '--appendfsync',
        'no',
        '--dir',
        this.#dir,
      ],
      { stdio: 'ignore' },
    )
    this.#process = child
    await waitFor(async () => (await ping(this.port)) === '+PONG', `redis-server on ${this.port}`)
  }

  /** Kills the server at once (SIGKILL): an outage, not a shutdown. */
  async kill(): Promise<void> {
    const child = this.#process
    if (!child || child.exitCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
    this.#process = undefined
  }

  /** Sends a signal: SIGSTOP makes the server hang with its connections open, SIGCONT resumes it. */
  signal(signal: NodeJS.Signals): void {
    this.#process?.kill(signal)
  }

  async stop(): Promise<void> {
    await this.kill()
    rmSync(this.#dir, { recursive: true, force: true })
  }
}

/** Polls `check` every 20 ms until it holds, for at most `timeoutMs`. */
export async function waitFor(
  check: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
}
