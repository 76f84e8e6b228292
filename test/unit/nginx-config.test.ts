import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { nginxUser } from '../../packages/sessionmesh/src/cli/nginx.js'
import { http2ModeFor, renderNginxConfig } from '../../packages/sessionmesh/src/cli/nginx-config.js'
import { nginxVersion } from '../../packages/sessionmesh/src/cli/system.js'
import { createThrowawayTls } from '../../packages/sessionmesh/src/cli/tls.js'

const NGINX = '/usr/sbin/nginx'
const upstreams = ['127.0.0.1:3001', '127.0.0.1:3002', '127.0.0.1:3003']
const dirs: string[] = []

afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})

/** Runs the real `nginx -t` on a config in a private prefix. */
function nginxTest(config: (prefix: string) => string): { status: number | null; output: string } {
  const prefix = mkdtempSync(join(tmpdir(), 'sm-nginx-test-'))
  dirs.push(prefix)
  mkdirSync(join(prefix, 'logs'))
  mkdirSync(join(prefix, 'temp'))
  writeFileSync(join(prefix, 'nginx.conf'), config(prefix))
  const result = spawnSync(
    NGINX,
    ['-t', '-p', prefix, '-c', join(prefix, 'nginx.conf'), '-e', join(prefix, 'logs/error.log')],
    { encoding: 'utf8' },
  )
  return { status: result.status, output: `${result.stdout}${result.stderr}` }
}

/** The directives of a config without its comments, one per line. */
function directives(config: string): string[] {
  return config
    .split('\n')
    .map((line) => line.replace(/#.*$/, '').trim())
    .filter(Boolean)
}

describe('renderNginxConfig', () => {
  const config = renderNginxConfig({ upstreams, listen: '8080' })
  const lines = directives(config)

  it('balances over every upstream with least_conn, passive health checks and keepalive', () => {
    expect(lines).toContain('least_conn;')
    for (const upstream of upstreams) {
      expect(lines).toContain(`server ${upstream} max_fails=1 fail_timeout=1s;`)
    }
    expect(lines).toContain('keepalive 32;')
    expect(lines.filter((line) => line.startsWith('proxy_pass'))).toEqual([
      'proxy_pass http://sessionmesh_nodes;',
    ])
  })

  it('keeps upstream keepalive for plain requests: empty Connection unless upgrading', () => {
    const start = config.indexOf('map $http_upgrade')
    const map = config.slice(start, config.indexOf('}', start) + 1)
    expect(directives(map)).toEqual([
      'map $http_upgrade $connection_upgrade {',
      'default upgrade;',
      "'' '';",
      '}',
    ])
    expect(lines).toContain('proxy_http_version 1.1;')
    expect(lines).toContain('proxy_set_header Connection $connection_upgrade;')
    expect(lines).toContain('proxy_set_header Upgrade $http_upgrade;')
    expect(config).not.toMatch(/Connection "?close/)
  })

  it('passes who the client is and timeouts above the socket.io ping', () => {
    expect(lines).toContain('proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;')
    expect(lines).toContain('proxy_set_header X-Forwarded-Proto $scheme;')
    expect(lines).toContain('proxy_set_header X-Forwarded-Host $host;')
    for (const directive of ['proxy_read_timeout', 'proxy_send_timeout']) {
      const line = lines.find((l) => l.startsWith(directive))
      expect(Number(/(\d+)s;/.exec(line ?? '')?.[1])).toBeGreaterThan(25 + 20)
    }
  })

  it('retries the next node without ever resending non-idempotent requests', () => {
    const line = lines.find((l) => l.startsWith('proxy_next_upstream '))
    expect(line).toBe('proxy_next_upstream error timeout http_502;')
    expect(config).not.toMatch(/^\s*proxy_next_upstream [^\n#]*non_idempotent/m)
  })

  it('gives every directive a comment saying why', () => {
    const raw = config.split('\n')
    for (const [index, line] of raw.entries()) {
      const directive = line.trim()
      if (!/^(proxy_|least_conn|keepalive|zone|map |upstream|server_tokens)/.test(directive))
        continue
      // Explained by the comment right above it or above the run of directives it is in.
      const above = raw.slice(0, index).reverse()
      const comment = above.find((l) => !/^\s*[a-z_]+ [^{}#]*;$/.test(l))
      expect(comment?.trim().startsWith('#'), `no comment above ${directive}`).toBe(true)
    }
  })

  it('makes long-polling sticky only under /socket.io/ when asked', () => {
    const sticky = renderNginxConfig({ upstreams, sticky: true, cookieName: 'sm_sid' })
    const stickyLines = directives(sticky)
    expect(stickyLines).toContain('hash $cookie_sm_sid$remote_addr consistent;')
    expect(stickyLines).toContain('location /socket.io/ {')
    expect(stickyLines).toContain('proxy_pass http://sessionmesh_sticky;')
    expect(stickyLines).toContain('least_conn;')
    expect(lines.some((line) => line.startsWith('hash '))).toBe(false)
  })

  it('refuses bad upstreams, listen addresses and cookie names with a clear message', () => {
    expect(() => renderNginxConfig({ upstreams: [] })).toThrow(/at least one upstream/)
    expect(() => renderNginxConfig({ upstreams: ['localhost'] })).toThrow(/host:port/)
    expect(() => renderNginxConfig({ upstreams: ['127.0.0.1:70000'] })).toThrow(/host:port/)
    expect(() => renderNginxConfig({ upstreams, listen: 'eighty' })).toThrow(/listen/)
    expect(() => renderNginxConfig({ upstreams, sticky: true, cookieName: 'connect.sid' })).toThrow(
      /cookie name/,
    )
  })
})

describe('renderNginxConfig with TLS and a front proxy', () => {
  const tls = { cert: '/etc/ssl/sm.pem', key: '/etc/ssl/sm.key' }

  it('serves HTTPS with HTTP/2 on the listen flag, TLS 1.2+ only, and no plain listener', () => {
    const lines = directives(renderNginxConfig({ upstreams, tls }))
    expect(lines).toContain('listen 443 ssl http2;')
    expect(lines).toContain('ssl_certificate /etc/ssl/sm.pem;')
    expect(lines).toContain('ssl_certificate_key /etc/ssl/sm.key;')
    expect(lines).toContain('ssl_protocols TLSv1.2 TLSv1.3;')
    expect(lines.filter((line) => line.startsWith('listen '))).toEqual(['listen 443 ssl http2;'])
  })

  it('uses `http2 on;` for nginx 1.25.1 and later, and nothing when HTTP/2 is off', () => {
    const directive = directives(
      renderNginxConfig({ upstreams, tls: { ...tls, http2: 'directive' } }),
    )
    expect(directive).toContain('listen 443 ssl;')
    expect(directive).toContain('http2 on;')
    const off = directives(renderNginxConfig({ upstreams, tls: { ...tls, http2: false } }))
    expect(off).toContain('listen 443 ssl;')
    expect(off.some((line) => line.includes('http2'))).toBe(false)
    expect(http2ModeFor('nginx version: nginx/1.22.1')).toBe('listen')
    expect(http2ModeFor('nginx version: nginx/1.25.0')).toBe('listen')
    expect(http2ModeFor('nginx version: nginx/1.25.1')).toBe('directive')
    expect(http2ModeFor('nginx version: nginx/1.27.3')).toBe('directive')
  })

  it('redirects plain HTTP to the HTTPS port, keeping the path', () => {
    const standard = renderNginxConfig({ upstreams, tls: { ...tls, redirectFrom: '80' } })
    expect(directives(standard)).toContain('return 301 https://$host$request_uri;')
    const custom = renderNginxConfig({
      upstreams,
      listen: '127.0.0.1:8443',
      tls: { ...tls, redirectFrom: '127.0.0.1:8080' },
    })
    const lines = directives(custom)
    expect(lines).toContain('listen 127.0.0.1:8080;')
    expect(lines).toContain('return 301 https://$host:8443$request_uri;')
  })

  it('passes X-Forwarded-Proto on from listed front proxies only', () => {
    const plain = directives(renderNginxConfig({ upstreams }))
    expect(plain).toContain('proxy_set_header X-Forwarded-Proto $scheme;')
    expect(plain.some((line) => line.startsWith('geo '))).toBe(false)
    const fronted = renderNginxConfig({ upstreams, frontProxies: ['10.0.0.5', '192.168.0.0/16'] })
    const lines = directives(fronted)
    expect(lines).toContain('proxy_set_header X-Forwarded-Proto $sessionmesh_forwarded_proto;')
    expect(lines).toContain('10.0.0.5 1;')
    expect(lines).toContain('192.168.0.0/16 1;')
    expect(lines).toContain('default 0;')
    expect(lines).toContain('default $scheme;')
  })

  it('refuses unsafe certificate paths, a redirect on the HTTPS port and bad proxy ranges', () => {
    expect(() =>
      renderNginxConfig({ upstreams, tls: { ...tls, cert: '/a b.pem; include /etc/x' } }),
    ).toThrow(/plain file path/)
    expect(() =>
      renderNginxConfig({ upstreams, listen: '8443', tls: { ...tls, redirectFrom: '8443' } }),
    ).toThrow(/port of its own/)
    for (const bad of ['10.0.0.300', '10.0.0.0/33', 'example.com', '10.0.0.1/8/1']) {
      expect(() => renderNginxConfig({ upstreams, frontProxies: [bad] }), bad).toThrow(
        /front proxy/,
      )
    }
  })
})

describe('nginx -t on generated configs', () => {
  it('accepts the TLS config with redirect, HTTP/2 as this nginx spells it, and a front proxy', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sm-nginx-tls-'))
    dirs.push(dir)
    const certs = createThrowawayTls({ dir })
    const user = nginxUser()
    const result = nginxTest((prefix) =>
      renderNginxConfig({
        upstreams,
        listen: '127.0.0.1:18443',
        frontProxies: ['127.0.0.1', '10.0.0.0/8', '::1'],
        tls: {
          cert: certs.cert,
          key: certs.key,
          redirectFrom: '127.0.0.1:18080',
          http2: http2ModeFor(nginxVersion(NGINX)),
        },
        managed: user ? { prefix, user } : { prefix },
      }),
    )
    expect(result.output).toMatch(/test is successful/)
    expect(result.output).not.toMatch(/\[warn\]/)
    expect(result.status).toBe(0)
  })

  it('accepts the managed config sessionmesh up runs, in a private prefix', () => {
    const user = nginxUser()
    const result = nginxTest((prefix) =>
      renderNginxConfig({
        upstreams,
        listen: '127.0.0.1:18080',
        sticky: true,
        managed: user ? { prefix, user } : { prefix },
      }),
    )
    expect(result.output).toMatch(/test is successful/)
    expect(result.status).toBe(0)
  })

  it('accepts the conf.d file `sessionmesh nginx` prints, included in an http block', () => {
    const result = nginxTest((prefix) => {
      writeFileSync(
        join(prefix, 'sessionmesh.conf'),
        renderNginxConfig({ upstreams, listen: '18081' }),
      )
      const user = nginxUser()
      return [
        `pid ${prefix}/nginx.pid;`,
        `error_log ${prefix}/logs/error.log;`,
        user ? `user ${user};` : '',
        'events {}',
        `http { client_body_temp_path ${prefix}/temp/body; proxy_temp_path ${prefix}/temp/proxy;`,
        `  include ${prefix}/sessionmesh.conf; }`,
      ].join('\n')
    })
    expect(result.output).toMatch(/test is successful/)
    expect(result.status).toBe(0)
  })

  it('is refused by nginx when broken, so the checks above can fail', () => {
    const result = nginxTest(
      () => 'events {}\nhttp { upstream x { least_conn; } server { proxy_pass; } }',
    )
    expect(result.status).not.toBe(0)
  })
})
