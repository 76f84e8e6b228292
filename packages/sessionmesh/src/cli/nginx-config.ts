/**
 * The nginx config sessionmesh generates. Every directive carries a comment that
 * says why it is there, because the config is meant to be read (and copied) by
 * people who deploy nginx themselves; docs/nginx.md explains each one at length.
 */

import {
  FORWARDED_PROTO,
  frontProxyBlock,
  type NginxTls,
  redirectBlock,
  tlsLines,
  validateAddressRange,
  validateTls,
} from './nginx-tls.js'

export { http2ModeFor, type NginxTls } from './nginx-tls.js'

/** One app process nginx proxies to, as `host:port`. */
export type Upstream = string

/** Options of {@link renderNginxConfig}. */
export interface NginxConfigOptions {
  /** The app processes, as `host:port` (at least one). */
  upstreams: readonly Upstream[]
  /**
   * Where nginx listens: a port, or `address:port`.
   * @default 80
   */
  listen?: string
  /**
   * Route socket.io long-polling (`/socket.io/`) by a hash of the session cookie and
   * client address, so every poll of one socket.io session reaches the node that holds
   * it. Everything else stays on least_conn. Not needed when clients use WebSocket only.
   * @default false
   */
  sticky?: boolean
  /**
   * Name of the session cookie the sticky hash reads. nginx variables cannot contain
   * dots or dashes, so `connect.sid` cannot be used here.
   * @default 'sessionmesh'
   */
  cookieName?: string
  /**
   * A complete nginx.conf that runs unprivileged in `prefix` (pid, logs, temp files
   * inside it, in the foreground), as `sessionmesh up` runs it. Without it the output
   * is an http-context file for /etc/nginx/conf.d/.
   */
  /**
   * Terminate TLS at nginx: `listen` serves HTTPS (HTTP/2 where asked), and plain
   * HTTP on `tls.redirectFrom` is redirected to it.
   * @default undefined (plain HTTP on `listen`)
   */
  tls?: NginxTls
  /**
   * Addresses or CIDR ranges of the proxies in front of nginx (a TLS-terminating
   * load balancer) whose `X-Forwarded-Proto` nginx passes on to the nodes. From
   * every other address nginx sends its own scheme, so a client cannot claim https.
   * @default [] (nginx always sends its own scheme)
   */
  frontProxies?: readonly string[]
  managed?: {
    /** Absolute path of nginx's private prefix directory. */
    prefix: string
    /**
     * The `user` workers switch to when the master runs as root; ignored otherwise.
     * @default undefined (no `user` directive)
     */
    user?: string
  }
}

/** How long nginx waits on an upstream read or write. Above socket.io's 25 s ping + 20 s timeout. */
export const PROXY_TIMEOUT_SECONDS = 60
/** How long nginx skips a node after a failed attempt (`fail_timeout`). */
export const FAIL_TIMEOUT_SECONDS = 1
/**
 * How long after its last failed attempt nginx may still skip a node that is back.
 * nginx keeps time in whole seconds: an attempt that failed at any moment of second
 * S keeps the node out through second S + fail_timeout, up to fail_timeout + 1 s
 * later. A rolling restart waits this long after each replacement answers, so that
 * nginx never has two nodes out at once.
 */
export const REJOIN_SECONDS = FAIL_TIMEOUT_SECONDS + 1
/** How long an idle upstream connection is kept; the app's keepAliveTimeout must be longer. */
export const UPSTREAM_KEEPALIVE_SECONDS = 60

const UPSTREAM = 'sessionmesh_nodes'
// Which node answered and how: the first thing to read when a request failed.
const LOG_FORMAT =
  'log_format upstream \'$remote_addr [$time_local] "$request" $status $upstream_addr $upstream_status $request_time\';'

const STICKY_UPSTREAM = 'sessionmesh_sticky'

/**
 * Renders the nginx config for `options.upstreams`.
 *
 * @example
 * renderNginxConfig({ upstreams: ['127.0.0.1:3001', '127.0.0.1:3002'], listen: '8080' })
 */
export function renderNginxConfig(options: NginxConfigOptions): string {
  if (options.upstreams.length === 0) throw new Error('at least one upstream is needed')
  for (const upstream of options.upstreams) validateUpstream(upstream)
  const listen = validateListen(options.listen ?? (options.tls ? '443' : '80'), 'listen')
  if (options.tls) validateTls(options.tls, listen, validateListen)
  const frontProxies = options.frontProxies ?? []
  for (const proxy of frontProxies) validateAddressRange(proxy)
  const cookieName = options.cookieName ?? 'sessionmesh'
  if (!/^\w+$/.test(cookieName)) {
    throw new Error(
      `cookie name must be letters, digits and _ for nginx, not ${JSON.stringify(cookieName)}`,
    )
  }

  const http = [
    ...mapBlock(),
    ...(frontProxies.length > 0 ? ['', ...frontProxyBlock(frontProxies)] : []),
    '',
    ...upstreamBlock(UPSTREAM, options.upstreams, [
      '# Send each request to the node with the fewest active requests: sessions',
      '# live in the store, so any node can serve any request.',
      'least_conn;',
    ]),
  ]
  if (options.sticky) {
    http.push(
      '',
      ...upstreamBlock(STICKY_UPSTREAM, options.upstreams, [
        '# socket.io long-polling only: the polls of one socket.io session must reach',
        '# the node that holds it. Consistent hashing moves few clients when a node',
        '# is added or removed; the address stands in while there is no cookie yet.',
        `hash $cookie_${cookieName}$remote_addr consistent;`,
      ]),
    )
  }
  if (options.tls?.redirectFrom !== undefined) {
    http.push('', ...redirectBlock(options.tls.redirectFrom, listen))
  }
  http.push(
    '',
    ...serverBlock({
      listen,
      sticky: options.sticky === true,
      tls: options.tls,
      proto: frontProxies.length > 0 ? FORWARDED_PROTO : '$scheme',
    }),
  )

  if (!options.managed) {
    return [
      '# Generated by `sessionmesh nginx`. An http-context file: put it in',
      '# /etc/nginx/conf.d/ (which nginx.conf includes inside `http { }`).',
      '',
      ...http,
      '',
    ].join('\n')
  }
  return [
    ...managedMain(options.managed),
    'http {',
    ...indent([LOG_FORMAT, ...managedHttp(options.managed.prefix), ...http]),
    '}',
    '',
  ].join('\n')
}

function validateUpstream(upstream: string): void {
  const match = /^(\[[0-9a-f:]+\]|[\w.-]+):(\d{1,5})$/i.exec(upstream)
  const port = Number(match?.[2])
  if (!match || port < 1 || port > 65_535) {
    throw new Error(`upstream must be host:port, not ${JSON.stringify(upstream)}`)
  }
}

function mapBlock(): string[] {
  return [
    '# WebSocket upgrades need `Connection: upgrade` towards the node; every other',
    '# request gets an empty Connection header, which keeps the upstream keepalive',
    '# connection open (a literal `close` here would disable keepalive).',
    'map $http_upgrade $connection_upgrade {',
    '  default upgrade;',
    "  '' '';",
    '}',
  ]
}

function upstreamBlock(name: string, upstreams: readonly Upstream[], balance: string[]): string[] {
  return [
    '# The app nodes nginx balances over.',
    `upstream ${name} {`,
    ...indent(balance),
    '  # Shared memory, so that every worker sees the same failure counts.',
    `  zone ${name} 64k;`,
    `  # Passive health: one failed attempt takes a node out for ${FAIL_TIMEOUT_SECONDS} s, then nginx`,
    '  # tries it again with one request. A restarting node is skipped, not waited on.',
    ...upstreams.map(
      (upstream) => `  server ${upstream} max_fails=1 fail_timeout=${FAIL_TIMEOUT_SECONDS}s;`,
    ),
    '  # Idle connections each worker keeps open to the nodes: no TCP handshake per',
    '  # request. The nodes keep idle connections longer than nginx does (their',
    '  # keepAliveTimeout), so nginx never sends a request on a connection the node',
    '  # is closing.',
    '  keepalive 32;',
    `  keepalive_timeout ${UPSTREAM_KEEPALIVE_SECONDS}s;`,
    '}',
  ]
}

interface ServerBlock {
  listen: string
  sticky: boolean
  tls: NginxTls | undefined
  /** The variable X-Forwarded-Proto is set from. */
  proto: string
}

function serverBlock({ listen, sticky, tls, proto }: ServerBlock): string[] {
  const proxy = [
    '# HTTP/1.1 towards the nodes: needed for keepalive and for WebSocket upgrades.',
    'proxy_http_version 1.1;',
    'proxy_set_header Upgrade $http_upgrade;',
    'proxy_set_header Connection $connection_upgrade;',
    '# What the client asked for and who it is: with `trust proxy` set, the app',
    '# sees the real client address, and https, so secure cookies are still set.',
    '# X-Forwarded-Proto replaces what the client sent, so no client can claim',
    '# https (`--front-proxy` names a TLS terminator in front of nginx that may).',
    'proxy_set_header Host $host;',
    'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    `proxy_set_header X-Forwarded-Proto ${proto};`,
    'proxy_set_header X-Forwarded-Host $host;',
    "# Above socket.io's ping interval (25 s) plus ping timeout (20 s): a quiet",
    '# WebSocket or a held long-poll is not cut by nginx.',
    `proxy_read_timeout ${PROXY_TIMEOUT_SECONDS}s;`,
    `proxy_send_timeout ${PROXY_TIMEOUT_SECONDS}s;`,
    '# A node that is down refuses at once; one that does not accept in 2 s is skipped.',
    'proxy_connect_timeout 2s;',
    '# A request a node could not answer (down, restarting, reset, 502) goes to',
    '# the next node. nginx never resends a POST, LOCK or PATCH that already',
    '# reached a node (`non_idempotent` is left out on purpose). 503 is left out',
    '# too: the demo answers 503 when the shared store is down, which no other',
    '# node can fix, and counting it as a failure would take every node out.',
    'proxy_next_upstream error timeout http_502;',
    'proxy_next_upstream_timeout 10s;',
  ]
  const locations = ['location / {', ...indent(proxy), `  proxy_pass http://${UPSTREAM};`, '}']
  if (sticky) {
    locations.push(
      '',
      '# Long-polling transports reach the sticky upstream; WebSockets may too.',
      'location /socket.io/ {',
      ...indent(proxy),
      `  proxy_pass http://${STICKY_UPSTREAM};`,
      '}',
    )
  }
  return [
    'server {',
    ...indent(tls ? tlsLines(listen, tls) : [`listen ${listen};`]),
    '  # No nginx version in error pages and headers.',
    '  server_tokens off;',
    ...indent(locations),
    '}',
  ]
}

function managedMain(managed: NonNullable<NginxConfigOptions['managed']>): string[] {
  const lines = [
    '# Generated by `sessionmesh up`: a private nginx in its own prefix directory,',
    '# in the foreground, so that the supervisor sees it exit and stops it by signal.',
    'daemon off;',
    `pid ${managed.prefix}/nginx.pid;`,
    `error_log ${managed.prefix}/logs/error.log warn;`,
    'worker_processes 2;',
  ]
  if (managed.user) {
    lines.push(
      '# The master runs as root; workers drop to an unprivileged user.',
      `user ${managed.user};`,
    )
  }
  return [...lines, 'events {', '  worker_connections 1024;', '}', '']
}

/** Every path nginx writes to lives in the prefix, so that no root is needed. */
function managedHttp(prefix: string): string[] {
  return [
    '# Every file nginx writes lives in its prefix: no root needed, nothing left behind.',
    `access_log ${prefix}/logs/access.log upstream;`,
    `client_body_temp_path ${prefix}/temp/client_body;`,
    `proxy_temp_path ${prefix}/temp/proxy;`,
    `fastcgi_temp_path ${prefix}/temp/fastcgi;`,
    `uwsgi_temp_path ${prefix}/temp/uwsgi;`,
    `scgi_temp_path ${prefix}/temp/scgi;`,
    '',
  ]
}

function indent(lines: string[]): string[] {
  return lines.map((line) => (line === '' ? '' : `  ${line}`))
}

function validateListen(listen: string, what: string): string {
  if (!/^(\[[0-9a-f:]+\]:|[\w.-]+:)?\d{1,5}$/i.test(listen)) {
    throw new Error(`${what} must be a port or address:port, not ${JSON.stringify(listen)}`)
  }
  return listen
}
