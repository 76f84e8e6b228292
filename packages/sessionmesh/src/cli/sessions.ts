import { type EncryptionOptions, parseEncryptionKeys } from '../core/encryption.js'
import { StoreUnavailableError } from '../core/errors.js'
import { SessionStore, type UserSession } from '../store.js'
import { DatabaseError, resolveDatabase } from './database.js'
import type { SessionsArgs } from './sessions-args.js'
import { type OpenedBackend, openDatabase, openRedis } from './sessions-connect.js'
import { UsageError } from './system.js'

/** Where the command writes: stdout for results, as the tests and scripts read them. */
export interface Output {
  write(text: string): void
}

/**
 * Runs `sessionmesh sessions …` against the store of `args` and returns the exit
 * code. Revocations go through {@link SessionStore}, like the app's own: they leave
 * tombstones and publish on the backend's bus, so the nodes close the sockets.
 * Throws a {@link DatabaseError} (exit 1) when the store cannot be reached.
 */
export async function runSessions(
  args: SessionsArgs,
  out: Output = process.stdout,
  env: Record<string, string | undefined> = process.env,
): Promise<number> {
  // The app's keys, to find a user's sessions under the hashed index and read their devices.
  const encryption = encryptionOf(env.SESSIONMESH_ENCRYPTION_KEYS)
  const opened = await open(args, env)
  // Every call under the same bound as the connection; fail at once, no breaker wait.
  const store = new SessionStore({
    backend: opened.backend,
    timeout: args.timeout,
    retryAfter: 1,
    ...(encryption ? { encryption } : {}),
  })
  try {
    await perform(args, store, out)
    return 0
  } catch (error) {
    if (error instanceof StoreUnavailableError) {
      throw new DatabaseError(`the store at ${opened.where} stopped answering: ${error.message}`, {
        cause: error,
      })
    }
    throw error
  } finally {
    await opened.close().catch(() => {})
  }
}

/** The `encryption` option from SESSIONMESH_ENCRYPTION_KEYS; a bad value is a usage error (exit 2). */
function encryptionOf(keys: string | undefined): EncryptionOptions | undefined {
  if (!keys) return undefined
  try {
    return parseEncryptionKeys(keys)
  } catch (error) {
    throw new UsageError(`SESSIONMESH_ENCRYPTION_KEYS: ${(error as Error).message}`)
  }
}

async function open(
  args: SessionsArgs,
  env: Record<string, string | undefined>,
): Promise<OpenedBackend> {
  if (args.store === 'redis') return openRedis(args.redis as string, args.prefix, args.timeout)
  const database = resolveDatabase(
    { store: args.store, url: args.databaseUrl, table: args.table },
    env,
  )
  if (args.store !== 'tiered') return openDatabase(database, args.timeout)
  const durable = await openDatabase(database, args.timeout)
  let cache: OpenedBackend
  try {
    cache = await openRedis(args.redis as string, args.prefix, args.timeout)
  } catch (error) {
    await durable.close()
    throw error
  }
  const { tieredBackend } = await import('../backends/tiered/index.js')
  return {
    backend: tieredBackend({ cache: cache.backend, durable: durable.backend }),
    where: `${cache.where} over ${durable.where}`,
    close: async () => {
      await cache.close()
      await durable.close()
    },
  }
}

async function perform(args: SessionsArgs, store: SessionStore, out: Output): Promise<void> {
  const { action, json } = args
  switch (action.kind) {
    case 'list': {
      const sessions = await store.listUserSessions(action.user)
      if (json) out.write(`${JSON.stringify(sessions.map(listed))}\n`)
      else out.write(describeList(action.user, sessions))
      return
    }
    case 'count': {
      const count = await store.length()
      out.write(json ? `${JSON.stringify({ count })}\n` : `${count} live sessions\n`)
      return
    }
    case 'revoke': {
      // Whether it was live is for the message only: the revocation happens either
      // way, and its tombstone refuses the id from now on.
      const live = (await store.get(action.sid)) !== null
      await store.revokeSession(action.sid)
      if (json) out.write(`${JSON.stringify({ revoked: live ? [action.sid] : [] })}\n`)
      else if (live) out.write(`revoked session ${action.sid}\n`)
      else out.write(`no live session ${action.sid}; its id is refused from now on anyway\n`)
      return
    }
    case 'revoke-user': {
      const ids = await store.revokeUserSessions(
        action.user,
        action.except === undefined ? {} : { except: action.except },
      )
      if (json) {
        out.write(`${JSON.stringify({ revoked: ids })}\n`)
        return
      }
      const kept = action.except === undefined ? '' : ` (kept ${action.except})`
      out.write(`revoked ${ids.length} sessions of ${action.user}${kept}\n`)
      for (const id of ids) out.write(`  ${id}\n`)
    }
  }
}

/** The documented `--json` shape of one listed session: every key every time, times in epoch ms. */
function listed(session: UserSession) {
  return {
    id: session.id,
    createdAt: session.createdAt,
    lastSeenAt: session.lastSeenAt,
    expiresAt: session.expiresAt,
    userAgent: session.userAgent ?? null,
    ip: session.ip ?? null,
  }
}

function describeList(user: string, sessions: UserSession[]): string {
  if (sessions.length === 0) return `no live sessions of ${user}\n`
  const rows = sessions.map((session) => [
    session.id,
    stamp(session.createdAt),
    stamp(session.lastSeenAt),
    stamp(session.expiresAt),
    session.ip ?? '-',
    session.userAgent ?? '-',
  ])
  const header = ['ID', 'CREATED', 'LAST SEEN', 'EXPIRES', 'IP', 'USER AGENT']
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  )
  const line = (cells: string[]) =>
    cells
      .map((cell, column) =>
        column === cells.length - 1 ? cell : cell.padEnd(widths[column] ?? 0),
      )
      .join('  ')
  const plural = sessions.length === 1 ? 'session' : 'sessions'
  return `${sessions.length} live ${plural} of ${user}, most recently seen first:\n${[header, ...rows].map(line).join('\n')}\n`
}

// UTC, to the second: what an incident timeline is written in.
function stamp(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')}Z`
}
