import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { createConnection, createServer } from 'node:net'
import { basename, delimiter, join } from 'node:path'

/** A problem the user can fix; main prints its message without a stack trace. */
export class UsageError extends Error {
  override name = 'UsageError'
}

/** The Debian package and the usual install commands of a tool sessionmesh drives. */
interface Tool {
  /** The command name. */
  command: string
  /** Where it lives when sbin is not on PATH (Debian puts nginx in /usr/sbin). */
  fallbacks: string[]
  /** The environment variable that overrides where it is. */
  env: string
  debian: string
  brew: string
}

/** The external programs `sessionmesh up` runs. */
export const tools = {
  nginx: {
    command: 'nginx',
    fallbacks: [
      '/usr/sbin/nginx',
      '/usr/local/sbin/nginx',
      '/usr/local/nginx/sbin/nginx',
      '/opt/homebrew/bin/nginx',
    ],
    env: 'SESSIONMESH_NGINX',
    debian: 'nginx',
    brew: 'nginx',
  },
  redis: {
    command: 'redis-server',
    fallbacks: [
      '/usr/sbin/redis-server',
      '/usr/local/bin/redis-server',
      '/opt/homebrew/bin/redis-server',
    ],
    env: 'SESSIONMESH_REDIS_SERVER',
    debian: 'redis-server',
    brew: 'redis',
  },
  redisCli: {
    command: 'redis-cli',
    fallbacks: ['/usr/bin/redis-cli', '/usr/local/bin/redis-cli', '/opt/homebrew/bin/redis-cli'],
    env: 'SESSIONMESH_REDIS_CLI',
    debian: 'redis-tools',
    brew: 'redis',
  },
  memcached: {
    command: 'memcached',
    fallbacks: ['/usr/bin/memcached', '/usr/local/bin/memcached', '/opt/homebrew/bin/memcached'],
    env: 'SESSIONMESH_MEMCACHED',
    debian: 'memcached',
    brew: 'memcached',
  },
} satisfies Record<string, Tool>

/** What `nginx -v` says (e.g. `nginx version: nginx/1.22.1`); empty when it does not run. */
export function nginxVersion(bin: string): string {
  const result = spawnSync(bin, ['-v'], { encoding: 'utf8' })
  return `${result.stderr ?? ''}${result.stdout ?? ''}`.trim()
}

/** Where `tool` is: its env override, then PATH, then the usual sbin places; or undefined. */
export function findTool(tool: Tool, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const override = env[tool.env]
  if (override) return isExecutable(override) ? override : undefined
  const dirs = (env.PATH ?? '').split(delimiter).filter(Boolean)
  const candidates = [...dirs.map((dir) => join(dir, tool.command)), ...tool.fallbacks]
  return candidates.find(isExecutable)
}

/** What to tell someone who lacks `tool`. */
export function installHint(tool: Tool): string {
  return [
    `${tool.command} is not installed (or not on PATH; set ${tool.env} to its path).`,
    'Install it with one of:',
    `  sudo apt-get install ${tool.debian}     # Debian, Ubuntu`,
    `  sudo dnf install ${tool.debian === 'redis-server' ? 'redis' : tool.debian}     # Fedora, RHEL`,
    `  brew install ${tool.brew}     # macOS`,
  ].join('\n')
}

/**
 * The path of `tool`, installing it with apt-get when it is missing and this process
 * is root on a Debian-like system (saying so on stderr); otherwise a UsageError that
 * says how to install it.
 */
export function requireTool(tool: Tool, log: (message: string) => void): string {
  const found = findTool(tool)
  if (found) return found
  if (process.env[tool.env]) {
    throw new UsageError(`${tool.env}=${process.env[tool.env]} is not an executable file`)
  }
  const canInstall =
    process.getuid?.() === 0 && findTool({ ...tool, command: 'apt-get', env: '-', fallbacks: [] })
  if (!canInstall) throw new UsageError(installHint(tool))
  log(
    `${tool.command} is missing: installing the Debian package ${tool.debian} with apt-get (running as root)`,
  )
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  const stdio = ['ignore', 2, 2] as const
  spawnSync('apt-get', ['update', '-qq'], { stdio: [...stdio], env })
  const install = spawnSync(
    'apt-get',
    ['install', '-y', '-qq', '--no-install-recommends', tool.debian],
    {
      stdio: [...stdio],
      env,
    },
  )
  const installed = install.status === 0 ? findTool(tool) : undefined
  if (!installed)
    throw new UsageError(`apt-get could not install ${tool.debian}.\n${installHint(tool)}`)
  return installed
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** Resolves when `port` on 127.0.0.1 can be listened on; a UsageError when it is taken. */
export async function assertPortFree(port: number, what: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const server = createServer()
    server.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EADDRINUSE') reject(new UsageError(`${what}: port ${port} is in use`))
      else if (error.code === 'EACCES') {
        reject(new UsageError(`${what}: port ${port} needs privileges this user does not have`))
      } else reject(error)
    })
    server.listen(port, '127.0.0.1', () => server.close(() => resolve()))
  })
}

/** A port the kernel hands out as free on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => {
        if (address && typeof address === 'object') resolve(address.port)
        else reject(new Error('the kernel gave no port'))
      })
    })
  })
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
export function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host: '127.0.0.1' })
    socket.setTimeout(500)
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
    socket.once('timeout', () => {
      socket.destroy()
      resolve(false)
    })
  })
}

/** Polls `check` every 25 ms until it holds; throws after `timeoutMs`. */
export async function waitUntil(
  check: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs: number,
  giveUp?: () => string | undefined,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return
    const reason = giveUp?.()
    if (reason) throw new Error(`${what}: ${reason}`)
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(25)
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Sends `signal`, then SIGKILL if the process is still there after `timeoutMs`. */
export async function stopProcess(
  child: ChildProcess,
  signal: NodeJS.Signals,
  timeoutMs: number,
): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  child.kill(signal)
  const timedOut = await Promise.race([exited.then(() => false), sleep(timeoutMs).then(() => true)])
  if (timedOut) {
    child.kill('SIGKILL')
    await exited
  }
}

/**
 * Starts `bin` detached (its own process group, so a stop reaches all of it) and
 * waits until `ready` holds; if it exits first, the error says `what` and the last
 * of what it printed.
 */
export async function startServerProcess(
  bin: string,
  args: string[],
  what: string,
  ready: () => Promise<boolean>,
): Promise<ChildProcess> {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  let output = ''
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4_000)
  }
  child.stdout?.on('data', collect)
  child.stderr?.on('data', collect)
  await waitUntil(ready, what, 10_000, () =>
    child.exitCode !== null ? `${basename(bin)} exited:\n${output.trim()}` : undefined,
  )
  return child
}
