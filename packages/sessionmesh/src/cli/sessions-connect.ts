import { parseRedisUrl } from '../backends/redis/url.js'
import type { Backend } from '../core/backend.js'
import { redactUrl } from './args.js'
import { type Database, DatabaseError, describeDatabase, reason } from './database.js'

/** A backend the CLI opened, and how to release everything it opened for it. */
export interface OpenedBackend {
  backend: Backend
  /** Where it is, for messages: no password. */
  where: string
  close(): Promise<void>
}

/**
 * Runs `work` but gives up after `ms`: a store that does not answer is an exit
 * code 1 with a message, not a CLI that hangs.
 */
export async function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([work, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Connects to the Redis of `url` as the demo does: node-redis for one server,
 * ioredis for a cluster or a primary behind Sentinel. No reconnection and no
 * offline queue: a one-shot command must fail, not wait for Redis to come back.
 */
export async function openRedis(
  url: string,
  prefix: string | undefined,
  timeout: number,
): Promise<OpenedBackend> {
  const where = redactUrl(url)
  const { redisBackend } = await import('../backends/redis/index.js')
  const target = parseRedisUrl(url)
  let release: () => void = () => {}
  try {
    if (target.kind === 'standalone') {
      const { createClient } = await import('redis')
      const client = createClient({
        url,
        socket: { connectTimeout: timeout, reconnectStrategy: false },
        disableOfflineQueue: true,
      })
      const failed = new Promise<never>((_, reject) => client.once('error', reject))
      failed.catch(() => {})
      release = () => {
        // A client that never connected is already closed, and says so by throwing.
        if (client.isOpen) client.destroy()
      }
      await within(timeout, `connecting to ${where}`, Promise.race([client.connect(), failed]))
      const backend = redisBackend({ client, ...(prefix === undefined ? {} : { prefix }) })
      return { backend, where, close: async () => closeAll(backend, release) }
    }
    const { Cluster, Redis } = await import('ioredis')
    const auth = {
      ...(target.username ? { username: target.username } : {}),
      ...(target.password ? { password: target.password } : {}),
      ...(target.tls ? { tls: {} } : {}),
    }
    const noRetry = () => null
    const client =
      target.kind === 'cluster'
        ? new Cluster(target.nodes, {
            clusterRetryStrategy: noRetry,
            enableOfflineQueue: true,
            redisOptions: { ...auth, connectTimeout: timeout },
          })
        : new Redis({
            sentinels: target.sentinels,
            name: target.name,
            sentinelRetryStrategy: noRetry,
            retryStrategy: noRetry,
            connectTimeout: timeout,
            // Told of a promotion, close: never write to a primary the sentinels replaced.
            failoverDetector: true,
            ...auth,
            ...(target.tls ? { enableTLSForSentinelMode: true } : {}),
          })
    release = () => client.disconnect()
    let lastError: unknown
    client.on('error', (error: unknown) => {
      lastError = error
    })
    await within(
      timeout,
      `connecting to ${where}`,
      new Promise<void>((resolve, reject) => {
        client.once('ready', () => resolve())
        client.once('end', () =>
          reject(lastError instanceof Error ? lastError : new Error('connection closed')),
        )
      }),
    )
    const backend = redisBackend({ client, ...(prefix === undefined ? {} : { prefix }) })
    return { backend, where, close: async () => closeAll(backend, release) }
  } catch (error) {
    release()
    throw new DatabaseError(`cannot reach Redis at ${where}: ${reason(error)}`, { cause: error })
  }
}

/** Opens a pool and a SQL backend over it, checking within `timeout` that the database answers. */
export async function openDatabase(database: Database, timeout: number): Promise<OpenedBackend> {
  const where = describeDatabase(database)
  const { openSqlBackend } = await import('../backends/migrate.js')
  const opened = await openSqlBackend({
    store: database.kind,
    table: database.table,
    ...(database.url === undefined ? {} : { url: database.url }),
  })
  try {
    // A count is one cheap query: it proves the database and the table are there.
    await within(timeout, `querying ${where}`, opened.backend.count())
  } catch (error) {
    await opened.close().catch(() => {})
    throw new DatabaseError(
      `cannot read the sessions table ${database.table} on ${where}: ${reason(error)}`,
      { cause: error },
    )
  }
  return { backend: opened.backend, where, close: opened.close }
}

async function closeAll(backend: Backend, release: () => void): Promise<void> {
  try {
    await backend.close()
  } finally {
    release()
  }
}
