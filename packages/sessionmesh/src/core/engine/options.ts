import type { Backend } from '../backend.js'
import type { SessionData } from '../codec.js'
import type { EncryptionOptions } from '../encryption.js'
import { InvalidOptionError } from '../errors.js'
import type { Recorder } from '../metrics.js'
import type { NearCache } from '../near-cache.js'
import type { SessionLimitPolicy } from '../session-limit.js'

/** The options the engine shares between the store and the middleware. Times in ms. */
export interface EngineOptions {
  backend: Backend
  userId?: ((session: SessionData) => string | undefined) | undefined
  touchAfter?: number | undefined
  ttl?: number | undefined
  maxLifetime?: number | undefined
  maxBytes?: number | undefined
  timeout?: number | undefined
  retryAfter?: number | undefined
  onUnavailable?: 'fail-closed' | 'fail-open' | undefined
  nearCache?: NearCache | undefined
  maxSessionsPerUser?: number | undefined
  onSessionLimit?: SessionLimitPolicy | undefined
  /** Built from the public `metrics` option; absent, nothing is recorded. */
  recorder?: Recorder | undefined
  encryption?: EncryptionOptions | undefined
}

/** The default `userId`: passport's serialized user, when it is a non-empty string or a number. */
export function passportUser(session: SessionData): string | undefined {
  const passport = session.passport as { user?: unknown } | undefined
  const user = passport?.user
  if (typeof user === 'number') return String(user)
  return typeof user === 'string' && user !== '' ? user : undefined
}

/** Throws unless `value` is a positive finite number; `fallback` when undefined. */
export function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (!Number.isFinite(value) || value <= 0) {
    throw new InvalidOptionError(`${name} must be a positive number of ms or bytes, not ${value}`)
  }
  return value
}

/** Throws unless `value` is zero or a positive finite number; `fallback` when undefined. */
export function nonNegative(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (!Number.isFinite(value) || value < 0) {
    throw new InvalidOptionError(`${name} must be zero or a positive number, not ${value}`)
  }
  return value
}
