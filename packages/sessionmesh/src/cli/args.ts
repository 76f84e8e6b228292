import { parseArgs } from 'node:util'
import { parseRedisUrl, type RedisTarget } from '../backends/redis/url.js'
import { tableParts } from '../backends/sql-common.js'
import { UsageError } from './system.js'

/** What `sessionmesh help` prints. */
export const USAGE = `Usage: sessionmesh <command> [options]

Commands:
  up        Run N app nodes behind nginx, sharing sessions in Redis or a database
              --nodes N        app processes (default 4)
              --port P         nginx listens on 127.0.0.1:P (default 8080)
              --base-port B    node k listens on B + k - 1 (default P + 1)
              --app PATH       the app module each node runs with node
                               (default: the demo, examples/chat/server.js)
              --redis URL      use this Redis (default: a private redis-server
                               on a free port, data in a temporary directory):
                               redis://H:P, redis+cluster://H1:P1,H2:P2 (a
                               cluster, from any of its nodes), or
                               redis+sentinel://S1:P1,S2:P2/NAME (the primary
                               those sentinels call NAME); rediss… for TLS
              --redis-cluster  start a private Redis Cluster instead: 3
                               primaries and 3 replicas on free ports
              --sticky         route socket.io long-polling by session cookie
              --adapter KIND   the demo chat's socket.io adapter: streams
                               (default, @socket.io/redis-streams-adapter) or
                               classic (@socket.io/redis-adapter, pub/sub)
              --store KIND     where sessions live: redis (default), postgres,
                               mysql, tiered (Redis over the database), or
                               memcached (a private memcached on a free port)
              --database-url URL  postgres://… or mysql://… (default: from
                               SESSIONMESH_DATABASE_URL, then MYSQL_URL (mysql,
                               tiered), then DATABASE_URL; postgres without a
                               URL reads PGHOST, PGUSER, PGDATABASE…)
              --table NAME     sessions table (default sessionmesh_sessions)
              --tls            HTTPS on --port with a throwaway CA and a
                               certificate for 127.0.0.1 and localhost (made
                               with openssl; the ready line names the CA file),
                               Secure cookies
              --http-port P    with --tls: plain HTTP on P redirects to HTTPS
            With a database, up runs the migration first (idempotent), and still
            starts Redis: the demo's socket.io adapter (and tiered's cache) use it.
            SIGHUP, or \`sessionmesh restart\`, restarts the nodes one at a time.
  migrate   Create the sessions table; safe to run again (changes nothing)
              --store KIND     postgres or mysql (required)
              --database-url URL, --table NAME   as for up
  sessions  List, count or revoke sessions in the store the app uses
              list --user U               a user's live sessions
              revoke SID                  end one session
              revoke --user U [--except SID]   end a user's sessions (but SID)
              count                       number of live sessions
              --redis URL      as for up (default: $REDIS_URL, then
                               redis://127.0.0.1:6379)
              --prefix P       the app's Redis key prefix (default sm:)
              --store KIND     redis (default), postgres, mysql or tiered
              --database-url URL, --table NAME   as for up
              --json           print JSON (list: an array of { id, createdAt,
                               lastSeenAt, expiresAt, userAgent, ip }, ms)
              --timeout MS     give up on the store after MS (default 5000)
            Exit 0 on success, 2 on bad usage, 1 when the store cannot be reached.
            Revocations close the session's sockets on every node, as logout does.
  restart   Rolling restart of the nodes of a running \`sessionmesh up\`
              --port P         the port that \`up\` serves on (default 8080)
  nginx     Print an nginx config (for /etc/nginx/conf.d/) for given nodes
              --upstream H:P   a node; repeat for each (at least one)
              --port P         where nginx listens: P or ADDRESS:P (default 80)
              --sticky         route socket.io long-polling by session cookie
              --cookie NAME    session cookie the sticky hash reads
                               (default sessionmesh)
              --tls-cert PATH  serve HTTPS with this certificate chain (PEM);
              --tls-key PATH   and its key; --port then defaults to 443
              --http-port P    with TLS: plain HTTP on P (or ADDRESS:P)
                               redirects to HTTPS (default 80)
              --http2 MODE     directive (nginx 1.25.1+), listen (older) or
                               off (default: from the local nginx -v, else listen)
              --front-proxy A  a TLS-terminating proxy in front of nginx
                               (address or CIDR; repeat): its X-Forwarded-Proto
                               is passed on, so the app still sets Secure cookies
  pm2       Print a pm2 ecosystem file (fork mode, one app per node)
              --nodes N, --base-port B (default 3001), --app PATH,
              --redis URL (default redis://127.0.0.1:6379), --name (sessionmesh)
  help      Print this help
`

/** Where `sessionmesh up` keeps sessions. */
export type StoreKind = 'redis' | 'postgres' | 'mysql' | 'tiered' | 'memcached'

const STORES: readonly StoreKind[] = ['redis', 'postgres', 'mysql', 'tiered', 'memcached']

/** Options of `sessionmesh up`. */
export interface UpArgs {
  nodes: number
  port: number
  basePort: number
  app: string | undefined
  redis: string | undefined
  /** `--redis-cluster`: start a private 3 + 3 cluster instead of one redis-server. */
  redisCluster: boolean
  sticky: boolean
  store: StoreKind
  /** `--database-url`; the environment is read later, see `resolveDatabase`. */
  databaseUrl: string | undefined
  table: string | undefined
  /** `--adapter`: the demo chat's socket.io Redis adapter. */
  adapter: 'streams' | 'classic'
  /** `--tls`: HTTPS on `port` with a throwaway CA. */
  tls: boolean
  /** `--http-port`: plain HTTP that redirects to HTTPS (only with `tls`). */
  httpPort: number | undefined
}

/** Options of `sessionmesh migrate`. */
export interface MigrateArgs {
  store: 'postgres' | 'mysql'
  databaseUrl: string | undefined
  table: string | undefined
}

/** Options of `sessionmesh nginx`. */
export interface NginxArgs {
  upstreams: string[]
  listen: string
  sticky: boolean
  cookie: string
  /** `--tls-cert` and `--tls-key`, both or neither. */
  tls: { cert: string; key: string } | undefined
  /** `--http-port`, with TLS. */
  httpListen: string
  /** `--http2`; undefined: decide from the local nginx. */
  http2: 'directive' | 'listen' | false | undefined
  frontProxies: string[]
}

/** Options of `sessionmesh pm2`. */
export interface Pm2Args {
  nodes: number
  basePort: number
  app: string | undefined
  redis: string
  name: string
}

/** Parses the options of `sessionmesh up`. */
export function parseUpArgs(argv: string[]): UpArgs {
  const { values } = parse('up', argv, {
    nodes: { type: 'string' },
    port: { type: 'string' },
    'base-port': { type: 'string' },
    app: { type: 'string' },
    redis: { type: 'string' },
    'redis-cluster': { type: 'boolean' },
    sticky: { type: 'boolean' },
    store: { type: 'string' },
    'database-url': { type: 'string' },
    table: { type: 'string' },
    adapter: { type: 'string' },
    tls: { type: 'boolean' },
    'http-port': { type: 'string' },
  })
  const nodes = integer('--nodes', values.nodes, 4, 1, 64)
  if (values.redis !== undefined && values['redis-cluster']) {
    throw new UsageError('--redis and --redis-cluster exclude each other: give one')
  }
  const store = oneOf('--store', values.store ?? 'redis', STORES)
  const adapter = oneOf('--adapter', values.adapter ?? 'streams', ['streams', 'classic'] as const)
  if (
    (store === 'redis' || store === 'memcached') &&
    (values['database-url'] !== undefined || values.table !== undefined)
  ) {
    throw new UsageError(
      `--database-url and --table need --store postgres, mysql or tiered (sessions are in ${store === 'redis' ? 'Redis' : 'Memcached'} otherwise)`,
    )
  }
  const port = integer('--port', values.port, 8080, 1, 65_535)
  const basePort = integer('--base-port', values['base-port'], port + 1, 1, 65_535 - nodes + 1)
  if (port >= basePort && port < basePort + nodes) {
    throw new UsageError(
      `--port ${port} falls among the node ports ${basePort}-${basePort + nodes - 1}`,
    )
  }
  if (values.redis !== undefined) redisUrl(values.redis)
  const tls = values.tls ?? false
  if (values['http-port'] !== undefined && !tls) {
    throw new UsageError('--http-port needs --tls (it redirects plain HTTP to HTTPS)')
  }
  const httpPort =
    values['http-port'] === undefined
      ? undefined
      : integer('--http-port', values['http-port'], 0, 1, 65_535)
  if (
    httpPort !== undefined &&
    (httpPort === port || (httpPort >= basePort && httpPort < basePort + nodes))
  ) {
    throw new UsageError(`--http-port ${httpPort} is already --port or a node port`)
  }
  return {
    nodes,
    port,
    basePort,
    app: values.app,
    redis: values.redis,
    redisCluster: values['redis-cluster'] ?? false,
    sticky: values.sticky ?? false,
    store,
    databaseUrl: databaseUrl(values['database-url']),
    table: tableName(values.table),
    adapter,
    tls,
    httpPort,
  }
}

/** Parses the options of `sessionmesh migrate`. */
export function parseMigrateArgs(argv: string[]): MigrateArgs {
  const { values } = parse('migrate', argv, {
    store: { type: 'string' },
    'database-url': { type: 'string' },
    table: { type: 'string' },
  })
  if (values.store === undefined) {
    throw new UsageError('migrate: say which database with --store postgres or --store mysql')
  }
  return {
    store: oneOf('--store', values.store, ['postgres', 'mysql'] as const),
    databaseUrl: databaseUrl(values['database-url']),
    table: tableName(values.table),
  }
}

/** Parses the options of `sessionmesh restart`. */
export function parseRestartArgs(argv: string[]): { port: number } {
  const { values } = parse('restart', argv, { port: { type: 'string' } })
  return { port: integer('--port', values.port, 8080, 1, 65_535) }
}

/** Parses the options of `sessionmesh nginx`. */
export function parseNginxArgs(argv: string[]): NginxArgs {
  const { values } = parse('nginx', argv, {
    upstream: { type: 'string', multiple: true },
    port: { type: 'string' },
    sticky: { type: 'boolean' },
    cookie: { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'http-port': { type: 'string' },
    http2: { type: 'string' },
    'front-proxy': { type: 'string', multiple: true },
  })
  const upstreams = values.upstream ?? []
  if (upstreams.length === 0) {
    throw new UsageError(
      'nginx: give each node with --upstream HOST:PORT, e.g. --upstream 127.0.0.1:3001',
    )
  }
  const cert = values['tls-cert']
  const key = values['tls-key']
  if ((cert === undefined) !== (key === undefined)) {
    throw new UsageError('nginx: --tls-cert and --tls-key go together')
  }
  const tls = cert !== undefined && key !== undefined ? { cert, key } : undefined
  if (!tls && (values['http-port'] !== undefined || values.http2 !== undefined)) {
    throw new UsageError('nginx: --http-port and --http2 need --tls-cert and --tls-key')
  }
  const http2 =
    values.http2 === undefined
      ? undefined
      : oneOf('--http2', values.http2, ['directive', 'listen', 'off'] as const)
  return {
    upstreams,
    listen: values.port ?? (tls ? '443' : '80'),
    sticky: values.sticky ?? false,
    cookie: values.cookie ?? 'sessionmesh',
    tls,
    httpListen: values['http-port'] ?? '80',
    http2: http2 === 'off' ? false : http2,
    frontProxies: values['front-proxy'] ?? [],
  }
}

/** Parses the options of `sessionmesh pm2`. */
export function parsePm2Args(argv: string[]): Pm2Args {
  const { values } = parse('pm2', argv, {
    nodes: { type: 'string' },
    'base-port': { type: 'string' },
    app: { type: 'string' },
    redis: { type: 'string' },
    name: { type: 'string' },
  })
  const nodes = integer('--nodes', values.nodes, 4, 1, 64)
  const name = values.name ?? 'sessionmesh'
  if (!/^[\w-]+$/.test(name))
    throw new UsageError(`--name must be letters, digits, _ and -, not ${name}`)
  const redis = values.redis ?? 'redis://127.0.0.1:6379'
  redisUrl(redis)
  return {
    nodes,
    basePort: integer('--base-port', values['base-port'], 3001, 1, 65_535 - nodes + 1),
    app: values.app,
    redis,
    name,
  }
}

type OptionSpec = Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>

function parse<T extends OptionSpec>(command: string, argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false })
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    throw new UsageError(`${command}: ${message}\nRun \`sessionmesh help\` for the options.`)
  }
}

function integer(
  name: string,
  raw: string | undefined,
  fallback: number,
  min: number,
  max: number,
): number {
  if (raw === undefined) return fallback
  const value = Number(raw)
  if (!/^\d+$/.test(raw) || value < min || value > max) {
    throw new UsageError(
      `${name} must be a whole number from ${min} to ${max}, not ${JSON.stringify(raw)}`,
    )
  }
  return value
}

function oneOf<T extends string>(name: string, raw: string, choices: readonly T[]): T {
  const found = choices.find((choice) => choice === raw)
  if (found === undefined) {
    throw new UsageError(`${name} must be one of ${choices.join(', ')}, not ${JSON.stringify(raw)}`)
  }
  return found
}

function databaseUrl(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined
  if (!/^(postgres|postgresql|mysql|mariadb):\/\//.test(raw)) {
    throw new UsageError(
      `--database-url must be a postgres:// or mysql:// URL, not ${JSON.stringify(redactUrl(raw))}`,
    )
  }
  return raw
}

function tableName(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined
  try {
    tableParts(raw)
  } catch (error) {
    throw new UsageError(`--table: ${(error as Error).message}`)
  }
  return raw
}

/** `url` with its password replaced by `***`, for logs and messages. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^:/@]*):[^@/]*@/i, '$1:***@')
}

function redisUrl(raw: string): void {
  let target: RedisTarget
  try {
    target = parseRedisUrl(raw)
  } catch {
    throw new UsageError(
      `--redis must be a redis://, redis+cluster:// or redis+sentinel:// URL (or rediss…), not ${JSON.stringify(raw)}`,
    )
  }
  if (target.kind === 'standalone') {
    let url: URL | undefined
    try {
      url = new URL(raw)
    } catch {
      url = undefined
    }
    if (!url?.hostname) throw new UsageError(`--redis ${JSON.stringify(raw)} names no host`)
  }
}
