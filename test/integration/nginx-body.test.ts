import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type RunningNginx, startNginx } from '../../packages/sessionmesh/src/cli/nginx.js'
import { freePort } from '../../packages/sessionmesh/src/cli/system.js'

// Issue 11, item 8: as root, nginx's workers run as nobody; a request body nginx
// buffers to disk (over client_body_buffer_size, 16 KB) needs a temp dir they can
// reach. The prefix is laid out as `sessionmesh up` lays it out: inside a private
// mkdtemp directory (mode 0700).

const root = process.getuid?.() === 0
let dir: string
let nginx: RunningNginx | undefined
let upstream: Server
let base: string

beforeAll(async () => {
  upstream = createServer((req, res) => {
    let bytes = 0
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length
    })
    req.on('end', () => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ bytes }))
    })
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  const { port } = upstream.address() as AddressInfo
  dir = mkdtempSync(join(tmpdir(), `sm-nginx-body-${process.pid}-`))
  const listen = `127.0.0.1:${await freePort()}`
  nginx = await startNginx({
    bin: '/usr/sbin/nginx',
    prefix: join(dir, 'nginx'),
    listen,
    upstreams: [`127.0.0.1:${port}`],
    sticky: false,
  })
  base = `http://${listen}`
})
afterAll(async () => {
  await nginx?.stop()
  upstream?.closeAllConnections()
  upstream?.close()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

describe('request bodies through the managed nginx', () => {
  it.skipIf(!root)(
    'as root, a 100 KB body reaches the node (workers as nobody could not write their temp file: 500)',
    async () => {
      const body = 'x'.repeat(100 * 1024)
      const response = await fetch(`${base}/upload`, { method: 'POST', body })
      expect(response.status).toBe(200)
      expect(await response.json()).toEqual({ bytes: body.length })
    },
  )

  it('a small body passes too (what worked before)', async () => {
    const response = await fetch(`${base}/upload`, { method: 'POST', body: 'small' })
    expect(await response.json()).toEqual({ bytes: 5 })
  })
})
