// Debian's Chromium, headless, as every browser test launches it (the tests run
// under vitest and, for the fleet, as a plain node script inside a namespace).
import { chromium } from 'playwright-core'

/** The flags every test run uses: no sandbox (root in CI), no GPU, no calls home. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
]

/**
 * Launches /usr/bin/chromium with {@link CHROMIUM_ARGS} and `extra` flags.
 * @param {string[]} [extra]
 * @returns {Promise<import('playwright-core').Browser>}
 */
export function launchChromium(extra = []) {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [...CHROMIUM_ARGS, ...extra],
  })
}

/**
 * Signs in on the demo page's form as `user`, as a person would: when the outage
 * banner answers (a 503, nothing written: the first call to a cold shard on a
 * loaded machine can outlast the store's timeout), tries again, at most three
 * times, printing each retry. Resolves once the dashboard shows.
 * @param {import('playwright-core').Page} page
 * @param {string} user
 */
export async function signIn(page, user) {
  await page.locator('#login').waitFor()
  await page.fill('#username', user)
  await page.fill('#password', 'sessionmesh')
  const submit = '#login-form button[type=submit]'
  for (let attempt = 1; ; attempt++) {
    await page.click(submit)
    // The form's handler disables the button until the answer is in.
    await page.locator(`${submit}:not([disabled])`).waitFor({ state: 'attached' })
    if ((await page.isVisible('#dashboard')) || !(await page.isVisible('#outage'))) break
    if (attempt === 3) throw new Error(`signing in as ${user}: the store was unavailable 3 times`)
    console.error(`signing in as ${user}: the store was unavailable (try ${attempt}), trying again`)
    // Past the breaker's retryAfter (500 ms), which fails calls at once after a failure.
    await page.waitForTimeout(600)
  }
  await page.locator('#dashboard').waitFor()
}
