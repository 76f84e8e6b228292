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
