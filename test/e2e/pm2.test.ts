import { type ChildProcess, spawn } from 'node:child_process'
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { errorLogTail, nginxUser } from '../../packages/sessionmesh/src/cli/nginx.js'
import {
  findTool,
  isListening,
  stopProcess,
  tools,
  waitUntil,
} from '../../packages/sessionmesh/src/cli/system.js'
import { Browser, cli, freePortRange, isAlive, runNode } from '../support/cluster.js'
import { RedisServer } from '../support/redis-server.js'

// The file `sessionmesh pm2` prints, run by real pm2 (fork mode, 4 processes on 4
// ports, a private PM2_HOME) behind the config `sessionmesh nginx` prints.

const PM2 = resolve(import.meta.dirname, '../../node_modules/pm2/bin/pm2')
const NODES = 4
const name = `sm${process.pid}`
const ids = Array.from({ length: NODES }, (_, index) => `${name}-${index + 1}`)

const dir = mkdtempSync(join(tmpdir(), `sm-pm2-${process.pid}-`))
const pm2Home = join(dir, 'pm2')
const env = { ...process.env, PM2_HOME: pm2Home, SESSION_SECRET: 'pm2 e2e secret' }
let redis: RedisServer
let nginx: ChildProcess
let base = ''

function pm2(...args: string[]) {
  return runNode(PM2, args, env)
}

/** What pm2 says runs: name → pid and status. */
async function processes(): Promise<Map<string, { pid: number; status: string }>> {
  const { stdout } = await pm2('jlist')
  const list = JSON.parse(stdout.slice(stdout.indexOf('['))) as Array<{
    name: string
    pid: number
    pm2_env: { status: string }
  }>
  return new Map(list.map((app) => [app.name, { pid: app.pid, status: app.pm2_env.status }]))
}

/** Asks until every node has answered (through nginx), and returns the answers by node. */
async function fromEveryNode(browser: Browser, path: string) {
  const answers = new Map<string, Awaited<ReturnType<Browser['request']>>>()
  for (let i = 0; i < 80 && answers.size < NODES; i++) {
    const answer = await browser.request('GET', path)
    if (answer.node) answers.set(answer.node, answer)
  }
  return answers
}

/**
 * True while `pid` runs. A zombie does not count: it has exited, and only waits for
 * a parent that reaps it (the pm2 daemon's parent is init, which may be slow to).
 */
function running(pid: number): boolean {
  if (!isAlive(pid)) return false
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

/** Running processes whose environment names this test's PM2_HOME: the daemon and its apps. */
function processesOfThisHome(): number[] {
  const found: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue
    try {
      const environ = readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0')
      if (environ.includes(`PM2_HOME=${pm2Home}`) && running(Number(entry)))
        found.push(Number(entry))
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found
}

/** The requests nginx did not answer with a 200, and which nodes it tried for them. */
function failedThroughNginx(): string {
  const prefix = join(dir, 'nginx')
  const log = readFileSync(join(prefix, 'access.log'), 'utf8').split('\n')
  const failed = log.filter((line) => line && line.split(' ')[2] !== '200').slice(0, 20)
  return ['nginx access log ($msec $uri $status $upstream_addr $upstream_status):', ...failed]
    .concat(['error log:', errorLogTail(prefix)])
    .join('\n')
}

beforeAll(async () => {
  redis = await RedisServer.start()
  const port = await freePortRange(NODES)
  base = `http://127.0.0.1:${port}`
  const nodePorts = Array.from({ length: NODES }, (_, index) => port + 1 + index)

  const ecosystem = await cli([
    'pm2',
    '--nodes',
    String(NODES),
    '--base-port',
    String(port + 1),
    '--redis',
    redis.url,
    '--name',
    name,
  ])
  expect(ecosystem.code).toBe(0)
  writeFileSync(join(dir, 'ecosystem.config.cjs'), ecosystem.stdout)

  const conf = await cli([
    'nginx',
    ...nodePorts.flatMap((p) => ['--upstream', `127.0.0.1:${p}`]),
    '--port',
    `127.0.0.1:${port}`,
  ])
  expect(conf.code).toBe(0)
  const prefix = join(dir, 'nginx')
  mkdirSync(join(prefix, 'temp'), { recursive: true })
  mkdirSync(join(prefix, 'logs'), { recursive: true })
  chmodSync(dir, 0o755)
  chmodSync(prefix, 0o755)
  writeFileSync(join(prefix, 'sessionmesh.conf'), conf.stdout)
  const user = nginxUser()
  writeFileSync(
    join(prefix, 'nginx.conf'),
    [
      `pid ${prefix}/nginx.pid;`,
      `error_log ${prefix}/logs/error.log;`,
      user ? `user ${user};` : '',
      'daemon off;',
      'events {}',
      `http { client_body_temp_path ${prefix}/temp/body; proxy_temp_path ${prefix}/temp/proxy;`,
      // Which node answered each request and how: what a failed reload is read from.
      `  log_format upstream '$msec $request_uri $status $upstream_addr $upstream_status';`,
      `  access_log ${prefix}/access.log upstream; include ${prefix}/sessionmesh.conf; }`,
    ].join('\n'),
  )
  const bin = findTool(tools.nginx)
  if (!bin) throw new Error('nginx is not installed')
  nginx = spawn(bin, ['-p', prefix, '-c', join(prefix, 'nginx.conf')], { stdio: 'ignore' })
  await waitUntil(() => isListening(port), `nginx on ${port}`, 10_000)

  const started = await pm2('start', join(dir, 'ecosystem.config.cjs'))
  expect(started.code, started.stderr).toBe(0)
  const health = new Browser(base)
  await waitUntil(
    async () => (await fromEveryNode(health, '/healthz')).size === NODES,
    'every pm2 process answering through nginx',
    60_000,
  )
})

afterAll(async () => {
  // Whatever a failed test left: pm2's own teardown, then the rest.
  if (processesOfThisHome().length > 0) {
    await pm2('delete', 'all')
    await pm2('kill')
  }
  if (nginx) await stopProcess(nginx, 'SIGQUIT', 5_000)
  await redis?.stop()
  if (!process.env.SM_KEEP) rmSync(dir, { recursive: true, force: true })
})

describe('sessionmesh pm2: the ecosystem file under real pm2, behind nginx', () => {
  it('runs the demo in every pm2 process, and one login is seen by all of them', async () => {
    const running = await processes()
    expect([...running.keys()].sort()).toEqual(ids)
    for (const app of running.values()) expect(app.status).toBe('online')

    const browser = new Browser(base)
    expect((await browser.login('alice')).status).toBe(200)
    const me = await fromEveryNode(browser, '/api/me')
    expect([...me.keys()].sort()).toEqual(ids)
    for (const [node, answer] of me) {
      expect(answer).toMatchObject({ status: 200, body: { user: { id: 'alice' }, node } })
    }
  })

  it('pm2 reload all under a request loop: zero failed requests, nobody logged out', async () => {
    const browsers = [new Browser(base), new Browser(base)]
    for (const [index, browser] of browsers.entries()) {
      expect((await browser.login(index === 0 ? 'bob' : 'carol')).status).toBe(200)
    }
    const before = await processes()

    let reloading = true
    const results: Array<{ status: number; user: unknown } | { error: string }> = []
    const loop = async (browser: Browser) => {
      // Bounded: at most 20 000 requests per browser, and it ends with the reload.
      for (let i = 0; reloading && i < 20_000; i++) {
        try {
          const answer = await browser.request('GET', '/api/me')
          results.push({ status: answer.status, user: (answer.body as { user?: unknown }).user })
        } catch (error) {
          results.push({ error: (error as Error).message })
        }
      }
    }
    const loops = browsers.map(loop)
    const reload = await pm2('reload', 'all')
    reloading = false
    await Promise.all(loops)
    expect(reload.code, reload.stderr).toBe(0)

    // Every process was replaced: the loop ran across the whole reload.
    const after = await processes()
    for (const id of ids) {
      expect(after.get(id)?.status).toBe('online')
      expect(after.get(id)?.pid).not.toBe(before.get(id)?.pid)
    }
    expect(results.length).toBeGreaterThan(0)
    process.stdout.write(`pm2 reload all: ${results.length} requests through nginx meanwhile\n`)
    const failed = results.filter((result) => !('status' in result) || result.status !== 200)
    expect(failed, failedThroughNginx()).toEqual([])
    for (const [index, browser] of browsers.entries()) {
      expect(await browser.request('GET', '/api/me')).toMatchObject({
        status: 200,
        body: { user: { id: index === 0 ? 'bob' : 'carol' } },
      })
    }
  })

  it('pm2 delete all and pm2 kill leave no process of this PM2_HOME running', async () => {
    const pids = [...(await processes()).values()].map((app) => app.pid)
    const daemon = Number(readFileSync(join(pm2Home, 'pm2.pid'), 'utf8'))
    expect(pids.every(running)).toBe(true)
    expect(running(daemon)).toBe(true)
    expect(processesOfThisHome().length).toBeGreaterThan(NODES)

    expect((await pm2('delete', 'all')).code).toBe(0)
    expect(pids.filter(running)).toEqual([])
    expect((await pm2('kill')).code).toBe(0)
    // The daemon exits just after it answers `kill`.
    await expect.poll(() => running(daemon)).toBe(false)
    expect(processesOfThisHome()).toEqual([])
  })
})
