import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { connect } from 'node:http2'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import express from 'express'
import session from 'express-session'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type RunningNginx, startNginx } from '../../packages/sessionmesh/src/cli/nginx.js'
import { Cluster, freePortRange } from '../support/cluster.js'
import { tlsRequest } from '../support/https-client.js'
import { freePort } from '../support/redis-server.js'

// `sessionmesh up --tls` for real: a throwaway CA, HTTPS (HTTP/2) at nginx, the plain
// HTTP port redirecting, and the demo's session cookie marked Secure behind it.

describe('sessionmesh up --tls', () => {
  let cluster: Cluster
  let httpPort: number
  let ca: string

  beforeAll(async () => {
    const port = await freePortRange(3)
    httpPort = port + 3
    cluster = await Cluster.start(['--tls', '--http-port', String(httpPort), '--nodes', '2'], port)
    const caPath = /^ready https:\/\/127\.0\.0\.1:\d+ ca=(\S+)$/m.exec(cluster.stdout)?.[1]
    if (!caPath) throw new Error(`no ca= on the ready line:\n${cluster.stdout}`)
    ca = readFileSync(caPath, 'utf8')
  })
  afterAll(async () => {
    await cluster?.stop()
  })

  it('names a CA that verifies the certificate for 127.0.0.1, and only that CA does', async () => {
    expect(ca).toMatch(/BEGIN CERTIFICATE/)
    const ok = await tlsRequest(`${cluster.base}/healthz`, { ca })
    expect(ok.status).toBe(200)
    // Without the CA the same certificate is refused: the trust is real, not switched off.
    await expect(tlsRequest(`${cluster.base}/healthz`)).rejects.toThrow(/certificate/i)
  })

  it('speaks HTTP/2 to clients that offer it', async () => {
    const client = connect(cluster.base, { ca })
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const stream = client.request({ ':path': '/healthz' })
        stream.once('response', (headers) => resolve(Number(headers[':status'])))
        stream.once('error', reject)
        stream.resume()
      })
      expect(status).toBe(200)
      expect(client.alpnProtocol).toBe('h2')
    } finally {
      client.close()
    }
  })

  it('redirects plain HTTP to HTTPS on --port, keeping the path', async () => {
    const response = await tlsRequest(`http://127.0.0.1:${httpPort}/api/me?x=1`)
    expect(response.status).toBe(301)
    expect(response.headers.location).toBe(`${cluster.base}/api/me?x=1`)
  })

  it('sets the session cookie Secure and HttpOnly, and the login holds over HTTPS', async () => {
    const login = await tlsRequest(`${cluster.base}/api/login`, {
      ca,
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: cluster.base },
      body: JSON.stringify({ username: 'alice', password: 'sessionmesh' }),
    })
    expect(login.status).toBe(200)
    const cookie = (login.headers['set-cookie'] ?? []) as string[]
    expect(cookie).toHaveLength(1)
    expect(cookie[0]).toMatch(/^sessionmesh=/)
    expect(cookie[0]).toMatch(/; Secure/)
    expect(cookie[0]).toMatch(/; HttpOnly/)
    const me = await tlsRequest(`${cluster.base}/api/me`, {
      ca,
      headers: { cookie: String(cookie[0]).split(';')[0] ?? '' },
    })
    expect(me.status).toBe(200)
    expect(JSON.parse(me.body)).toMatchObject({ user: { id: 'alice' } })
  })

  it('removes its CA and certificates when it stops', async () => {
    const caPath = /ca=(\S+)$/m.exec(cluster.stdout)?.[1] ?? ''
    expect(existsSync(caPath)).toBe(true)
    expect(await cluster.stop()).toBe(0)
    expect(existsSync(caPath)).toBe(false)
  })
})

// Issue 11 item 11: a TLS terminator in front of nginx. Without the option nginx
// overwrites X-Forwarded-Proto with its own (plain) scheme and the app never sets
// Secure; with the terminator listed, its header is passed on, and only its.
describe('nginx behind a trusted front proxy', () => {
  let app: Server
  let appPort: number
  const running: RunningNginx[] = []
  const dirs: string[] = []

  beforeAll(async () => {
    const server = express()
    // The app trusts nginx (loopback) only, as the demo does.
    server.set('trust proxy', 'loopback')
    server.use(
      session({
        secret: 'front-proxy-test',
        resave: false,
        saveUninitialized: false,
        cookie: { secure: 'auto' },
      }),
    )
    server.get('/', (req, res) => {
      ;(req.session as unknown as Record<string, unknown>).seen = true
      res.json({ proto: req.get('x-forwarded-proto'), secure: req.secure })
    })
    appPort = await freePort()
    app = createServer(server)
    await new Promise<void>((resolve) => app.listen(appPort, '127.0.0.1', resolve))
  })
  afterAll(async () => {
    for (const nginx of running) await nginx.stop()
    await new Promise((resolve) => app?.close(resolve))
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  })

  async function nginxWith(frontProxies: string[]): Promise<string> {
    const prefix = mkdtempSync(join(tmpdir(), `sm-front-${process.pid}-`))
    dirs.push(prefix)
    const port = await freePort()
    running.push(
      await startNginx({
        bin: '/usr/sbin/nginx',
        prefix,
        listen: `127.0.0.1:${port}`,
        upstreams: [`127.0.0.1:${appPort}`],
        sticky: false,
        frontProxies,
      }),
    )
    return `http://127.0.0.1:${port}/`
  }

  it('passes on the https a listed front proxy reports, so the cookie is Secure', async () => {
    // The test process stands in for the load balancer: it connects from 127.0.0.1.
    const url = await nginxWith(['127.0.0.1'])
    const response = await tlsRequest(url, { headers: { 'x-forwarded-proto': 'https' } })
    expect(JSON.parse(response.body)).toEqual({ proto: 'https', secure: true })
    expect(String(response.headers['set-cookie'])).toMatch(/; Secure/)
    const plain = await tlsRequest(url)
    expect(JSON.parse(plain.body)).toEqual({ proto: 'http', secure: false })
  })

  it('replaces the header from anyone not listed: a client cannot claim https', async () => {
    const url = await nginxWith(['192.0.2.10'])
    const response = await tlsRequest(url, { headers: { 'x-forwarded-proto': 'https' } })
    expect(JSON.parse(response.body)).toEqual({ proto: 'http', secure: false })
    expect(String(response.headers['set-cookie'])).not.toMatch(/Secure/)
  })
})
