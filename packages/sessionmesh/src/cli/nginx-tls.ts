/**
 * The TLS and front-proxy parts of the generated nginx config: HTTPS with HTTP/2,
 * the plain-HTTP redirect, and which proxies in front of nginx may say the client
 * used https. docs/deploy.md shows them in place.
 */

/** TLS settings of `NginxConfigOptions.tls`. */
export interface NginxTls {
  /** Path of the certificate chain (PEM), as nginx will read it. */
  cert: string
  /** Path of the private key (PEM). */
  key: string
  /**
   * A port or `address:port` where plain HTTP is answered with a redirect to HTTPS.
   * @default undefined (no plain HTTP listener)
   */
  redirectFrom?: string
  /**
   * How this nginx turns HTTP/2 on: `'directive'` (`http2 on;`, nginx 1.25.1 and
   * later), `'listen'` (`listen … ssl http2;`, older nginx), or `false` for none.
   * `http2ModeFor()` picks it from `nginx -v`.
   * @default 'listen'
   */
  http2?: 'directive' | 'listen' | false
}

/**
 * The HTTP/2 switch an nginx of `version` (as `nginx -v` prints it, e.g.
 * `nginx/1.22.1`) understands; `'listen'` when the version is unknown.
 */
export function http2ModeFor(version: string): 'directive' | 'listen' {
  const match = /(\d+)\.(\d+)\.(\d+)/.exec(version)
  if (!match) return 'listen'
  const [major, minor, patch] = match.slice(1).map(Number) as [number, number, number]
  return major > 1 || minor > 25 || (minor === 25 && patch >= 1) ? 'directive' : 'listen'
}

/** The variable the front proxy block sets X-Forwarded-Proto from. */
export const FORWARDED_PROTO = '$sessionmesh_forwarded_proto'

/** A front proxy's X-Forwarded-Proto counts; anyone else's is replaced by nginx's scheme. */
export function frontProxyBlock(proxies: readonly string[]): string[] {
  return [
    '# The proxies in front of nginx (a TLS-terminating load balancer): only their',
    '# X-Forwarded-Proto is passed on, so the app behind them still sets Secure',
    '# cookies. From any other address the header is replaced by the scheme',
    '# nginx itself was reached by.',
    'geo $sessionmesh_front_proxy {',
    '  default 0;',
    ...proxies.map((proxy) => `  ${proxy} 1;`),
    '}',
    `map "$sessionmesh_front_proxy:$http_x_forwarded_proto" ${FORWARDED_PROTO} {`,
    '  default $scheme;',
    '  "1:https" https;',
    '  "1:http" http;',
    '}',
  ]
}

/** The `listen`, certificate and protocol lines of the HTTPS server block. */
export function tlsLines(listen: string, tls: NginxTls): string[] {
  const http2 = tls.http2 ?? 'listen'
  return [
    '# HTTPS, with HTTP/2 for browsers that offer it (WebSockets still upgrade over',
    '# HTTP/1.1: browsers open a separate connection for them).',
    `listen ${listen} ssl${http2 === 'listen' ? ' http2' : ''};`,
    ...(http2 === 'directive' ? ['http2 on;'] : []),
    '# The certificate chain and its key, readable by the nginx master only.',
    `ssl_certificate ${tls.cert};`,
    `ssl_certificate_key ${tls.key};`,
    '# TLS 1.2 and 1.3 only; the older ones have known weaknesses.',
    'ssl_protocols TLSv1.2 TLSv1.3;',
    '# Resumed handshakes skip the key exchange: a reconnecting browser is faster.',
    'ssl_session_cache shared:sessionmesh_tls:1m;',
    'ssl_session_timeout 1h;',
  ]
}

/** Plain HTTP on `from` answers every request with a redirect to the HTTPS `listen`. */
export function redirectBlock(from: string, listen: string): string[] {
  const port = listen.split(':').pop()
  const target = port === '443' ? 'https://$host$request_uri' : `https://$host:${port}$request_uri`
  return [
    '# Plain HTTP only redirects to HTTPS, so a session cookie never crosses in clear.',
    'server {',
    `  listen ${from};`,
    '  # No nginx version in error pages and headers.',
    '  server_tokens off;',
    '  # 301 for GET and HEAD; browsers repeat other methods as GET, which is harmless here.',
    `  return 301 ${target};`,
    '}',
  ]
}

/** Throws unless the certificate paths are safe nginx tokens and the redirect port differs. */
export function validateTls(
  tls: NginxTls,
  listen: string,
  validateListen: (listen: string, what: string) => string,
): void {
  for (const [name, path] of [
    ['certificate', tls.cert],
    ['key', tls.key],
  ] as const) {
    // nginx reads the path as one token: no spaces, quotes or semicolons.
    if (!/^[\w./@:+-]+$/.test(path)) {
      throw new Error(`TLS ${name} path must be a plain file path, not ${JSON.stringify(path)}`)
    }
  }
  if (tls.redirectFrom === undefined) return
  validateListen(tls.redirectFrom, 'the HTTP redirect listen address')
  if (tls.redirectFrom.split(':').pop() === listen.split(':').pop()) {
    throw new Error('the HTTP redirect needs a port of its own, not the HTTPS one')
  }
}

/** Throws unless `range` is an IPv4/IPv6 address or CIDR range, as `geo` takes it. */
export function validateAddressRange(range: string): void {
  const [address = '', bits, ...rest] = range.split('/')
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(address)
  const v6 = /^[0-9a-f:]+$/i.test(address) && address.includes(':')
  const maxBits = v4 ? 32 : 128
  const ok =
    rest.length === 0 &&
    (v6 || v4?.slice(1).every((part) => Number(part) <= 255) === true) &&
    (bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= maxBits))
  if (!ok) {
    throw new Error(`front proxy must be an address or CIDR range, not ${JSON.stringify(range)}`)
  }
}
