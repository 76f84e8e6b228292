import { parseArgs } from 'node:util'
import { parseRedisUrl } from '../backends/redis/url.js'
import { tableParts } from '../backends/sql-common.js'
import { redactUrl, type StoreKind } from './args.js'
import { UsageError } from './system.js'

/** The stores `sessionmesh sessions` reads: Memcached has no user index to list by a scan. */
export type SessionsStore = Exclude<StoreKind, 'memcached'>

/** What `sessionmesh sessions` is asked to do. */
export type SessionsAction =
  | { kind: 'list'; user: string }
  | { kind: 'revoke'; sid: string }
  | { kind: 'revoke-user'; user: string; except: string | undefined }
  | { kind: 'count' }

/** Options of `sessionmesh sessions`. */
export interface SessionsArgs {
  action: SessionsAction
  store: SessionsStore
  /** `--redis`, else `REDIS_URL`, else `redis://127.0.0.1:6379`; for redis and tiered. */
  redis: string | undefined
  /** `--database-url`; the environment is read later, see `resolveDatabase`. */
  databaseUrl: string | undefined
  /** `--prefix` of the Redis keys, as the app's `redisBackend({ prefix })`. */
  prefix: string | undefined
  /** `--table`, as the app's SQL backend. */
  table: string | undefined
  /** `--json`: machine-readable output on stdout. */
  json: boolean
  /** `--timeout`: longest wait to connect and for each call, in ms. */
  timeout: number
}

const SUBCOMMANDS = ['list', 'revoke', 'count'] as const
const STORES: readonly SessionsStore[] = ['redis', 'postgres', 'mysql', 'tiered']

/**
 * Parses `sessionmesh sessions <list|revoke|count> …`. Throws a {@link UsageError}
 * (exit 2) that says what is missing or wrong.
 */
export function parseSessionsArgs(
  argv: string[],
  env: Record<string, string | undefined> = process.env,
): SessionsArgs {
  let parsed: ReturnType<typeof parseOptions>
  try {
    parsed = parseOptions(argv)
  } catch (error) {
    throw new UsageError(
      `sessions: ${(error as Error).message}\nRun \`sessionmesh help\` for the options.`,
    )
  }
  const { values, positionals } = parsed
  const [subcommand, ...operands] = positionals
  const found = SUBCOMMANDS.find((name) => name === subcommand)
  if (found === undefined) {
    throw new UsageError(
      subcommand === undefined
        ? 'sessions: say what to do: list --user U, revoke <sid>, revoke --user U [--except <sid>], or count'
        : `sessions: unknown subcommand ${JSON.stringify(subcommand)}: list, revoke or count`,
    )
  }
  const action = actionOf(found, operands, values)

  const store = STORES.find((kind) => kind === (values.store ?? 'redis'))
  if (store === undefined) {
    throw new UsageError(
      `--store must be one of ${STORES.join(', ')}, not ${JSON.stringify(values.store)}`,
    )
  }
  if (store === 'redis' && (values['database-url'] !== undefined || values.table !== undefined)) {
    throw new UsageError(
      '--database-url and --table need --store postgres, mysql or tiered (sessions are in Redis otherwise)',
    )
  }
  if ((store === 'postgres' || store === 'mysql') && values.redis !== undefined) {
    throw new UsageError(`--redis does not go with --store ${store}: sessions are in the database`)
  }
  if ((store === 'postgres' || store === 'mysql') && values.prefix !== undefined) {
    throw new UsageError('--prefix is the Redis key prefix: it needs --store redis or tiered')
  }
  const redis =
    store === 'redis' || store === 'tiered'
      ? (values.redis ?? env.REDIS_URL ?? 'redis://127.0.0.1:6379')
      : undefined
  if (redis !== undefined) checkRedisUrl(redis)
  const databaseUrl = values['database-url']
  if (databaseUrl !== undefined && !/^(postgres|postgresql|mysql|mariadb):\/\//.test(databaseUrl)) {
    throw new UsageError(
      `--database-url must be a postgres:// or mysql:// URL, not ${JSON.stringify(redactUrl(databaseUrl))}`,
    )
  }
  if (values.table !== undefined) {
    try {
      tableParts(values.table)
    } catch (error) {
      throw new UsageError(`--table: ${(error as Error).message}`)
    }
  }
  const rawTimeout = values.timeout ?? '5000'
  const timeout = Number(rawTimeout)
  if (!/^\d+$/.test(rawTimeout) || timeout < 1 || timeout > 600_000) {
    throw new UsageError(
      `--timeout must be a whole number of ms from 1 to 600000, not ${JSON.stringify(rawTimeout)}`,
    )
  }
  return {
    action,
    store,
    redis,
    databaseUrl,
    prefix: values.prefix,
    table: values.table,
    json: values.json ?? false,
    timeout,
  }
}

const OPTIONS = {
  user: { type: 'string' },
  except: { type: 'string' },
  redis: { type: 'string' },
  store: { type: 'string' },
  'database-url': { type: 'string' },
  prefix: { type: 'string' },
  table: { type: 'string' },
  json: { type: 'boolean' },
  timeout: { type: 'string' },
} as const

function parseOptions(argv: string[]) {
  return parseArgs({
    args: dashesAsValues(argv),
    strict: true,
    allowPositionals: true,
    options: OPTIONS,
  })
}

/** True for `--name` or `--name=…` of an option above, and for `--`. */
function isOption(token: string): boolean {
  if (token === '--') return true
  return token.startsWith('--') && Object.hasOwn(OPTIONS, token.slice(2).split('=')[0] as string)
}

/**
 * Session ids are base64url, so one in 64 starts with '-', and parseArgs would
 * read `revoke -abc…` or `--except -abc…` as options (`--except` as missing its
 * value). Rewritten here: what follows a string option is its value unless it is
 * an option itself; a word with a single leading '-' is a positional (no option
 * has a short form). Positionals keep their order, after a `--`.
 */
function dashesAsValues(argv: string[]): string[] {
  const options: string[] = []
  const positionals: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i] as string
    const next = argv[i + 1]
    if (token === '--') {
      positionals.push(...argv.slice(i + 1))
      break
    }
    const name = token.startsWith('--') ? token.slice(2) : undefined
    const option = name === undefined ? undefined : OPTIONS[name as keyof typeof OPTIONS]
    if (option?.type === 'string' && next !== undefined && !isOption(next)) {
      options.push(`${token}=${next}`)
      i++
    } else if (token.startsWith('--')) options.push(token)
    else positionals.push(token)
  }
  return [...options, '--', ...positionals]
}

function actionOf(
  subcommand: (typeof SUBCOMMANDS)[number],
  operands: string[],
  values: { user?: string | undefined; except?: string | undefined },
): SessionsAction {
  const { user, except } = values
  if (user === '') throw new UsageError('--user needs a user id')
  if (except !== undefined && (subcommand !== 'revoke' || user === undefined)) {
    throw new UsageError('--except goes with revoke --user U only')
  }
  if (subcommand === 'list') {
    if (operands.length > 0) throw new UsageError(`sessions list takes no ${operands.join(' ')}`)
    if (user === undefined) throw new UsageError('sessions list needs --user U')
    return { kind: 'list', user }
  }
  if (subcommand === 'count') {
    if (operands.length > 0 || user !== undefined) {
      throw new UsageError('sessions count takes no user or session id: it counts every session')
    }
    return { kind: 'count' }
  }
  if (user !== undefined) {
    if (operands.length > 0) {
      throw new UsageError('sessions revoke takes a session id or --user U, not both')
    }
    if (except === '') throw new UsageError('--except needs a session id')
    return { kind: 'revoke-user', user, except }
  }
  const [sid, ...extra] = operands
  if (sid === undefined || sid === '') {
    throw new UsageError('sessions revoke needs a session id, or --user U [--except <sid>]')
  }
  if (extra.length > 0) throw new UsageError('sessions revoke takes one session id')
  return { kind: 'revoke', sid }
}

function checkRedisUrl(raw: string): void {
  try {
    parseRedisUrl(raw)
  } catch {
    throw new UsageError(
      `--redis must be a redis://, redis+cluster:// or redis+sentinel:// URL (or rediss…), not ${JSON.stringify(redactUrl(raw))}`,
    )
  }
}
