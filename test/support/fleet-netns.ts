import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { closeSync, openSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

// Network namespaces for the fleet tests. Every name starts with `smf-<pid>-`, the
// pid of the test process that made it, so that a later run can tell the leftovers
// of a dead run (pid gone) from a fleet that is still running, and remove them.

const PREFIX = 'smf-'

/** Why the fleet tests cannot run here, or undefined when they can. */
export function fleetSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces (ip netns)'
  for (const [tool, pkg] of [
    ['ip', 'iproute2'],
    ['nft', 'nftables'],
    ['openssl', 'openssl'],
    ['redis-cli', 'redis-tools'],
  ] as const) {
    if (spawnSync(tool, ['--version'], { stdio: 'ignore' }).error) {
      return `needs ${tool} (apt-get install ${pkg})`
    }
  }
  const probe = `${PREFIX}${process.pid}-probe`
  const made = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' })
  if (made.status !== 0) return `ip netns add fails here: ${made.stderr.trim()}`
  spawnSync('ip', ['netns', 'del', probe])
  return undefined
}

/** Runs `ip ...args`; throws with ip's message when it fails. */
export function ip(args: string[], input?: string): string {
  return run('ip', args, input)
}

/** Runs `command` inside namespace `ns` to completion; throws when it fails. */
export function execIn(ns: string, command: string, args: string[], input?: string): string {
  return run('ip', ['netns', 'exec', ns, command, ...args], input)
}

function run(command: string, args: string[], input?: string): string {
  const result = spawnSync(command, args, {
    encoding: 'utf8',
    ...(input === undefined ? {} : { input }),
  })
  if (result.error || result.status !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} failed: ${result.error?.message ?? result.stderr.trim()}`,
    )
  }
  return result.stdout
}

/** A namespace name for this run: `smf-<pid>-<fleet>-<host>`. */
export function namespaceName(fleet: number, host: string): string {
  return `${PREFIX}${process.pid}-${fleet}-${host}`
}

/** The fleet namespaces that exist now. */
function fleetNamespaces(): string[] {
  return ip(['netns', 'list'])
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter((name) => name.startsWith(PREFIX))
}

/**
 * Kills every process left in namespace `ns` (by pid: only the fleet's own
 * processes ever run there) and deletes it. Quiet when it is already gone.
 */
export function removeNamespace(ns: string): void {
  const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? ''
  for (const pid of pids.split('\n').filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL')
    } catch {
      // Gone meanwhile.
    }
  }
  spawnSync('ip', ['netns', 'del', ns])
}

/** Removes the namespaces of fleets whose test process is gone; returns their names. */
export function removeDeadFleets(): string[] {
  const dead = fleetNamespaces().filter(ofDeadRun)
  for (const name of dead) removeNamespace(name)
  // Their temp dirs (logs, configs, Redis data) too.
  for (const entry of readdirSync(tmpdir())) {
    if (ofDeadRun(entry)) rmSync(join(tmpdir(), entry), { recursive: true, force: true })
  }
  return dead
}

/** Whether `name` (`smf-<pid>-…`) belongs to a test process that is gone. */
function ofDeadRun(name: string): boolean {
  const pid = Number(/^smf-(\d+)-/.exec(name)?.[1])
  if (!pid || pid === process.pid) return false
  try {
    process.kill(pid, 0)
    return false
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH'
  }
}

/** The namespaces of fleet `fleet` of this process that exist now. */
export function namespacesOf(fleet: number): string[] {
  const prefix = `${PREFIX}${process.pid}-${fleet}-`
  return fleetNamespaces().filter((name) => name.startsWith(prefix))
}

/**
 * Starts `command` inside namespace `ns` (`ip netns exec` execs it, so the child's
 * pid is the command's own). stdout and stderr go to `logFile` unless `stdio` is
 * 'pipe'.
 */
export function spawnIn(
  ns: string,
  command: string,
  args: string[],
  options: { env?: Record<string, string>; logFile?: string; pipe?: boolean } = {},
): ChildProcess {
  const log = options.logFile ? openSync(options.logFile, 'a') : 'ignore'
  const child = spawn('ip', ['netns', 'exec', ns, command, ...args], {
    env: { ...process.env, ...options.env },
    stdio: options.pipe ? ['pipe', 'pipe', log] : ['ignore', log, log],
  })
  if (typeof log === 'number') closeSync(log)
  return child
}

/** The veth end in the bridge namespace that links `host` to `network`. */
export function vethName(network: string, host: string): string {
  return `${network[0]}-${host}`
}

/** The bridge namespace `bridgeNs`, with one bridge per network (no addresses). */
export function createNetworks(bridgeNs: string, networks: readonly string[]): void {
  ip(['netns', 'add', bridgeNs])
  ip(['-n', bridgeNs, 'link', 'set', 'lo', 'up'])
  for (const network of networks) {
    ip(['-n', bridgeNs, 'link', 'add', network, 'type', 'bridge'])
    ip(['-n', bridgeNs, 'link', 'set', network, 'up'])
  }
}

/**
 * Namespace `ns` for host `host`, with loopback up and, for each network it is on,
 * a veth into that network's bridge: `eth0` for the first network, `eth1` for the
 * second, each with the given /24 address.
 */
export function addHost(
  bridgeNs: string,
  ns: string,
  host: string,
  addresses: Record<string, string | undefined>,
): void {
  ip(['netns', 'add', ns])
  ip(['-n', ns, 'link', 'set', 'lo', 'up'])
  for (const [index, [network, address]] of Object.entries(addresses).entries()) {
    if (!address) continue
    const veth = vethName(network, host)
    const device = `eth${index}`
    // Made inside the bridge namespace, its peer moved straight into the host's:
    // neither end ever exists in the root namespace.
    ip(['-n', bridgeNs, 'link', 'add', veth, 'type', 'veth', 'peer', 'name', device, 'netns', ns])
    ip(['-n', bridgeNs, 'link', 'set', veth, 'master', network, 'up'])
    ip(['-n', ns, 'addr', 'add', `${address}/24`, 'dev', device])
    ip(['-n', ns, 'link', 'set', device, 'up'])
  }
}
