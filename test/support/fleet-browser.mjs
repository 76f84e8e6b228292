// The demo page in Chromium, over HTTPS through the fleet's nginx: run inside the
// client host's namespace (the browser's traffic starts there). Chromium trusts
// nginx's certificate by its public key only (SPKI, from the environment), not
// by switching certificate checks off. Prints one JSON line with what it saw.

import { launchChromium, signIn as signInForm } from './chromium.mjs'

const base = process.env.BASE
const spki = process.env.SPKI
const MAC =
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36'
const LINUX =
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36'

const result = { pageErrors: [] }
const browser = await launchChromium([`--ignore-certificate-errors-spki-list=${spki}`])

async function window(userAgent) {
  const context = await browser.newContext({ userAgent })
  const page = await context.newPage()
  page.on('pageerror', (error) => result.pageErrors.push(error.message))
  // Plain http: nginx sends the browser to https.
  await page.goto(base.replace(/^https:/, 'http:'))
  return { context, page }
}

async function signIn(page, user) {
  await signInForm(page, user)
  await page.waitForFunction(
    () => /^connected via /.test(document.querySelector('#chat-status')?.textContent ?? ''),
    undefined,
    { timeout: 10_000 },
  )
}

try {
  const mac = await window(MAC)
  result.url = mac.page.url()
  result.protocol = await mac.page.evaluate(
    () => performance.getEntriesByType('navigation')[0]?.nextHopProtocol,
  )
  await signIn(mac.page, 'alice')
  const cookie = (await mac.context.cookies()).find((entry) => entry.name === 'sessionmesh')
  result.cookie = cookie && {
    secure: cookie.secure,
    httpOnly: cookie.httpOnly,
    sameSite: cookie.sameSite,
  }
  result.chatStatus = await mac.page.textContent('#chat-status')

  const linux = await window(LINUX)
  await signIn(linux.page, 'alice')
  await mac.page.fill('#chat-text', 'over https, through the fleet')
  await mac.page.press('#chat-text', 'Enter')
  await linux.page
    .locator('.message', { hasText: 'over https, through the fleet' })
    .waitFor({ timeout: 5_000 })
  result.chatReceived = true

  // Sign the Linux window out from the Mac's device list: pushed over its socket.
  const device = mac.page.locator('.device', { hasText: 'Chrome 126 on Linux' })
  await device.waitFor({ timeout: 10_000 })
  const landed = linux.page.locator('#login').waitFor({ state: 'visible', timeout: 5_000 })
  const started = Date.now()
  await device.locator('button', { hasText: 'Sign out' }).click()
  await landed
  result.signedOutMs = Date.now() - started
  result.notice = await linux.page.textContent('#login-notice')
  result.macStillIn = await mac.page.isVisible('#dashboard')
} catch (error) {
  result.error = String(error)
} finally {
  await browser.close()
}
process.stdout.write(`${JSON.stringify(result)}\n`)
