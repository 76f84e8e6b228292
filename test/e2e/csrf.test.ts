import { createServer, type RequestListener, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import pino from 'pino'
import type { BrowserContext, Browser as Playwright } from 'playwright-core'
import { SessionStore } from 'sessionmesh'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { launchChromium } from '../support/chromium.mjs'

// Issue 11, item 7, in Debian's Chromium: the demo app (its own createApp, on the
// memory store) on 127.0.0.1:A, and pages of an attacker on another site
// (evil.test, mapped to 127.0.0.1 by the browser) and on another port of the same
// host (same site, another origin), which submit forms to the demo.

let chrome: Playwright
let app: Server
let attacker: Server
let appBase: string
let attackerPort: number
const contexts: BrowserContext[] = []
/** The path of every POST the demo has finished answering. */
const answered: string[] = []

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port))
  })
}

/** An HTML page that submits a form to the demo as soon as it loads. */
function formPage(action: string, fields: Record<string, string> = {}): string {
  const inputs = Object.entries(fields)
    .map(([name, value]) => `<input type="hidden" name="${name}" value="${value}">`)
    .join('')
  return `<!doctype html><form method="post" action="${action}">${inputs}</form>
<script>document.forms[0].submit()</script>`
}

async function context(): Promise<BrowserContext> {
  const created = await chrome.newContext()
  contexts.push(created)
  return created
}

/** What the demo says about the context's session: the user id, or the status. */
async function whoAmI(ctx: BrowserContext): Promise<string | number> {
  const response = await ctx.request.get(`${appBase}/api/me`)
  return response.status() === 200
    ? ((await response.json()) as { user: { id: string } }).user.id
    : response.status()
}

/** Opens an attacker's page in the victim's browser and waits until the demo has answered its form. */
async function visitAttacker(ctx: BrowserContext, url: string, path: string): Promise<void> {
  const before = answered.filter((entry) => entry === path).length
  const page = await ctx.newPage()
  await page.goto(url, { waitUntil: 'commit' })
  await expect.poll(() => answered.filter((entry) => entry === path).length).toBe(before + 1)
  // Not awaited: Chromium may keep a page whose form got a 403 navigating for a while.
  page.close().catch(() => {})
}

/** The demo's app factory (plain JS, loaded by path so that tsc does not type it). */
interface DemoModule {
  createApp(options: Record<string, unknown>): { app: RequestListener }
}
const DEMO_APP = '../../examples/chat/app.js'

beforeAll(async () => {
  const { createApp } = (await import(DEMO_APP)) as DemoModule
  const store = new SessionStore()
  const { app: demo } = createApp({
    store,
    nodeId: 'node-csrf',
    secret: 'csrf test secret',
    logger: pino({ level: 'silent' }),
  })
  app = createServer((req, res) => {
    // The URL now: Express rewrites req.url under a mounted path.
    const url = req.url ?? ''
    if (req.method === 'POST') res.on('finish', () => answered.push(url))
    demo(req, res)
  })
  appBase = `http://127.0.0.1:${await listen(app)}`
  attacker = createServer((req, res) => {
    res.setHeader('content-type', 'text/html')
    if (req.url === '/login') {
      res.end(formPage(`${appBase}/api/login?username=bob&password=sessionmesh`))
    } else if (req.url === '/login-body') {
      res.end(formPage(`${appBase}/api/login`, { username: 'bob', password: 'sessionmesh' }))
    } else if (req.url === '/logout') {
      res.end(formPage(`${appBase}/api/logout`))
    } else res.end('')
  })
  attackerPort = await listen(attacker)
  // The attacker's site: another registrable domain, resolved to loopback.
  chrome = await launchChromium(['--host-resolver-rules=MAP evil.test 127.0.0.1'])
})
afterAll(async () => {
  for (const ctx of contexts) await ctx.close().catch(() => {})
  await chrome?.close()
  attacker?.closeAllConnections()
  attacker?.close()
  app?.closeAllConnections()
  app?.close()
})

describe('the demo against login CSRF and cross-origin requests', () => {
  it('a cross-site form POST with credentials in the query string no longer logs the victim in', async () => {
    const victim = await context()
    expect(await whoAmI(victim)).toBe(401)
    await visitAttacker(
      victim,
      `http://evil.test:${attackerPort}/login`,
      '/api/login?username=bob&password=sessionmesh',
    )
    // Before: the victim's browser now held bob's session.
    expect(await whoAmI(victim)).toBe(401)
    await visitAttacker(victim, `http://evil.test:${attackerPort}/login-body`, '/api/login')
    expect(await whoAmI(victim)).toBe(401)
  })

  it('a page on another port of the same host cannot log the user out (same site, other origin)', async () => {
    const user = await context()
    // An API client (no Origin, no Sec-Fetch-Site) logs in with a JSON body.
    const login = await user.request.post(`${appBase}/api/login`, {
      data: { username: 'alice', password: 'sessionmesh' },
    })
    expect(login.status()).toBe(200)
    expect(await whoAmI(user)).toBe('alice')
    await visitAttacker(user, `http://127.0.0.1:${attackerPort}/logout`, '/api/logout')
    // Before: the SameSite=Lax cookie went along and the logout went through.
    expect(await whoAmI(user)).toBe('alice')
  })

  it('the app’s own page still logs in with a JSON body, and never with the password in the URL', async () => {
    const user = await context()
    const page = await user.newPage()
    await page.goto(`${appBase}/healthz`)
    const statuses = await page.evaluate(async () => {
      const post = (path: string, body?: unknown) =>
        fetch(path, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body ?? {}),
        }).then((response) => response.status)
      return [
        await post('/api/login?username=bob&password=sessionmesh'),
        await post('/api/login', { username: 'carol', password: 'sessionmesh' }),
      ]
    })
    expect(statuses).toEqual([400, 200])
    expect(await whoAmI(user)).toBe('carol')
    await page.close()
  })
})
