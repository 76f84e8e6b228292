/**
 * Every error sessionmesh raises is a {@link SessionMeshError} with a stable `code`,
 * so applications can branch on `err.code` rather than on message text.
 */

/** The stable error codes. Never renamed once released. */
export const ErrorCode = {
  /** The backend did not answer in time, or failed, or the breaker is open. HTTP 503. */
  STORE_UNAVAILABLE: 'SESSIONMESH_STORE_UNAVAILABLE',
  /** A save would make the session larger than `maxBytes`; nothing was written. HTTP 500. */
  SESSION_TOO_LARGE: 'SESSIONMESH_SESSION_TOO_LARGE',
  /** A value in the session cannot be stored as JSON (a BigInt, a cycle), or a key is `__proto__`. HTTP 500. */
  SESSION_NOT_SERIALIZABLE: 'SESSIONMESH_SESSION_NOT_SERIALIZABLE',
  /** The options given to a constructor or factory are wrong. */
  INVALID_OPTION: 'SESSIONMESH_INVALID_OPTION',
  /** The backend does not offer what was asked (e.g. `ids()` on a backend that cannot list). */
  NOT_SUPPORTED: 'SESSIONMESH_NOT_SUPPORTED',
  /** A login was refused: the user has `maxSessionsPerUser` sessions (`onSessionLimit: 'refuse'`). HTTP 409. */
  SESSION_LIMIT: 'SESSIONMESH_SESSION_LIMIT',
  /** `req.session.rotate()` could not move the session (a stale `req.session`, or the new id was destroyed meanwhile); nothing was lost. HTTP 409. */
  ROTATE_FAILED: 'SESSIONMESH_ROTATE_FAILED',
} as const

/** One of the values of {@link ErrorCode}. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode]

/**
 * Base class of all sessionmesh errors. `status` is the HTTP status an Express error
 * handler should answer with; Express's default handler already honours it.
 */
export class SessionMeshError extends Error {
  /** A stable, documented code, e.g. `SESSIONMESH_STORE_UNAVAILABLE`. */
  readonly code: ErrorCode
  /** The HTTP status that fits the error. */
  readonly status: number

  constructor(code: ErrorCode, message: string, status: number, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'SessionMeshError'
    this.code = code
    this.status = status
  }
}

/** The store could not be reached in time; see the `onUnavailable` option. */
export class StoreUnavailableError extends SessionMeshError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.STORE_UNAVAILABLE, message, 503, options)
    this.name = 'StoreUnavailableError'
  }
}

/** A save was refused because the session would exceed `maxBytes`. */
export class SessionTooLargeError extends SessionMeshError {
  /** Encoded size of the session that was refused, in bytes. */
  readonly bytes: number
  /** The configured limit, in bytes. */
  readonly limit: number

  constructor(sid: string, bytes: number, limit: number) {
    super(
      ErrorCode.SESSION_TOO_LARGE,
      `session ${redactSid(sid)} would be ${bytes} bytes, over the maxBytes limit of ${limit}; the stored version was kept`,
      500,
    )
    this.name = 'SessionTooLargeError'
    this.bytes = bytes
    this.limit = limit
  }
}

/** Thrown by factories and constructors given options they cannot work with. */
export class InvalidOptionError extends SessionMeshError {
  constructor(message: string) {
    super(ErrorCode.INVALID_OPTION, message, 500)
    this.name = 'InvalidOptionError'
  }
}

/** The backend cannot do what was asked, such as list its session ids. */
export class NotSupportedError extends SessionMeshError {
  constructor(message: string) {
    super(ErrorCode.NOT_SUPPORTED, message, 501)
    this.name = 'NotSupportedError'
  }
}

/** A login's save was refused: its user already has `maxSessionsPerUser` sessions. */
export class SessionLimitError extends SessionMeshError {
  /** The configured `maxSessionsPerUser`. */
  readonly limit: number

  constructor(_userId: string, limit: number) {
    super(
      ErrorCode.SESSION_LIMIT,
      `this user already has ${limit} sessions (maxSessionsPerUser); the new one was not saved`,
      409,
    )
    this.name = 'SessionLimitError'
    this.limit = limit
  }
}

/**
 * A session id is a bearer credential: logs and messages show only its first
 * characters, enough to correlate, not enough to replay.
 */
export function redactSid(sid: string): string {
  return sid.length <= 8 ? '…' : `${sid.slice(0, 6)}…`
}
