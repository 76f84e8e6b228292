import { execSync } from 'node:child_process'
import { resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Fleet, startFleet } from '../support/fleet.js'
import { fleetSkipReason } from '../support/fleet-netns.js'

// Chromium once over HTTPS through the fleet: the page reached by plain http is
// redirected to https (HTTP/2), the session cookie is Secure, two windows of one
// user chat across app hosts, and signing one out from the other reaches it.

const skip = fleetSkipReason()
const SCRIPT = resolve(import.meta.dirname, '../support/fleet-browser.mjs')

describe.skipIf(skip)(
  `fleet: the demo in Chromium over HTTPS${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    let fleet: Fleet

    beforeAll(async () => {
      fleet = await startFleet()
    })
    afterAll(async () => {
      await fleet?.stop()
    })

    it('redirects to HTTPS, sets a Secure cookie, logs in, chats, and signs a window out', async () => {
      // The key of nginx's certificate, which Chromium is told to accept.
      const spki = execSync(
        `openssl x509 -in ${fleet.tlsFiles().cert} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`,
        { encoding: 'utf8' },
      ).trim()
      const seen = JSON.parse(
        await fleet.nodeOn('client', SCRIPT, { BASE: fleet.base, SPKI: spki }),
      )
      expect(seen.error, JSON.stringify(seen)).toBeUndefined()
      expect(seen.url).toBe(`${fleet.base}/`)
      expect(seen.protocol).toBe('h2')
      expect(seen.cookie).toEqual({ secure: true, httpOnly: true, sameSite: 'Lax' })
      expect(seen.chatStatus).toMatch(/^connected via app\d$/)
      expect(seen.chatReceived).toBe(true)
      expect(seen.notice).toBe('This device was signed out from another device.')
      expect(seen.signedOutMs).toBeLessThan(1_000)
      expect(seen.macStillIn).toBe(true)
      expect(seen.pageErrors).toEqual([])
    })
  },
)
