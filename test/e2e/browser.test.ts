import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import mysql from 'mysql2/promise'
import type { BrowserContext, Page, Browser as Playwright } from 'playwright-core'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { launchChromium, signIn as signInForm } from '../support/chromium.mjs'
import { Browser, Cluster, canListen, freePortRange } from '../support/cluster.js'
import { RedisServer } from '../support/redis-server.js'
import { MYSQL_URL, uniqueName } from '../support/sql.js'

// The demo's web page in Debian's Chromium (driven by playwright-core), through
// nginx in front of `sessionmesh up` with 4 nodes. Redis is the test's own, so that
// the last test can kill it under the running cluster.
//
// SCREENSHOTS=1 also writes docs/screenshots/*.png; without it, nothing in the
// repository is written.

const SCREENSHOTS = process.env.SCREENSHOTS === '1'
const SCREENSHOT_DIR = resolve(import.meta.dirname, '../../docs/screenshots')

/** User agents of the two browser windows, so that the devices panel tells them apart. */
const MAC_CHROME =
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36'
const LINUX_CHROME =
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36'
const WINDOWS_FIREFOX =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0'

let redis: RedisServer
let cluster: Cluster
let chrome: Playwright
const contexts: BrowserContext[] = []
/** Uncaught errors and CSP violations in any page: each test ends with none. */
const pageErrors: string[] = []

async function window(userAgent: string, base = cluster.base): Promise<Page> {
  const context = await chrome.newContext({
    userAgent,
    viewport: { width: 1280, height: 900 },
    deviceScaleFactor: SCREENSHOTS ? 2 : 1,
  })
  contexts.push(context)
  return open(context, base)
}

/** Opens the demo in a new tab of `context`, collecting its errors. */
async function open(context: BrowserContext, base = cluster.base): Promise<Page> {
  const page = await context.newPage()
  page.on('pageerror', (error) => pageErrors.push(error.message))
  page.on('console', (message) => {
    if (/Content.Security.Policy/i.test(message.text())) pageErrors.push(message.text())
  })
  await page.goto(base)
  return page
}

/**
 * Signs in through the login form, as a person would, and waits for the live chat
 * (or its absence). A person whose sign-in meets the outage banner (a 503: nothing
 * was written) tries again: on a loaded machine the first call to a cold shard can
 * outlast the store's timeout. At most three tries, each retry printed.
 */
async function signIn(page: Page, user: string, chat = /^connected via node-\d$/): Promise<void> {
  await signInForm(page, user)
  await expect.poll(() => page.textContent('#chat-status')).toMatch(chat)
}

beforeAll(async () => {
  chrome = await launchChromium()
})
afterEach(() => {
  expect(pageErrors.splice(0)).toEqual([])
})
afterAll(async () => {
  for (const context of contexts) await context.close().catch(() => {})
  await chrome?.close()
})

describe('the demo page in Chromium, through nginx, 4 nodes', () => {
  let first: Page
  let second: Page

  beforeAll(async () => {
    redis = await RedisServer.start()
    cluster = await Cluster.start(['--nodes', '4', '--redis', redis.url], await freePortRange(5))
  })
  afterAll(async () => {
    await cluster?.stop()
    await redis?.stop()
  })

  it('serves the page through nginx, with the demo accounts on the login form and a strict CSP', async () => {
    const response = await fetch(cluster.base)
    expect(response.status).toBe(200)
    expect(response.headers.get('content-security-policy')).toContain("script-src 'self'")
    first = await window(MAC_CHROME)
    await first.locator('#login').waitFor()
    expect(await first.locator('.account').allTextContents()).toEqual(['alice', 'bob', 'carol'])
    if (SCREENSHOTS) {
      mkdirSync(SCREENSHOT_DIR, { recursive: true })
      await first.screenshot({ path: `${SCREENSHOT_DIR}/login.png` })
    }

    await first.fill('#username', 'alice')
    await first.fill('#password', 'wrong')
    await first.click('#login-form button[type=submit]')
    await expect.poll(() => first.textContent('#login-error')).toBe('wrong username or password')
    expect(await first.isVisible('#dashboard')).toBe(false)
  })

  it('two windows signed in as one user chat across nodes, and the page sees several nodes serve it', async () => {
    await signIn(first, 'alice')
    second = await window(LINUX_CHROME)
    await signIn(second, 'alice')

    await first.fill('#chat-text', 'Hi from the Mac: which node are you on?')
    await first.press('#chat-text', 'Enter')
    const received = second.locator('.message', { hasText: 'Hi from the Mac' })
    await received.waitFor({ timeout: 5_000 })
    expect(await received.locator('.node-badge').textContent()).toMatch(/^node-\d$/)

    // User content is text, never markup.
    const hostile = '<img src=x onerror="document.title=1"> & <b>bold</b>'
    await second.fill('#chat-text', hostile)
    await second.press('#chat-text', 'Enter')
    const echoed = first.locator('.message-text', { hasText: '<img src=x' })
    await echoed.waitFor({ timeout: 5_000 })
    expect(await echoed.textContent()).toBe(hostile)
    expect(await first.locator('.messages img, .messages b').count()).toBe(0)
    await second.fill('#chat-text', 'Linux laptop here. Same session cookie, different sockets.')
    await second.press('#chat-text', 'Enter')
    await first.locator('.message', { hasText: 'Linux laptop here' }).waitFor({ timeout: 5_000 })

    // A note written through one node is read back, at once, through whichever serves the next request.
    const notes: Array<[string, string]> = [
      ['theme', 'dark'],
      ['cart', '2 × espresso <beans>'],
    ]
    for (const [key, value] of notes) {
      await first.fill('#kv-key', key)
      await first.fill('#kv-value', value)
      await first.click('#kv-form button')
      await first.locator('.kv li', { hasText: key }).waitFor({ timeout: 5_000 })
    }
    expect(await first.locator('.kv-value').allTextContents()).toEqual([
      '2 × espresso <beans>',
      'dark',
    ])

    // The page polls /api/me about once a second; nginx spreads the requests.
    await expect
      .poll(() => first.locator('#bars .bar').count(), { timeout: 20_000 })
      .toBeGreaterThan(1)
    const counts = await first.locator('#bars .bar-count').allTextContents()
    expect(counts.every((count) => Number(count) > 0)).toBe(true)
  })

  it('lists the devices, and signing one out sends it to the login page within a second, its chat closed', async () => {
    // A third device, signed in without a page: it shows in the list like the others.
    const phone = new Browser(cluster.base, WINDOWS_FIREFOX)
    expect((await phone.login('alice')).status).toBe(200)

    await expect
      .poll(() => first.locator('#device-list .device').count(), { timeout: 10_000 })
      .toBe(3)
    const names = await first.locator('.device-name').allTextContents()
    expect(names).toContain('Chrome 126 on macOSThis device')
    expect(names).toContain('Chrome 126 on Linux')
    expect(names).toContain('Firefox 128 on Windows')
    expect(await first.locator('.device.current').count()).toBe(1)
    expect(await first.locator('.device.current .device-meta').textContent()).toContain('127.0.0.1')

    if (SCREENSHOTS) {
      // Let the served-by picture fill in and the chat status settle.
      await first.waitForTimeout(8_000)
      await first.locator('#kv-key').blur()
      await first.screenshot({ path: `${SCREENSHOT_DIR}/dashboard.png`, fullPage: true })
      await first.locator('#devices').screenshot({ path: `${SCREENSHOT_DIR}/devices.png` })
    }

    const linux = first.locator('.device', { hasText: 'Chrome 126 on Linux' })
    const landed = second.locator('#login').waitFor({ state: 'visible', timeout: 5_000 })
    const started = Date.now()
    await linux.locator('button', { hasText: 'Sign out' }).click()
    await landed
    expect(Date.now() - started).toBeLessThan(1_000)
    expect(await second.textContent('#login-notice')).toBe(
      'This device was signed out from another device.',
    )
    expect(await second.getAttribute('#chat-status', 'data-kind')).toBe('closed')
    // Its cookie is dead: a reload shows the login form, not the dashboard.
    await second.reload()
    await second.locator('#login').waitFor()
    expect(await second.isVisible('#dashboard')).toBe(false)

    await expect
      .poll(() => first.locator('#device-list .device').count(), { timeout: 10_000 })
      .toBe(2)
    await first.click('#revoke-others')
    await expect.poll(async () => (await phone.request('GET', '/api/me')).status).toBe(401)
    await expect
      .poll(() => first.locator('#device-list .device').count(), { timeout: 10_000 })
      .toBe(1)
    // The window that did it is still signed in.
    expect(await first.isVisible('#dashboard')).toBe(true)
    expect(await first.getAttribute('#chat-status', 'data-kind')).toBe('open')
  })

  it('says the session store is unavailable when Redis is down, instead of a broken page, and recovers', async () => {
    await redis.kill()
    const banner = first.locator('#outage')
    await banner.waitFor({ state: 'visible', timeout: 15_000 })
    expect(await banner.textContent()).toContain('The session store is unavailable.')

    // A page opened during the outage, with the session's cookie, says so too.
    const late = await open(first.context())
    await late.locator('#outage').waitFor({ state: 'visible', timeout: 15_000 })
    expect(await late.isVisible('#login')).toBe(false)
    expect(await late.isVisible('#dashboard')).toBe(false)

    if (SCREENSHOTS) await first.screenshot({ path: `${SCREENSHOT_DIR}/outage.png` })

    await redis.start()
    await banner.waitFor({ state: 'hidden', timeout: 20_000 })
    // This Redis kept nothing on disk, so the sessions went with it: both pages end
    // up on the login form, saying so, rather than on a broken dashboard.
    await first.locator('#login').waitFor({ timeout: 20_000 })
    expect(await first.textContent('#login-notice')).toBe(
      'Your session ended. Please sign in again.',
    )
    await late.locator('#login').waitFor({ timeout: 20_000 })
    await signIn(late, 'bob')
  })
})

describe('the demo page on a store without session events (MySQL): no chat, the rest works', () => {
  const table = uniqueName('sm_browser')
  let mysqlCluster: Cluster

  beforeAll(async () => {
    mysqlCluster = await Cluster.start(
      ['--nodes', '2', '--store', 'mysql', '--table', table],
      await freePortRange(3),
      { SESSIONMESH_DATABASE_URL: MYSQL_URL },
    )
  })
  afterAll(async () => {
    await mysqlCluster?.stop()
    const connection = await mysql.createConnection(MYSQL_URL)
    await connection.query(`DROP TABLE IF EXISTS ${table}`)
    await connection.end()
  })

  it('says the chat is off, keeps notes and devices, and a signed-out window still lands on the login page', async () => {
    const one = await window(MAC_CHROME, mysqlCluster.base)
    await signIn(one, 'carol', /^off$/)
    expect(await one.getAttribute('#messages', 'data-empty')).toContain('The chat is off')
    await one.fill('#kv-key', 'store')
    await one.fill('#kv-value', 'mysql')
    await one.click('#kv-form button')
    await one.locator('.kv li', { hasText: 'mysql' }).waitFor({ timeout: 5_000 })

    const two = await window(LINUX_CHROME, mysqlCluster.base)
    await signIn(two, 'carol', /^off$/)
    await expect
      .poll(() => one.locator('#device-list .device').count(), { timeout: 10_000 })
      .toBe(2)
    // Without a socket to push the news, the window learns it from its next poll (once a second).
    const landed = two.locator('#login').waitFor({ state: 'visible', timeout: 5_000 })
    const started = Date.now()
    await one.click('#revoke-others')
    await landed
    expect(Date.now() - started).toBeLessThan(2_500)
    expect(await two.textContent('#login-notice')).toBe('Your session ended. Please sign in again.')
    expect(await one.isVisible('#dashboard')).toBe(true)
  })
})

describe('the demo page on a Redis Cluster (sessionmesh up --redis-cluster)', () => {
  let redisCluster: Cluster

  beforeAll(async () => {
    redisCluster = await Cluster.start(['--nodes', '3', '--redis-cluster'], await freePortRange(4))
  })
  afterAll(async () => {
    await redisCluster?.stop()
  })

  it('signs in, chats across nodes, and a revocation closes the other window within a second; SIGTERM stops all six Redis nodes', async () => {
    expect(redisCluster.stdout).toContain('sessions: redis cluster')
    const one = await window(MAC_CHROME, redisCluster.base)
    await signIn(one, 'bob')
    const two = await window(LINUX_CHROME, redisCluster.base)
    await signIn(two, 'bob')
    await one.fill('#chat-text', 'hello across the shards')
    await one.press('#chat-text', 'Enter')
    await two
      .locator('.message', { hasText: 'hello across the shards' })
      .waitFor({ timeout: 5_000 })

    await expect
      .poll(() => one.locator('#device-list .device').count(), { timeout: 10_000 })
      .toBe(2)
    const linux = one.locator('.device', { hasText: 'Chrome 126 on Linux' })
    const landed = two.locator('#login').waitFor({ state: 'visible', timeout: 5_000 })
    const started = Date.now()
    await linux.locator('button', { hasText: 'Sign out' }).click()
    await landed
    expect(Date.now() - started).toBeLessThan(1_000)
    expect(await two.textContent('#login-notice')).toBe(
      'This device was signed out from another device.',
    )
    expect(await one.isVisible('#dashboard')).toBe(true)

    // The log names the cluster's ports; after SIGTERM none of them may listen.
    const line = `${redisCluster.stdout}\n${redisCluster.stderr}`
      .split('\n')
      .find((l) => l.includes('redis cluster started'))
    const ports: number[] = JSON.parse(line ?? '{}').nodes ?? []
    expect(ports).toHaveLength(6)
    for (const port of ports) expect(await canListen(port)).toBe(false)
    await redisCluster.stop()
    for (const port of ports) expect(await canListen(port)).toBe(true)
  })
})
