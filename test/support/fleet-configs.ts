import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { nginxUser } from '../../packages/sessionmesh/src/cli/nginx.js'
import { CLI } from './cluster.js'

// The configs the fleet runs, as text: docs/deploy.md shows the same texts (with
// its own paths and secrets), and test/unit/deploy-doc.test.ts checks that the
// guide and these stay one and the same.

/** What an app host is told, as `KEY=value` lines (a systemd EnvironmentFile, pm2's env). */
export interface AppEnvironment {
  nodeId: string
  /** The app host's own address on the network nginx reaches it by. */
  host: string
  port: number
  redisUrl: string
  secret: string
  /** nginx's address: the only one whose X-Forwarded-* the app believes. */
  nginx: string
  /** The CA that signed Redis's certificate (for rediss://). */
  caFile?: string
  /** The store's longest wait for Redis, in ms. */
  timeoutMs?: number
}

/** The app host's environment file. */
export function appEnvironment(env: AppEnvironment): string {
  return [
    `SESSIONMESH_NODE_ID=${env.nodeId}`,
    `HOST=${env.host}`,
    `PORT=${env.port}`,
    'SESSIONMESH_STORE=redis',
    `REDIS_URL=${env.redisUrl}`,
    `SESSION_SECRET=${env.secret}`,
    `TRUST_PROXY=${env.nginx}`,
    ...(env.caFile ? [`NODE_EXTRA_CA_CERTS=${env.caFile}`] : []),
    ...(env.timeoutMs ? [`SESSIONMESH_TIMEOUT_MS=${env.timeoutMs}`] : []),
    '',
  ].join('\n')
}

/** `KEY=value` lines back into an environment. */
export function parseEnvironment(text: string): Record<string, string> {
  const env: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const at = line.indexOf('=')
    if (at > 0 && !line.startsWith('#')) env[line.slice(0, at)] = line.slice(at + 1)
  }
  return env
}

/** A Redis host's redis.conf. */
export interface RedisConf {
  bind: string
  dir: string
  password: string
  /** TLS only (the plain port off), with these files; plain port 6379 without. */
  tls?: { cert: string; key: string; ca: string }
  /**
   * In a replication group: a replica of this primary (`address:port`, the same
   * password), or `''` for the first primary.
   */
  replicaOf?: string
}

/** The redis.conf of a Redis host. */
export function redisConf(conf: RedisConf): string {
  // Sessions stay compact listpacks though a User-Agent is over 64 bytes (docs/backends.md).
  const lines = [
    `bind ${conf.bind} 127.0.0.1`,
    `dir ${conf.dir}`,
    'appendonly yes',
    'hash-max-listpack-value 1024',
  ]
  lines.push(`requirepass ${conf.password}`)
  if (conf.tls) {
    lines.push(
      'port 0',
      'tls-port 6380',
      `tls-cert-file ${conf.tls.cert}`,
      `tls-key-file ${conf.tls.key}`,
      `tls-ca-cert-file ${conf.tls.ca}`,
      'tls-auth-clients no',
    )
  } else {
    lines.push('port 6379')
  }
  if (conf.replicaOf !== undefined) {
    // Every member of a Sentinel group may become a replica (the first primary too,
    // after a failover): each can authenticate to whichever is primary.
    lines.push(`masterauth ${conf.password}`)
    // A primary without a replica that acknowledged the stream within 2 s refuses
    // writes (NOREPLICAS, a 503): cut off from its replicas, it stops acknowledging
    // writes that its demotion would drop.
    lines.push('min-replicas-to-write 1', 'min-replicas-max-lag 2')
    if (conf.replicaOf) lines.push(`replicaof ${conf.replicaOf.replace(':', ' ')}`)
  }
  return `${lines.join('\n')}\n`
}

/** A Sentinel's config: it watches `primary` as `name`; a quorum of 2 agrees it is down. */
export function sentinelConf(conf: {
  bind: string
  dir: string
  name: string
  primary: string
  password: string
}): string {
  return [
    `bind ${conf.bind} 127.0.0.1`,
    'port 26379',
    `dir ${conf.dir}`,
    `sentinel monitor ${conf.name} ${conf.primary.replace(':', ' ')} 2`,
    `sentinel auth-pass ${conf.name} ${conf.password}`,
    // Down after 1 s without an answer; a failover may take 5 s before it is retried.
    `sentinel down-after-milliseconds ${conf.name} 1000`,
    `sentinel failover-timeout ${conf.name} 5000`,
    `sentinel parallel-syncs ${conf.name} 1`,
    '',
  ].join('\n')
}

/** What `sessionmesh nginx` is run with for the nginx host. */
export interface NginxCommand {
  upstreams: string[]
  cert: string
  key: string
  /** `address:443`. */
  listen: string
  /** `address:80`. */
  httpListen: string
}

/** The arguments of `sessionmesh nginx` for the nginx host. */
export function nginxCommand(command: NginxCommand): string[] {
  return [
    'nginx',
    ...command.upstreams.flatMap((upstream) => ['--upstream', upstream]),
    '--tls-cert',
    command.cert,
    '--tls-key',
    command.key,
    '--port',
    command.listen,
    '--http-port',
    command.httpListen,
  ]
}

/** A main nginx.conf that includes the generated file, as Debian's includes conf.d. */
export function nginxMain(options: { prefix: string; user: string | undefined; include: string }) {
  return [
    `pid ${options.prefix}/nginx.pid;`,
    `error_log ${options.prefix}/logs/error.log;`,
    ...(options.user ? [`user ${options.user};`] : []),
    'daemon off;',
    'events { worker_connections 1024; }',
    'http {',
    `  access_log ${options.prefix}/logs/access.log;`,
    `  client_body_temp_path ${options.prefix}/temp/client_body;`,
    `  proxy_temp_path ${options.prefix}/temp/proxy;`,
    `  include ${options.include};`,
    '}',
    '',
  ].join('\n')
}

/**
 * Runs the built CLI's `sessionmesh nginx` with {@link nginxCommand}'s arguments,
 * writes its output to `prefix/sessionmesh.conf` and a main nginx.conf that
 * includes it; returns the main config's path.
 */
export function writeNginxConfig(prefix: string, command: NginxCommand): string {
  const generated = spawnSync(process.execPath, [CLI, ...nginxCommand(command)], {
    encoding: 'utf8',
  })
  if (generated.status !== 0) throw new Error(`sessionmesh nginx failed: ${generated.stderr}`)
  const include = join(prefix, 'sessionmesh.conf')
  writeFileSync(include, generated.stdout)
  const config = join(prefix, 'nginx.conf')
  writeFileSync(config, nginxMain({ prefix, user: nginxUser(), include }))
  return config
}
