// When a session ends, read from its cookie the way express-session writes it.

/** The cookie fields a session's lifetime is read from (express-session's Cookie, or its JSON). */
interface CookieLike {
  expires?: unknown
  originalMaxAge?: unknown
  maxAge?: unknown
}

/**
 * When a write or touch made at `now` makes the session end: now + its cookie's
 * `originalMaxAge` (its `maxAge` if it has none); for a cookie with an absolute
 * `expires` and no `maxAge`, that `expires`; else now + `ttl`. At or before `now`
 * means the cookie was expired on purpose: setting `maxAge = 0` or an `expires` in
 * the past also sets `originalMaxAge` to what is left, 0 or less (express-session's
 * Cookie and ours). A stale `expires` on a cookie with a positive `originalMaxAge`
 * (a session saved from a socket long after its request) is not an expiry.
 */
export function sessionExpiry(session: object, now: number, ttl: number): number {
  const cookie = (session as { cookie?: unknown }).cookie
  if (typeof cookie !== 'object' || cookie === null) return now + ttl
  const { originalMaxAge, maxAge } = cookie as CookieLike
  const lifetime = originalMaxAge ?? maxAge
  if (typeof lifetime === 'number' && Number.isFinite(lifetime)) return now + lifetime
  return cookieExpires(cookie) ?? now + ttl
}

/** A cookie's `expires` in epoch ms (a Date, or the ISO string of its JSON), if it has a valid one. */
export function cookieExpires(cookie: unknown): number | undefined {
  const expires = (cookie as CookieLike | null)?.expires
  if (!(expires instanceof Date || typeof expires === 'string' || typeof expires === 'number')) {
    return undefined
  }
  const at = expires instanceof Date ? expires.getTime() : new Date(expires).getTime()
  return Number.isFinite(at) ? at : undefined
}
