import { InvalidOptionError } from '../../core/errors.js'

/** Where a Redis URL points, as {@link parseRedisUrl} reads it. */
export type RedisTarget =
  | { kind: 'standalone'; url: string }
  | {
      kind: 'cluster'
      nodes: Array<{ host: string; port: number }>
      username?: string
      password?: string
      tls: boolean
    }
  | {
      kind: 'sentinel'
      sentinels: Array<{ host: string; port: number }>
      name: string
      username?: string
      password?: string
      tls: boolean
    }

/**
 * Reads the Redis URL forms the CLI and the demo accept:
 * - `redis://host:port` or `rediss://…`: one server (passed on as it is);
 * - `redis+cluster://host1:port1,host2:port2`: a cluster, from any of its nodes
 *   (`rediss+cluster://` for TLS);
 * - `redis+sentinel://host1:port1,host2:port2/<name>`: the primary that those
 *   sentinels know as `<name>` (`rediss+sentinel://` for TLS to Redis).
 * A user and password before `@` apply to the Redis nodes.
 *
 * @example
 * parseRedisUrl('redis+sentinel://10.0.0.5:26379,10.0.0.6:26379/sessions')
 * // { kind: 'sentinel', sentinels: [...], name: 'sessions', tls: false }
 */
export function parseRedisUrl(url: string): RedisTarget {
  const match =
    /^(rediss?)(?:\+(cluster|sentinel))?:\/\/(?:([^@/]*)@)?([^/?#]*)(?:\/([^?#]*))?$/.exec(url)
  if (!match) throw new InvalidOptionError(`not a Redis URL: ${url}`)
  const [, scheme, topology, auth, hosts = '', path = ''] = match
  if (!topology) return { kind: 'standalone', url }
  const nodes = hosts.split(',').map((entry) => {
    const at = entry.lastIndexOf(':')
    const host = at > 0 ? entry.slice(0, at).replace(/^\[|\]$/g, '') : entry
    const port = at > 0 ? Number(entry.slice(at + 1)) : topology === 'sentinel' ? 26379 : 6379
    if (!host || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new InvalidOptionError(`${url}: '${entry}' is not host:port`)
    }
    return { host, port }
  })
  const credentials: { username?: string; password?: string } = {}
  if (auth) {
    const colon = auth.indexOf(':')
    const user = decodeURIComponent(colon === -1 ? auth : auth.slice(0, colon))
    if (user) credentials.username = user
    if (colon !== -1) credentials.password = decodeURIComponent(auth.slice(colon + 1))
  }
  const tls = scheme === 'rediss'
  if (topology === 'cluster') return { kind: 'cluster', nodes, ...credentials, tls }
  const name = decodeURIComponent(path)
  if (!name) throw new InvalidOptionError(`${url}: a sentinel URL ends with /<primary name>`)
  return { kind: 'sentinel', sentinels: nodes, name, ...credentials, tls }
}
