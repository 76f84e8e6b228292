import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createServer } from 'node:net'
import { resolve } from 'node:path'
import { waitFor } from './redis-server.js'

/** The built CLI: the e2e tests run what users run. */
export const CLI = resolve(import.meta.dirname, '../../packages/sessionmesh/dist/cli/main.js')

/** A node as the `ready` lines list it. */
export interface ClusterNode {
  id: string
  port: number
  pid: number
}

/**
 * A `sessionmesh up` run as a child process, with everything it prints kept for
 * assertions and for the failure message.
 */
export class Cluster {
  readonly process: ChildProcess
  readonly port: number
  readonly base: string
  nodes: ClusterNode[] = []
  stdout = ''
  stderr = ''
  readonly exited: Promise<number | null>

  private constructor(args: string[], port: number, env: Record<string, string>) {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`)
    this.port = port
    // `up --tls` serves HTTPS on --port and names its CA on the ready line.
    this.base = `${args.includes('--tls') ? 'https' : 'http'}://127.0.0.1:${port}`
    this.process = spawn(process.execPath, [CLI, 'up', '--port', String(port), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    })
    this.process.stdout?.on('data', (chunk: Buffer) => {
      this.stdout += chunk.toString()
    })
    this.process.stderr?.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString()
    })
    this.exited = new Promise((resolve) => this.process.once('exit', (code) => resolve(code)))
  }

  /** Starts `sessionmesh up --port <port> ...args` (with `env` added) and waits for its `ready` line. */
  static async start(
    args: string[],
    port: number,
    env: Record<string, string> = {},
  ): Promise<Cluster> {
    const cluster = new Cluster(args, port, env)
    let exited = false
    cluster.exited.then(() => {
      exited = true
    })
    try {
      await waitFor(
        () => {
          if (exited) throw new Error('sessionmesh up exited before it was ready')
          return (
            cluster.stdout
              .split('\n')
              .some(
                (line) =>
                  line === `ready ${cluster.base}` || line.startsWith(`ready ${cluster.base} ca=`),
              ) && cluster.stdout.includes('rolling restart:')
          )
        },
        'sessionmesh up to print ready',
        60_000,
      )
    } catch (error) {
      cluster.process.kill('SIGTERM')
      throw new Error(
        `${(error as Error).message}\n--- stdout\n${cluster.stdout}\n--- stderr\n${cluster.tail()}`,
      )
    }
    cluster.nodes = [
      ...cluster.stdout.matchAll(/^ {2}(\S+) {2}http:\/\/127\.0\.0\.1:(\d+) {2}pid (\d+)$/gm),
    ].map((match) => ({ id: String(match[1]), port: Number(match[2]), pid: Number(match[3]) }))
    return cluster
  }

  /** The structured log lines (JSON) the CLI and its nodes wrote to stderr. */
  logs(): Array<Record<string, unknown>> {
    return this.stderr
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
  }

  /** The last lines of stderr, for failure messages. */
  tail(lines = 40): string {
    return this.stderr.split('\n').slice(-lines).join('\n')
  }

  /** SIGTERM, then waits for the exit code (SIGKILL after 30 s, so a test run always ends). */
  async stop(): Promise<number | null> {
    if (this.process.exitCode !== null) return this.process.exitCode
    this.process.kill('SIGTERM')
    const timer = setTimeout(() => this.process.kill('SIGKILL'), 30_000)
    const code = await this.exited
    clearTimeout(timer)
    return code
  }
}

/** One browser: a cookie jar over fetch. */
export class Browser {
  readonly cookies = new Map<string, string>()
  constructor(
    readonly base: string,
    readonly userAgent = 'e2e-browser',
  ) {}

  /** A second browser that starts with this one's cookies (the same session). */
  clone(userAgent = this.userAgent): Browser {
    const copy = new Browser(this.base, userAgent)
    for (const [name, value] of this.cookies) copy.cookies.set(name, value)
    return copy
  }

  async request(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; node: string | null; body: unknown }> {
    const headers: Record<string, string> = { 'user-agent': this.userAgent }
    if (this.cookies.size > 0) {
      headers.cookie = [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ')
    }
    if (body !== undefined) headers['content-type'] = 'application/json'
    const response = await fetch(this.base + path, {
      method,
      headers,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
    for (const line of response.headers.getSetCookie()) {
      const [pair = '', ...attributes] = line.split(';')
      const at = pair.indexOf('=')
      const name = pair.slice(0, at).trim()
      const value = pair.slice(at + 1).trim()
      const expired = attributes.some((a) => /^\s*expires=Thu, 01 Jan 1970/i.test(a))
      if (expired || value === '') this.cookies.delete(name)
      else this.cookies.set(name, value)
    }
    const text = await response.text()
    let parsed: unknown = text
    try {
      parsed = text ? JSON.parse(text) : undefined
    } catch {
      // Not JSON (an nginx error page): keep the text for the failure message.
    }
    return { status: response.status, node: response.headers.get('x-served-by'), body: parsed }
  }

  login(username: string, password = 'sessionmesh') {
    return this.request('POST', '/api/login', { username, password })
  }
}

/**
 * A port P below the ephemeral range (so no outgoing connection can take a node's
 * port while it restarts) with P..P+`count` all free.
 */
export async function freePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 10_000)
    const ports = Array.from({ length: count + 1 }, (_, index) => port + index)
    if ((await Promise.all(ports.map(canListen))).every(Boolean)) return port
  }
  throw new Error('no free port range found')
}

/** Whether 127.0.0.1:`port` is free to listen on. */
export function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

/** Whether process `pid` exists. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Runs the built CLI to completion and returns what it printed. */
export function cli(
  args: string[],
  env: Record<string, string | undefined> = process.env,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runNode(CLI, args, env)
}

/** Runs a Node.js `script` to its end, with what it printed. */
export function runNode(
  script: string,
  args: string[],
  env: Record<string, string | undefined> = process.env,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [script, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
    })
    let stdout = ''
    let stderr = ''
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
    })
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    child.once('exit', (code) => resolve({ code, stdout, stderr }))
  })
}
