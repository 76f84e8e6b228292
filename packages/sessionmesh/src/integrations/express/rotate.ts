import type { IncomingMessage } from 'node:http'
import { type Device, ROTATED_KEY, type Snapshot } from '../../core/engine/snapshot.js'
import { ErrorCode, SessionMeshError, StoreUnavailableError } from '../../core/errors.js'
import type { VerifiedCookies } from './cookie.js'
import type { Config } from './options.js'

type Fields = Record<string, string>

/** What `req.session.rotate()` writes, decided before anything is written. */
export interface RotationPlan {
  newId: string
  /** The old session's device, so that the devices list still shows where it was made. */
  device: Device
  /** The fields to write: with the grace window's marker when there is one. */
  marked(fields: Fields): Fields
}

/**
 * The new id and what to write for a rotation. The grace window (and with it an
 * id derived from the old one, so that every node finds the new session) only
 * for a session that was already logged in as the user it still has: after a
 * login it would hand the new session to whoever held the old, anonymous id
 * (session fixation).
 */
export function planRotation(
  config: Config,
  signer: VerifiedCookies,
  req: IncomingMessage,
  session: object,
  snapshot: Snapshot | undefined,
): RotationPlan {
  const userId = snapshot?.meta.userId
  const grace =
    snapshot !== undefined &&
    config.rotateGrace > 0 &&
    userId !== undefined &&
    config.source.userIdOf?.(session) === userId
  const device: Device = {}
  if (snapshot?.meta.userAgent !== undefined) device.userAgent = snapshot.meta.userAgent
  if (snapshot?.meta.ip !== undefined) device.ip = snapshot.meta.ip
  const sid = (session as { id: string }).id
  return {
    newId: grace ? signer.rotated(sid) : config.genid(req),
    device,
    marked: (fields) =>
      grace
        ? { ...fields, [ROTATED_KEY]: JSON.stringify(Date.now() + config.rotateGrace) }
        : fields,
  }
}

/** The snapshot of the new session, or the error that says why it was not written. */
export function checkRotated(saved: Snapshot | null | undefined): Snapshot {
  if (saved === undefined) {
    throw new StoreUnavailableError(
      'the session could not be rotated (fail-open skipped the write)',
    )
  }
  if (saved === null) {
    throw new SessionMeshError(
      ErrorCode.ROTATE_FAILED,
      'the session could not be rotated: its new id was destroyed meanwhile',
      409,
    )
  }
  return saved
}

/** rotate() on a Session object that another regenerate, rotate or destroy has replaced. */
export function notCurrent(): SessionMeshError {
  return new SessionMeshError(
    ErrorCode.ROTATE_FAILED,
    'rotate() was called on a session that is no longer req.session',
    409,
  )
}
