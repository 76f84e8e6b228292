import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { nginxUser } from '../../packages/sessionmesh/src/cli/nginx.js'
import { renderNginxConfig } from '../../packages/sessionmesh/src/cli/nginx-config.js'

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

describe('nginx -t on generated configs', () => {
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
