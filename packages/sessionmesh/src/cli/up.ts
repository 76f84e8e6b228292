import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import type { Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Logger } from 'pino'
import type { UpArgs } from './args.js'
import { controlPath, serveControl } from './control.js'
import { type Database, describeDatabase, migrateDatabase, resolveDatabase } from './database.js'
import { type RunningMemcached, startMemcached } from './memcached.js'
import { type RunningNginx, startNginx } from './nginx.js'
import { http2ModeFor } from './nginx-config.js'
import { type RunningRedisCluster, startRedisCluster } from './redis-cluster.js'
import { type SupervisedRedis, superviseRedis } from './redis-supervisor.js'
import { Supervisor } from './supervisor.js'
import { assertPortFree, freePort, nginxVersion, requireTool, tools, UsageError } from './system.js'
import { createThrowawayTls, type ThrowawayTls } from './tls.js'

/**
 * `sessionmesh up`: Redis (unless given), the nodes, then nginx in front of them;
 * prints `ready` once every node is healthy. Resolves with the exit code once a
 * signal has stopped everything.
 */
export async function up(args: UpArgs & { app: string }, logger: Logger): Promise<number> {
  if (!existsSync(args.app)) throw new UsageError(`--app ${args.app}: no such file`)
  const nodePorts = Array.from({ length: args.nodes }, (_, index) => args.basePort + index)
  await assertPortFree(args.port, 'nginx (--port)')
  for (const port of nodePorts) await assertPortFree(port, 'a node (--base-port)')
  if (args.httpPort !== undefined) await assertPortFree(args.httpPort, 'nginx (--http-port)')
  const say = (message: string) => logger.info(message)
  const nginxBin = requireTool(tools.nginx, say)
  const redisBin = args.redis ? undefined : requireTool(tools.redis, say)
  const redisCliBin = args.redisCluster ? requireTool(tools.redisCli, say) : undefined
  const memcachedBin = args.store === 'memcached' ? requireTool(tools.memcached, say) : undefined
  const database: Database | undefined =
    args.store === 'redis' || args.store === 'memcached'
      ? undefined
      : resolveDatabase({ store: args.store, url: args.databaseUrl, table: args.table })
  if (database) {
    // Before anything starts, so an unreachable database leaves nothing to clean up.
    // The backends never create their table; `up` runs the documented migration on
    // the user's behalf, and it is idempotent, so a second `up` changes nothing.
    logger.info(
      { store: args.store, database: describeDatabase(database), table: database.table },
      'running the migration (idempotent: creates the sessions table if it is missing; `sessionmesh migrate` runs it alone)',
    )
    await migrateDatabase(database)
    logger.info({ table: database.table }, 'sessions table ready')
  }

  const dir = mkdtempSync(join(tmpdir(), `sessionmesh-${args.port}-`))
  // A CA of this run only: trusting it trusts nothing else, and it goes with the run.
  let tls: ThrowawayTls | undefined
  try {
    tls = args.tls ? createThrowawayTls({ dir: join(dir, 'tls') }) : undefined
  } catch (error) {
    rmSync(dir, { recursive: true, force: true })
    throw error
  }
  let redis: SupervisedRedis | undefined
  let redisCluster: RunningRedisCluster | undefined
  let memcached: RunningMemcached | undefined
  let supervisor: Supervisor | undefined
  let nginx: RunningNginx | undefined
  let control: Server | undefined
  let stopping: Promise<void> | undefined

  // Children run in their own process groups (see Supervisor): if this process
  // dies without its handlers, still take them down with it.
  const killAll = () => {
    const clusterPids = redisCluster?.nodes.map((node) => node.process?.pid) ?? []
    const helpers = [nginx?.process.pid, redis?.pid(), memcached?.process.pid, ...clusterPids]
    for (const pid of [...(supervisor?.pids() ?? []), ...helpers]) {
      if (pid) killQuietly(pid)
    }
  }
  process.once('exit', killAll)

  const stop = () => {
    stopping ??= (async () => {
      logger.info('stopping')
      control?.close()
      // nginx first, so that nothing new reaches nodes that are about to drain.
      await nginx?.stop()
      await supervisor?.stop()
      await redis?.stop()
      await redisCluster?.stop()
      await memcached?.stop()
      rmSync(dir, { recursive: true, force: true })
      process.off('exit', killAll)
      logger.info('stopped')
    })()
    return stopping
  }

  let exitCode = 0
  let ready = false
  let aborted = false
  const done = new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      logger.info({ signal }, 'signal received')
      // Before ready nothing is being served: kill what has started, and let the
      // startup below fail fast and clean up.
      if (!ready) {
        aborted = true
        killAll()
        return
      }
      // A second Ctrl-C means now.
      if (stopping) {
        killAll()
        process.exit(130)
      }
      stop().then(resolve, resolve)
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  })

  // SIGHUP would end the process by default; before `ready` there is nothing to restart.
  let onHangup = () => logger.warn('SIGHUP before ready: ignored')
  process.on('SIGHUP', () => {
    logger.info({ signal: 'SIGHUP' }, 'signal received')
    onHangup()
  })

  try {
    let redisUrl = args.redis
    if (args.redisCluster && redisBin && redisCliBin) {
      const clusterDir = join(dir, 'redis-cluster')
      mkdirSync(clusterDir)
      redisCluster = await startRedisCluster({
        redisServer: redisBin,
        redisCli: redisCliBin,
        dir: clusterDir,
        // A node of a cluster may die: its replica takes over, so say so and go on.
        onStart: (node) =>
          node.process?.once('exit', (code, signal) => {
            if (!stopping)
              logger.warn({ port: node.port, code, signal }, 'a Redis Cluster node exited')
          }),
      })
      redisUrl = redisCluster.url
      if (aborted) throw new Error('stopped before ready')
      logger.info(
        { url: redisUrl, nodes: redisCluster.nodes.map((node) => node.port) },
        'redis cluster started (3 primaries, 3 replicas)',
      )
    } else if (!redisUrl && redisBin) {
      const redisDir = join(dir, 'redis')
      mkdirSync(redisDir)
      // Supervised like a node: restarted if it dies (see redis-supervisor.ts).
      redis = await superviseRedis(redisBin, await freePort(), redisDir, logger)
      redisUrl = redis.url
      if (aborted) throw new Error('stopped before ready')
      logger.info({ url: redisUrl, redisPid: redis.pid() }, 'redis-server started')
    }
    if (memcachedBin) {
      memcached = await startMemcached(memcachedBin, await freePort())
      if (aborted) throw new Error('stopped before ready')
      logger.info(
        { servers: memcached.servers, memcachedPid: memcached.process.pid },
        'memcached started',
      )
      watch(memcached.process, 'memcached', () => stopping, fail)
    }
    supervisor = new Supervisor({
      app: args.app,
      nodes: nodePorts.map((port, index) => ({ id: `node-${index + 1}`, port })),
      env: {
        REDIS_URL: redisUrl ?? '',
        ...storeEnv(args.store, database),
        ...(memcached ? { MEMCACHED_SERVERS: memcached.servers } : {}),
        SESSIONMESH_ADAPTER: args.adapter,
        // Every node must sign cookies with one secret; one per run unless set.
        SESSION_SECRET: process.env.SESSION_SECRET ?? randomBytes(32).toString('base64url'),
      },
      logger,
    })
    await supervisor.start()
    if (aborted) throw new Error('stopped before ready')
    nginx = await startNginx({
      bin: nginxBin,
      prefix: join(dir, 'nginx'),
      listen: `127.0.0.1:${args.port}`,
      upstreams: nodePorts.map((port) => `127.0.0.1:${port}`),
      sticky: args.sticky,
      ...(tls
        ? {
            tls: {
              cert: tls.cert,
              key: tls.key,
              http2: http2ModeFor(nginxVersion(nginxBin)),
              ...(args.httpPort === undefined
                ? {}
                : { redirectFrom: `127.0.0.1:${args.httpPort}` }),
            },
          }
        : {}),
    })
    logger.info({ config: nginx.configPath, nginxPid: nginx.process.pid }, 'nginx started')
    watch(nginx.process, 'nginx', () => stopping, fail)

    const nodes = supervisor
    const rolling = () =>
      nodes.rollingRestart().then(
        () => ({ ok: true, message: 'every node replaced', nodes: nodes.list() }),
        (error: Error) => ({ ok: false, message: `rolling restart failed: ${error.message}` }),
      )
    control = await serveControl(args.port, {
      restart: rolling,
      status: async () => ({ ok: true, message: 'running', nodes: nodes.list() }),
    })
    onHangup = () => {
      rolling().then((result) =>
        result.ok ? logger.info(result.message) : logger.error(result.message),
      )
    }
    if (aborted) throw new Error('stopped before ready')
  } catch (error) {
    await stop()
    if (aborted) return 130
    throw error
  }
  ready = true

  // The demo's cookies are Secure behind HTTPS: nginx says https in X-Forwarded-Proto.
  const lines = [
    tls
      ? `ready https://127.0.0.1:${args.port} ca=${tls.ca}`
      : `ready http://127.0.0.1:${args.port}`,
  ]
  if (tls && args.httpPort !== undefined) {
    lines.push(`  http://127.0.0.1:${args.httpPort} redirects to https://127.0.0.1:${args.port}`)
  }
  for (const node of supervisor.list())
    lines.push(`  ${node.id}  http://127.0.0.1:${node.port}  pid ${node.pid}`)
  lines.push(
    database
      ? `  sessions: ${args.store}, table ${database.table} on ${describeDatabase(database)}`
      : `  sessions: ${memcached ? `memcached on ${memcached.servers}` : `redis${redisCluster ? ' cluster' : ''}`}`,
  )
  lines.push(
    `  rolling restart: sessionmesh restart --port ${args.port} (or kill -HUP ${process.pid})`,
  )
  process.stdout.write(`${lines.join('\n')}\n`)
  logger.info({ control: controlPath(args.port), nodes: supervisor.list() }, 'ready')

  await done
  return exitCode

  function fail(message: string): void {
    logger.error(message)
    exitCode = 1
    process.kill(process.pid, 'SIGTERM')
  }
}

/**
 * What tells each node where sessions live. Set even for Redis, so that a
 * `SESSIONMESH_STORE` left in the user's shell cannot contradict `--store`.
 */
function storeEnv(store: UpArgs['store'], database: Database | undefined): Record<string, string> {
  if (!database) return { SESSIONMESH_STORE: store }
  return {
    SESSIONMESH_STORE: store,
    // For tiered, which database is under the Redis cache.
    SESSIONMESH_DURABLE: database.kind,
    SESSIONMESH_TABLE: database.table,
    ...(database.url === undefined ? {} : { SESSIONMESH_DATABASE_URL: database.url }),
  }
}

/** Reports a helper process (nginx, redis-server) that exits while the cluster runs. */
function watch(
  child: import('node:child_process').ChildProcess,
  name: string,
  stopping: () => unknown,
  fail: (message: string) => void,
): void {
  child.once('exit', (code, signal) => {
    if (!stopping()) fail(`${name} exited unexpectedly (code ${code}, signal ${signal}); stopping`)
  })
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    // Already gone.
  }
}
