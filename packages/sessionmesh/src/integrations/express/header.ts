import type { ServerResponse } from 'node:http'
import { InvalidOptionError } from '../../core/errors.js'

/** The `header` option, checked: the lower-cased name, and whether it is `Authorization: Bearer`. */
export interface HeaderConfig {
  name: string
  bearer: boolean
}

// RFC 9110's token characters: what a header name may be made of.
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/** The `header` option, or an error naming what is wrong with it. */
export function headerConfig(option: unknown): HeaderConfig | undefined {
  if (option === undefined) return undefined
  if (typeof option !== 'string' || !TOKEN.test(option)) {
    throw new InvalidOptionError(
      `header must be an HTTP header name such as 'x-session-id', not ${JSON.stringify(option) ?? String(option)}`,
    )
  }
  const name = option.toLowerCase()
  if (name === 'cookie' || name === 'set-cookie') {
    throw new InvalidOptionError(`header cannot be '${option}': the cookie is read anyway`)
  }
  return { name, bearer: name === 'authorization' }
}

/**
 * The token a request carries in the header, or `undefined` when there is none or
 * it is not of the expected form (`Bearer <token>` for `authorization`). Whether it
 * was signed by us is for the signer to say.
 */
export function tokenFrom(
  headers: Record<string, string | string[] | undefined>,
  header: HeaderConfig,
): string | undefined {
  const raw = headers[header.name]
  const value = typeof raw === 'string' ? raw.trim() : undefined
  if (!value) return undefined
  if (!header.bearer) return bareToken(value)
  const match = /^bearer[ \t]+(\S+)$/i.exec(value)
  return match ? bareToken(match[1] as string) : undefined
}

/**
 * A token as a client may hold it: trimmed, and URI-decoded when it was copied
 * from the cookie (`s%3A…`); `undefined` when it cannot be one.
 */
export function bareToken(value: string): string | undefined {
  const token = value.trim()
  if (!token.includes('%')) return token || undefined
  try {
    return decodeURIComponent(token)
  } catch {
    return undefined
  }
}

/**
 * Sends `token` in the header (empty: the session ended), and lets a page on
 * another origin read it under CORS.
 */
export function sendToken(res: ServerResponse, header: HeaderConfig, token: string): void {
  res.setHeader(header.name, header.bearer && token !== '' ? `Bearer ${token}` : token)
  const exposed = res.getHeader('access-control-expose-headers')
  const list = exposed === undefined ? '' : String(exposed)
  if (
    !list
      .toLowerCase()
      .split(/\s*,\s*/)
      .includes(header.name)
  ) {
    res.setHeader('access-control-expose-headers', list ? `${list}, ${header.name}` : header.name)
  }
}
