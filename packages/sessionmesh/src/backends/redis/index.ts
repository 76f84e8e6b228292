import type { Backend } from '../../core/backend.js'
import { InvalidOptionError } from '../../core/errors.js'
import { connect, type RedisLike } from './client.js'
import { ClusterRedisBackend } from './cluster.js'
import { StandaloneRedisBackend } from './standalone.js'

export type {
  IoredisClusterLike,
  IoredisLike,
  NodeRedisClusterLike,
  NodeRedisLike,
  NodeRedisSentinelLike,
  RedisLike,
} from './client.js'
export { parseRedisUrl, type RedisTarget } from './url.js'

/** Options of {@link redisBackend}. */
export interface RedisBackendOptions {
  /**
   * A connected node-redis (v5+) or ioredis client: one server (`createClient`,
   * `new Redis`), a cluster (`createCluster`, `new Cluster`) or a primary behind
   * Sentinel (`createSentinel`, `new Redis({ sentinels, name })`). The backend
   * never closes it, and adds an `'error'` listener so that an outage cannot end
   * the process (node-redis emits `'error'` on every lost connection).
   */
  client: RedisLike
  /**
   * Prefix of every key and of the event channel. Sessions live at `<prefix>s:<id>`,
   * their tombstones at `{<prefix>s:<id>}:t`, the user index in `<prefix>ix:<n>`.
   * @default 'sm:'
   */
  prefix?: string
  /**
   * How long a destroyed session's id stays refused, in ms.
   * @default 3_600_000 (one hour)
   */
  tombstoneTtl?: number
  /**
   * Number of hashes the user index is spread over. Each stays compact while it
   * holds up to 128 users (Redis's `hash-max-listpack-entries`), so a good value
   * is your number of users / 100; more buckets than users wastes a key each.
   * On a cluster the buckets are spread over the shards. Changing it orphans the
   * index: choose it once per prefix.
   * @default 1024
   */
  indexBuckets?: number
}

/**
 * Sessions in Redis, shared by every process that uses the same Redis and prefix.
 *
 * On one server or behind Sentinel, each write is one Lua script: the changed
 * keys, the expiry, the user index and the change event, atomically, in one
 * round trip. On a Redis Cluster the session and its user's index live in
 * different hash slots, so a login or a logout takes two steps, ordered so that
 * an interruption leaves only index entries that listing prunes (docs/redis-cluster.md).
 * Every write carries a deadline that the script checks against Redis's clock,
 * so a write the store gave up on is never applied later. Needs Redis 7 or later.
 *
 * @example
 * const client = await createClient({ url }).connect()
 * const store = new SessionStore({ backend: redisBackend({ client }) })
 * @example
 * const client = await createCluster({ rootNodes: [{ url: 'redis://10.0.0.1:7000' }] }).connect()
 * const store = new SessionStore({ backend: redisBackend({ client }) })
 */
export function redisBackend(options: RedisBackendOptions): Backend {
  const connection = connect(options?.client)
  const buckets = options.indexBuckets ?? 1024
  if (!Number.isInteger(buckets) || buckets < 1) {
    throw new InvalidOptionError(`indexBuckets must be a positive integer, not ${buckets}`)
  }
  const ttl = options.tombstoneTtl ?? 3_600_000
  if (!Number.isInteger(ttl) || ttl < 1) {
    throw new InvalidOptionError(`tombstoneTtl must be a positive integer of ms, not ${ttl}`)
  }
  const layout = { prefix: options.prefix ?? 'sm:', tombstoneTtl: String(ttl), buckets }
  return connection.topology === 'cluster'
    ? new ClusterRedisBackend(connection, layout)
    : new StandaloneRedisBackend(connection, layout)
}
