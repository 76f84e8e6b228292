import diagnostics from 'node:diagnostics_channel'
import { debuglog } from 'node:util'
import { redactSid } from './errors.js'

/** `NODE_DEBUG=sessionmesh` prints what the store skipped or refused, and why. */
export const debug = debuglog('sessionmesh')

/**
 * diagnostics_channel names. Subscribe to count or log what the store does on the
 * side; messages carry redacted session ids only.
 *
 * - `sessionmesh:malformed` `{ sid, backend, reason }`: a stored record could not be read and was treated as absent.
 * - `sessionmesh:unavailable` `{ operation, backend, error, policy }`: a backend call failed or timed out.
 * - `sessionmesh:gone` `{ sid, operation }`: a save or touch found its session destroyed or expired; nothing was written.
 * - `sessionmesh:session`: sessions created and destroyed, see `SessionLifecycleEvent` (core/events.ts).
 */
export const channels = {
  malformed: diagnostics.channel('sessionmesh:malformed'),
  unavailable: diagnostics.channel('sessionmesh:unavailable'),
  gone: diagnostics.channel('sessionmesh:gone'),
} as const

export function reportMalformed(sid: string, backend: string, error: unknown): void {
  const reason = error instanceof Error ? error.message : String(error)
  debug('treating session %s as absent: %s', redactSid(sid), reason)
  if (channels.malformed.hasSubscribers) {
    channels.malformed.publish({ sid: redactSid(sid), backend, reason })
  }
}

export function reportUnavailable(
  operation: string,
  backend: string,
  error: unknown,
  policy: string,
): void {
  debug('%s on %s failed (%s): %s', operation, backend, policy, error)
  if (channels.unavailable.hasSubscribers) {
    channels.unavailable.publish({ operation, backend, error, policy })
  }
}

export function reportGone(sid: string, operation: string): void {
  debug('%s of session %s skipped: it was destroyed or has expired', operation, redactSid(sid))
  if (channels.gone.hasSubscribers) channels.gone.publish({ sid: redactSid(sid), operation })
}
