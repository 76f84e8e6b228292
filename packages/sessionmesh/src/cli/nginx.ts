import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, sep } from 'node:path'
import { type NginxTls, renderNginxConfig } from './nginx-config.js'
import { isListening, stopProcess, waitUntil } from './system.js'

/**
 * The `user` nginx workers should drop to: only when this process is root, where
 * nginx's built-in default (`nobody nobody`) fails on systems without a `nobody`
 * group, such as Debian. Undefined when not root.
 */
export function nginxUser(): string | undefined {
  if (process.getuid?.() !== 0) return undefined
  let group = 'nogroup'
  try {
    const line = readFileSync('/etc/group', 'utf8')
      .split('\n')
      .find((entry) => entry.split(':')[2] === '65534')
    if (line) group = line.split(':')[0] ?? group
  } catch {
    // No /etc/group: keep the Debian name.
  }
  return `nobody ${group}`
}

/** Options of {@link startNginx}. */
export interface NginxOptions {
  /** The nginx executable. */
  bin: string
  /** A private, empty directory nginx may fill (config, pid, logs, temp files). */
  prefix: string
  /** `host:port` where nginx listens. */
  listen: string
  /** The nodes, as `host:port`. */
  upstreams: string[]
  sticky: boolean
  /** HTTPS on `listen` (and the redirect from plain HTTP), as in the generated config. */
  tls?: NginxTls
  /** Proxies in front of nginx whose X-Forwarded-Proto is passed on. */
  frontProxies?: readonly string[]
}

/** A running private nginx. */
export interface RunningNginx {
  process: ChildProcess
  configPath: string
  /** Graceful stop (SIGQUIT: finish in-flight requests), SIGKILL after `timeoutMs`. */
  stop(timeoutMs?: number): Promise<void>
}

/** Writes the managed config into `prefix`, starts nginx on it, and waits until it listens. */
export async function startNginx(options: NginxOptions): Promise<RunningNginx> {
  const { prefix } = options
  mkdirSync(join(prefix, 'logs'), { recursive: true })
  mkdirSync(join(prefix, 'temp'), { recursive: true })
  // Workers run as nobody when the master is root: they must reach the temp dirs.
  chmodSync(prefix, 0o755)
  const user = nginxUser()
  if (user) letWorkersThrough(prefix)
  const configPath = join(prefix, 'nginx.conf')
  writeFileSync(
    configPath,
    renderNginxConfig({
      upstreams: options.upstreams,
      listen: options.listen,
      sticky: options.sticky,
      ...(options.tls ? { tls: options.tls } : {}),
      ...(options.frontProxies ? { frontProxies: options.frontProxies } : {}),
      managed: user ? { prefix, user } : { prefix },
    }),
  )
  const args = ['-p', prefix, '-c', configPath]
  // -e (1.19.5+) keeps even the errors before the config is read out of /var/log.
  if (supportsErrorLogFlag(options.bin)) args.push('-e', join(prefix, 'logs', 'error.log'))
  const child = spawn(options.bin, args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true })
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  const port = Number(options.listen.split(':').pop())
  await waitUntil(
    () => isListening(port),
    `nginx on ${options.listen}`,
    10_000,
    () =>
      child.exitCode !== null || child.signalCode !== null
        ? `nginx exited: ${stderr.trim() || errorLogTail(prefix)}`
        : undefined,
  )
  return {
    process: child,
    configPath,
    stop: (timeoutMs = 5_000) => stopProcess(child, 'SIGQUIT', timeoutMs),
  }
}

/**
 * Lets nginx's unprivileged workers traverse (not list) every directory above the
 * prefix, where they write request bodies too large to buffer in memory. `up`
 * keeps the prefix in a private mkdtemp directory (0700): without this, every body
 * over ~16 KB got nginx's 500. Only directories inside the system temp dir are
 * changed (they are this run's own); any other that blocks the workers is an error
 * that says which.
 */
export function letWorkersThrough(prefix: string): void {
  const temp = realpathSync(tmpdir())
  for (let dir = dirname(realpathSync(prefix)); dir !== dirname(dir); dir = dirname(dir)) {
    const mode = statSync(dir).mode & 0o7777
    if ((mode & 0o001) !== 0) continue
    if (!dir.startsWith(`${temp}${sep}`)) {
      throw new Error(
        `nginx's workers (${nginxUser()}) cannot reach ${prefix}: ${dir} is not searchable by others`,
      )
    }
    chmodSync(dir, mode | 0o001)
  }
}

function supportsErrorLogFlag(bin: string): boolean {
  const version = /nginx\/(\d+)\.(\d+)\.(\d+)/.exec(
    spawnSync(bin, ['-v'], { encoding: 'utf8' }).stderr,
  )
  if (!version) return false
  const [major, minor, patch] = version.slice(1).map(Number) as [number, number, number]
  return major > 1 || minor > 19 || (minor === 19 && patch >= 5)
}

/** The last lines of nginx's error log, for a message about why it stopped. */
export function errorLogTail(prefix: string): string {
  const path = join(prefix, 'logs', 'error.log')
  if (!existsSync(path)) return '(no error log)'
  return readFileSync(path, 'utf8').trim().split('\n').slice(-5).join('\n')
}
