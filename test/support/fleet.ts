import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createThrowawayTls } from '../../packages/sessionmesh/src/cli/tls.js'
import { FleetClient } from './fleet-client.js'
import {
  appEnvironment,
  parseEnvironment,
  redisConf,
  sentinelConf,
  writeNginxConfig,
} from './fleet-configs.js'
import {
  addHost,
  createNetworks,
  execIn,
  ip,
  namespaceName,
  namespacesOf,
  removeDeadFleets,
  removeNamespace,
  spawnIn,
  vethName,
} from './fleet-netns.js'

// The fleet as it is deployed, on one machine: every host a network namespace
// with its own address. Two networks, each a bridge in a namespace of its own
// (no test address ever exists in the root namespace):
//   front 10.77.1.0/24: the client, nginx (.2) and the app hosts (.11, .12, …)
//   back  10.77.2.0/24: the app hosts (.11, …) and the Redis hosts (.21, …)
// so an app host can be cut off from Redis while nginx still reaches it.

const NGINX = '/usr/sbin/nginx'
const DEMO = resolve(import.meta.dirname, '../../examples/chat/server.js')
const AGENT = resolve(import.meta.dirname, 'fleet-agent.mjs')
const DELAY_PROXY = resolve(import.meta.dirname, 'fleet-delay-proxy.mjs')
/** The app port on every app host, as a deployment would have it. */
export const APP_PORT = 3000
const REDIS_PORT = 6379
const REDIS_TLS_PORT = 6380
/** Where a delayed app host's Redis client connects: the delay proxy on its loopback. */
const PROXY_PORT = 6390
export const NGINX_ADDRESS = '10.77.1.2'
/** The name of the fleet's Sentinel group. */
export const SENTINEL_NAME = 'fleet'

/** Options of {@link startFleet}. */
export interface FleetOptions {
  /** @default 3 */
  apps?: number
  /** Redis hosts. @default 1 */
  redisHosts?: number
  /**
   * A Sentinel group: redis1 the first primary, the other hosts its replicas, and a
   * Sentinel (port 26379, group name `fleet`) on every Redis host. Needs 3 hosts.
   * @default false
   */
  sentinel?: boolean
  /** Apps reach Redis over TLS (`rediss://`, redis-server `--tls-port`). @default false */
  redisTls?: boolean
  /** App hosts whose Redis link runs through a delay proxy (see {@link Fleet.delay}). */
  delayed?: string[]
  /** The store's timeout on the app hosts (SESSIONMESH_TIMEOUT_MS). @default the store's own */
  storeTimeoutMs?: number
  /**
   * The REDIS_URL the app hosts get, from the Redis hosts' addresses; the default is
   * the first host, or with {@link FleetOptions.sentinel} the Sentinel group
   * (`redis+sentinel://:PASSWORD@S1:26379,S2:26379,S3:26379/fleet`).
   */
  redisUrl?: (redis: Array<{ address: string; port: number }>, tls: boolean) => string
}

/** One host of the fleet. */
export interface FleetHost {
  name: string
  ns: string
  front?: string
  back?: string
}

let fleets = 0
const live = new Set<Fleet>()
// A failed or interrupted run still removes its namespaces (and what runs in them).
process.once('exit', () => {
  for (const fleet of live) fleet.removeNow()
})

/** A running fleet; stop it with {@link Fleet.stop}. */
export class Fleet {
  readonly id = ++fleets
  readonly dir = mkdtempSync(join(tmpdir(), `smf-${process.pid}-`))
  readonly hosts = new Map<string, FleetHost>()
  readonly apps: string[] = []
  readonly redis: string[] = []
  /** nginx's HTTPS address, as the client reaches it. */
  readonly base = `https://${NGINX_ADDRESS}`
  readonly secret = randomBytes(32).toString('base64url')
  readonly redisPassword = randomBytes(16).toString('hex')
  client!: FleetClient
  /** The CA every TLS certificate of the fleet is signed by (PEM path). */
  ca!: string
  readonly #processes = new Map<string, ChildProcess>()
  readonly #bridge = namespaceName(this.id, 'net')
  readonly #options: FleetOptions
  #tls!: { cert: string; key: string }

  constructor(options: FleetOptions) {
    this.#options = options
    live.add(this)
  }

  /** Where app host `name` listens, from the client's side. */
  appUrl(name: string): string {
    return `http://${this.host(name).front}:${APP_PORT}`
  }

  host(name: string): FleetHost {
    const host = this.hosts.get(name)
    if (!host) throw new Error(`no host ${name}`)
    return host
  }

  /** The log file of host `name`'s main process. */
  log(name: string): string {
    try {
      return readFileSync(join(this.dir, `${name}.log`), 'utf8')
    } catch {
      return '(no log)'
    }
  }

  async start(): Promise<void> {
    const apps = this.#options.apps ?? 3
    const redisHosts = this.#options.redisHosts ?? 1
    createNetworks(this.#bridge, ['front', 'back'])
    this.#addHost('nginx', NGINX_ADDRESS, undefined)
    this.#addHost('client', '10.77.1.100', undefined)
    for (let k = 1; k <= apps; k++) {
      this.#addHost(`app${k}`, `10.77.1.${10 + k}`, `10.77.2.${10 + k}`)
      this.apps.push(`app${k}`)
    }
    for (let k = 1; k <= redisHosts; k++) {
      this.#addHost(`redis${k}`, undefined, `10.77.2.${20 + k}`)
      this.redis.push(`redis${k}`)
    }
    const names = [NGINX_ADDRESS, '127.0.0.1', 'localhost', 'sessionmesh.test']
    for (const name of this.redis) names.push(String(this.host(name).back))
    const tls = createThrowawayTls({ dir: join(this.dir, 'tls'), names })
    this.ca = tls.ca
    this.#tls = tls
    chmodSync(this.dir, 0o755)

    const agent = spawnIn(this.host('client').ns, process.execPath, [AGENT], {
      env: { NODE_EXTRA_CA_CERTS: this.ca },
      logFile: join(this.dir, 'client.log'),
      pipe: true,
    })
    this.#processes.set('client', agent)
    this.client = new FleetClient(agent)

    for (const name of this.redis) await this.#startRedis(name)
    for (const name of this.#options.delayed ?? []) await this.#startDelayProxy(name)
    await Promise.all(this.apps.map((name) => this.startApp(name)))
    await this.#startNginx()
  }

  /** Starts (or restarts) the demo on app host `name` and waits until it answers. */
  async startApp(name: string): Promise<void> {
    const host = this.host(name)
    const redisUrl = this.redisUrlOf(name)
    // The environment `sessionmesh up` gives a node (see cli/supervisor.ts), for a
    // host of its own: it listens on its front address, trusts nginx's address only.
    // Written as the environment file docs/deploy.md shows, and read back from it.
    const file = join(this.dir, `${name}.env`)
    writeFileSync(
      file,
      appEnvironment({
        nodeId: name,
        host: String(host.front),
        port: APP_PORT,
        redisUrl,
        secret: this.secret,
        nginx: NGINX_ADDRESS,
        caFile: this.ca,
        ...(this.#options.storeTimeoutMs ? { timeoutMs: this.#options.storeTimeoutMs } : {}),
      }),
    )
    const env = parseEnvironment(readFileSync(file, 'utf8'))
    const child = spawnIn(host.ns, process.execPath, [DEMO], {
      env,
      logFile: join(this.dir, `${name}.log`),
    })
    this.#processes.set(name, child)
    await this.#until(`${name} to answer /healthz`, async () => {
      if (child.exitCode !== null) throw new Error(`${name} exited:\n${this.log(name)}`)
      return (
        (await this.client.fetch({ url: `${this.appUrl(name)}/healthz`, timeoutMs: 1_000 }))
          .status === 200
      )
    })
  }

  /** The REDIS_URL of an app host with a direct link. */
  redisUrl(): string {
    const tls = this.#options.redisTls === true
    const redis = this.redis.map((name) => ({
      address: String(this.host(name).back),
      port: tls ? REDIS_TLS_PORT : REDIS_PORT,
    }))
    if (this.#options.redisUrl) return this.#options.redisUrl(redis, tls)
    if (this.#options.sentinel) {
      // The demo's form for a Sentinel group: the sentinels, then the group's name.
      const sentinels = this.sentinels().map(({ host, port }) => `${host}:${port}`)
      return `${tls ? 'rediss' : 'redis'}+sentinel://:${this.redisPassword}@${sentinels.join(',')}/${SENTINEL_NAME}`
    }
    const first = redis[0]
    if (!first) throw new Error('no Redis host')
    return `${tls ? 'rediss' : 'redis'}://:${this.redisPassword}@${first.address}:${first.port}`
  }

  /** The certificate and key nginx and Redis serve (signed by {@link Fleet.ca}). */
  tlsFiles(): { cert: string; key: string } {
    return this.#tls
  }

  /** redis-cli's options to reach a Redis host from inside its own namespace. */
  redisCliArgs(): string[] {
    const auth = ['-a', this.redisPassword, '--no-auth-warning']
    return this.#options.redisTls
      ? ['--tls', '--cacert', this.ca, '-p', String(REDIS_TLS_PORT), ...auth]
      : ['-p', String(REDIS_PORT), ...auth]
  }

  /** Runs `redis-cli ...args` on Redis host `name` (inside its namespace). */
  redisCli(name: string, args: string[]): string {
    return execIn(this.host(name).ns, 'redis-cli', [...this.redisCliArgs(), ...args]).trim()
  }

  /** Runs `node script` on host `name` with `env`, to completion; its stdout. */
  nodeOn(name: string, script: string, env: Record<string, string>): Promise<string> {
    const child = spawnIn(this.host(name).ns, process.execPath, [script], {
      env: { NODE_EXTRA_CA_CERTS: this.ca, ...env },
      logFile: join(this.dir, `${name}-script.log`),
      pipe: true,
    })
    child.stdin?.end()
    let out = ''
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString()
    })
    return new Promise((done, fail) =>
      child.once('exit', (code) =>
        code === 0 ? done(out) : fail(new Error(`${script} on ${name} exited ${code}: ${out}`)),
      ),
    )
  }

  /** The REDIS_URL app host `name` uses (through its delay proxy when it has one). */
  redisUrlOf(name: string): string {
    const tls = this.#options.redisTls === true
    return this.#options.delayed?.includes(name)
      ? `${tls ? 'rediss' : 'redis'}://:${this.redisPassword}@127.0.0.1:${PROXY_PORT}`
      : this.redisUrl()
  }

  /** SIGKILLs app host `name`'s demo: a crash, no draining. */
  async killApp(name: string): Promise<void> {
    const child = this.#processes.get(name)
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((done) => child.once('exit', done))
    child.kill('SIGKILL')
    await exited
  }

  /** Cuts (or restores) host `name`'s link to one network: silent drop, no reset. */
  link(name: string, network: 'front' | 'back', up: boolean): void {
    ip(['-n', this.#bridge, 'link', 'set', vethName(network, name), up ? 'up' : 'down'])
  }

  /** Drops `percent` % of packets between host `name` and `peer` (both ways); 0 removes it. */
  loss(name: string, peer: string, percent: number): void {
    const ns = this.host(name).ns
    if (percent === 0) {
      execIn(ns, 'nft', ['delete', 'table', 'inet', 'chaos'])
      return
    }
    const drop = `numgen random mod 100 < ${percent} drop`
    execIn(
      ns,
      'nft',
      ['-f', '-'],
      [
        'table inet chaos {',
        `  chain out { type filter hook output priority 0; policy accept; ip daddr ${peer} ${drop}; }`,
        `  chain in { type filter hook input priority 0; policy accept; ip saddr ${peer} ${drop}; }`,
        '}',
        '',
      ].join('\n'),
    )
  }

  /** Sets the delay proxy of a delayed app host: ms added towards Redis and back. */
  async delay(name: string, upMs: number, downMs: number): Promise<void> {
    const proxy = this.#processes.get(`${name}-proxy`)
    if (!proxy?.stdin || !proxy.stdout) throw new Error(`${name} has no delay proxy`)
    const answered = new Promise((done) => proxy.stdout?.once('data', done))
    proxy.stdin.write(`${JSON.stringify({ upMs, downMs })}\n`)
    await answered
  }

  /** Stops every process and removes every namespace of this fleet. */
  async stop(): Promise<void> {
    await this.client?.closeSockets().catch(() => {})
    for (const child of this.#processes.values()) child.kill('SIGKILL')
    this.removeNow()
  }

  /** Synchronous teardown, also used at process exit. */
  removeNow(): void {
    for (const child of this.#processes.values()) {
      if (child.exitCode === null) child.kill('SIGKILL')
    }
    for (const ns of namespacesOf(this.id)) removeNamespace(ns)
    rmSync(this.dir, { recursive: true, force: true })
    live.delete(this)
  }

  #addHost(name: string, front: string | undefined, back: string | undefined): void {
    const ns = namespaceName(this.id, name)
    addHost(this.#bridge, ns, name, { front, back })
    this.hosts.set(name, { name, ns, ...(front ? { front } : {}), ...(back ? { back } : {}) })
  }

  async #startRedis(name: string): Promise<void> {
    const host = this.host(name)
    const dir = join(this.dir, name)
    const tls = this.#options.redisTls === true
    mkdirSync(dir)
    const conf = join(this.dir, `${name}.conf`)
    writeFileSync(
      conf,
      redisConf({
        bind: String(host.back),
        dir,
        password: this.redisPassword,
        ...(tls ? { tls: { cert: this.#tls.cert, key: this.#tls.key, ca: this.ca } } : {}),
        ...(this.#options.sentinel ? { replicaOf: name === 'redis1' ? '' : this.#primary() } : {}),
      }),
    )
    const args = [conf]
    if (this.#options.sentinel) this.#startSentinel(name)
    this.#processes.set(
      name,
      spawnIn(host.ns, 'redis-server', args, { logFile: join(this.dir, `${name}.log`) }),
    )
    await this.#until(`${name} to answer PING`, async () => {
      try {
        return execIn(host.ns, 'redis-cli', [...this.redisCliArgs(), 'ping']).trim() === 'PONG'
      } catch {
        return false
      }
    })
  }

  /** The first primary of a Sentinel group, `address:port`. */
  #primary(): string {
    return `${this.host('redis1').back}:${REDIS_PORT}`
  }

  #startSentinel(name: string): void {
    const host = this.host(name)
    const dir = join(this.dir, `${name}-sentinel`)
    mkdirSync(dir)
    const conf = join(dir, 'sentinel.conf')
    writeFileSync(
      conf,
      sentinelConf({
        bind: String(host.back),
        dir,
        name: SENTINEL_NAME,
        primary: this.#primary(),
        password: this.redisPassword,
      }),
    )
    this.#processes.set(
      `${name}-sentinel`,
      spawnIn(host.ns, 'redis-server', [conf, '--sentinel'], {
        logFile: join(this.dir, `${name}-sentinel.log`),
      }),
    )
  }

  /** The Sentinels, as ioredis's `sentinels` option takes them. */
  sentinels(): Array<{ host: string; port: number }> {
    return this.redis.map((name) => ({ host: String(this.host(name).back), port: 26379 }))
  }

  /** `SENTINEL MASTER` of the Sentinel on Redis host `name`, as field → value. */
  sentinelMaster(name: string): Record<string, string> {
    const args = ['-p', '26379', 'sentinel', 'master', SENTINEL_NAME]
    const lines = execIn(this.host(name).ns, 'redis-cli', args).trim().split('\n')
    const fields: Record<string, string> = {}
    for (let i = 0; i + 1 < lines.length; i += 2) fields[String(lines[i])] = String(lines[i + 1])
    return fields
  }

  /** What the Sentinel on Redis host `name` says the primary is (`address:port`). */
  sentinelPrimary(name: string): string {
    const args = ['-p', '26379', 'sentinel', 'get-master-addr-by-name', SENTINEL_NAME]
    return execIn(this.host(name).ns, 'redis-cli', args).trim().split('\n').join(':')
  }

  async #startDelayProxy(name: string): Promise<void> {
    const target =
      this.redisUrl()
        .replace(/^\w+:\/\/([^@]*@)?/, '')
        .split(/[,/]/)[0] ?? ''
    const [address = '', port = ''] = target.split(':')
    const proxy = spawnIn(
      this.host(name).ns,
      process.execPath,
      [DELAY_PROXY, String(PROXY_PORT), address, port],
      {
        logFile: join(this.dir, `${name}-proxy.log`),
        pipe: true,
      },
    )
    this.#processes.set(`${name}-proxy`, proxy)
    await new Promise((done) => proxy.stdout?.once('data', done))
  }

  async #startNginx(): Promise<void> {
    const prefix = join(this.dir, 'nginx')
    mkdirSync(join(prefix, 'logs'), { recursive: true })
    mkdirSync(join(prefix, 'temp'), { recursive: true })
    chmodSync(prefix, 0o755)
    // What `sessionmesh nginx` prints for this fleet (docs/deploy.md shows the
    // command), included by a main nginx.conf as Debian's includes conf.d.
    const config = writeNginxConfig(prefix, {
      upstreams: this.apps.map((name) => `${this.host(name).front}:${APP_PORT}`),
      cert: this.#tls.cert,
      key: this.#tls.key,
      listen: `${NGINX_ADDRESS}:443`,
      httpListen: `${NGINX_ADDRESS}:80`,
    })
    this.#processes.set(
      'nginx',
      spawnIn(
        this.host('nginx').ns,
        NGINX,
        ['-p', prefix, '-c', config, '-e', join(prefix, 'logs/error.log')],
        {
          logFile: join(this.dir, 'nginx.log'),
        },
      ),
    )
    await this.#until('nginx to answer over HTTPS', async () => {
      return (
        (await this.client.fetch({ url: `${this.base}/healthz`, timeoutMs: 1_000 })).status === 200
      )
    })
  }

  async #until(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`fleet: timed out waiting for ${what}`)
      await new Promise((done) => setTimeout(done, 100))
    }
  }
}

/**
 * Removes what dead runs left behind, then builds and starts a fleet. Stop it with
 * `fleet.stop()` in afterAll; if the process dies first, the next run removes it.
 */
export async function startFleet(options: FleetOptions = {}): Promise<Fleet> {
  removeDeadFleets()
  const fleet = new Fleet(options)
  try {
    await fleet.start()
  } catch (error) {
    const logs = ['nginx', ...fleet.apps, ...fleet.redis]
      .map((name) => `--- ${name}\n${fleet.log(name).split('\n').slice(-15).join('\n')}`)
      .join('\n')
    await fleet.stop()
    throw new Error(`${(error as Error).message}\n${logs}`)
  }
  return fleet
}
