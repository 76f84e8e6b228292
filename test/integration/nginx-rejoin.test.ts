import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type RunningNginx, startNginx } from '../../packages/sessionmesh/src/cli/nginx.js'
import {
  FAIL_TIMEOUT_SECONDS,
  REJOIN_SECONDS,
} from '../../packages/sessionmesh/src/cli/nginx-config.js'
import { findTool, freePort, tools } from '../../packages/sessionmesh/src/cli/system.js'

// What the rolling restarts (`sessionmesh up`'s and the demo's READY_HOLD_MS under
// pm2) rely on: how long the generated config keeps a node out after one failed
// attempt. nginx keeps time in whole seconds, so a node that failed early in second
// S is skipped through second S + fail_timeout: close to fail_timeout + 1 s, longer
// than fail_timeout alone. A restart that waited only fail_timeout took the next
// node down while nginx still skipped this one (pm2 reload: a burst of 502s).

let dir: string
let nginx: RunningNginx | undefined
let base: string
const nodes: Server[] = []
/** While set, node b resets every request (nginx counts a failed attempt); b records when. */
let failing = false
const failures: number[] = []

function node(name: string): Promise<Server> {
  const server = createServer((req, res) => {
    if (name === 'b' && failing) {
      failures.push(Date.now())
      req.socket.destroy()
      return
    }
    res.end(name)
  })
  nodes.push(server)
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)))
}

beforeAll(async () => {
  const bin = findTool(tools.nginx)
  if (!bin) throw new Error('nginx is not installed')
  const upstreams = [await node('a'), await node('b')].map(
    (server) => `127.0.0.1:${(server.address() as AddressInfo).port}`,
  )
  dir = mkdtempSync(join(tmpdir(), `sm-nginx-rejoin-${process.pid}-`))
  const listen = `127.0.0.1:${await freePort()}`
  nginx = await startNginx({ bin, prefix: join(dir, 'nginx'), listen, upstreams, sticky: false })
  base = `http://${listen}`
})
afterAll(async () => {
  await nginx?.stop()
  for (const server of nodes) {
    server.closeAllConnections()
    server.close()
  }
  if (dir) rmSync(dir, { recursive: true, force: true })
})

async function answer(): Promise<string> {
  const response = await fetch(base)
  expect(response.status).toBe(200)
  return response.text()
}

describe('the generated nginx config: how long a node that failed once stays out', () => {
  it('past fail_timeout when the failure came early in a second, and never past REJOIN_SECONDS', async () => {
    // Both nodes serve before the failure.
    const before = new Set<string>()
    for (let i = 0; i < 20 && before.size < 2; i++) before.add(await answer())
    expect(before).toEqual(new Set(['a', 'b']))

    // Fail b once, early in a second (a burst that spills into the next second is
    // tried again), so the whole-second rounding is at its largest.
    let failedAt = 0
    for (let attempt = 0; attempt < 5 && failedAt === 0; attempt++) {
      await sleep(1_050 - (Date.now() % 1_000))
      failing = true
      failures.length = 0
      // The request b resets is passed on to a: every answer is still a 200.
      for (let i = 0; i < 20 && failures.length === 0; i++) expect(await answer()).toBe('a')
      failing = false
      const [first] = failures
      if (first !== undefined && first % 1_000 < 400) failedAt = first
      // A failure late in a second does not count: wait until b serves again.
      else for (let i = 0; i < 200 && (await answer()) !== 'b'; i++) await sleep(20)
    }
    expect(failedAt).toBeGreaterThan(0)

    // b is healthy again at once; ask until nginx sends it a request.
    let backAt = 0
    while (backAt === 0 && Date.now() - failedAt < 10_000) {
      if ((await answer()) === 'b') backAt = Date.now()
      else await sleep(20)
    }
    const out = backAt - failedAt
    // Skipped through the end of second S + fail_timeout, which started more than
    // fail_timeout + 0.6 s after the failure...
    expect(out).toBeGreaterThan((FAIL_TIMEOUT_SECONDS + 0.5) * 1_000)
    expect(backAt).toBeGreaterThanOrEqual(
      (Math.floor(failedAt / 1_000) + FAIL_TIMEOUT_SECONDS + 1) * 1_000,
    )
    // ...and back once that second is over (with room for a loaded machine).
    expect(out).toBeLessThan((REJOIN_SECONDS + 1) * 1_000)
  })
})
