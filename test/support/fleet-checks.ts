import type { Fleet } from './fleet.js'
import type { SocketState } from './fleet-client.js'

/** What {@link revokeAcrossHosts} saw on each host's socket. */
export interface Revocation {
  /** Per app host: ms from sending the revocation to the socket's disconnect. */
  delays: Record<string, number>
  states: Record<string, SocketState>
}

/**
 * Logs `user` in twice (a phone and a laptop); the phone opens a socket on every
 * app host, directly, so that each host holds one; then the laptop revokes its
 * other sessions through app host `via`. Resolves once every socket has closed
 * (or after `waitMs`), with how long each took.
 */
export async function revokeAcrossHosts(
  fleet: Fleet,
  user: string,
  via: string,
  waitMs = 5_000,
): Promise<Revocation> {
  const phone = await fleet.client.login(fleet.base, user)
  const laptop = await fleet.client.login(fleet.base, user)
  for (const app of fleet.apps) {
    const state = await fleet.client.openSocket(`${user}-${app}`, fleet.appUrl(app), phone)
    if (!state.connected || state.welcome?.node !== app) {
      throw new Error(`socket on ${app} did not connect: ${JSON.stringify(state)}`)
    }
  }
  const sentAt = Date.now()
  const revoked = await fleet.client.fetch({
    url: `${fleet.appUrl(via)}/api/sessions/revoke-others`,
    method: 'POST',
    // Straight to the app host, so its own origin: the demo refuses cross-origin
    // state changes (issue 11 item 7), and nginx's origin is another one.
    headers: { cookie: laptop, origin: fleet.appUrl(via) },
  })
  if (revoked.status !== 200) throw new Error(`revoke-others: ${revoked.status} ${revoked.body}`)
  const states: Record<string, SocketState> = {}
  const deadline = Date.now() + waitMs
  for (const app of fleet.apps) {
    for (;;) {
      const state = await fleet.client.socketState(`${user}-${app}`)
      states[app] = state
      if (state.disconnectedAt !== null || Date.now() > deadline) break
      await new Promise((done) => setTimeout(done, 20))
    }
  }
  const delays: Record<string, number> = {}
  for (const [app, state] of Object.entries(states)) {
    delays[app] =
      state.disconnectedAt === null ? Number.POSITIVE_INFINITY : state.disconnectedAt - sentAt
  }
  return { delays, states }
}
