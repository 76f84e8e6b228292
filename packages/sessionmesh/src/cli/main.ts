#!/usr/bin/env node
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pino } from 'pino'
import {
  parseMigrateArgs,
  parseNginxArgs,
  parsePm2Args,
  parseRestartArgs,
  parseUpArgs,
  USAGE,
} from './args.js'
import { sendControl } from './control.js'
import { DatabaseError, describeDatabase, migrateDatabase, resolveDatabase } from './database.js'
import { http2ModeFor, renderNginxConfig } from './nginx-config.js'
import { renderPm2Ecosystem } from './pm2.js'
import { runSessions } from './sessions.js'
import { parseSessionsArgs } from './sessions-args.js'
import { findTool, nginxVersion, tools, UsageError } from './system.js'
import { up } from './up.js'

const here = dirname(fileURLToPath(import.meta.url))

/**
 * The demo app, for when no --app is given: next to the package in a clone of the
 * repository, or as the workspace package `sessionmesh-chat-demo`.
 */
function defaultApp(): string {
  const inRepo = resolve(here, '../../../../examples/chat/server.js')
  if (existsSync(inRepo)) return inRepo
  try {
    return createRequire(import.meta.url).resolve('sessionmesh-chat-demo')
  } catch {
    throw new UsageError(
      'no --app given, and the demo app (examples/chat in the sessionmesh repository) is not here.\n' +
        'Pass --app path/to/server.js: a module that listens on $PORT.',
    )
  }
}

/** The HTTP/2 switch of the nginx on this machine; `listen` (the older form) without one. */
function localHttp2Mode(): 'directive' | 'listen' {
  const bin = findTool(tools.nginx)
  return http2ModeFor(bin ? nginxVersion(bin) : '')
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  switch (command) {
    case 'up': {
      const args = parseUpArgs(rest)
      // Structured lines on stderr, with the nodes' own lines; stdout has the `ready` line.
      const logger = pino(
        { name: 'sessionmesh', base: { pid: process.pid } },
        pino.destination({ dest: 2, sync: true }),
      )
      return up({ ...args, app: args.app ? resolve(args.app) : defaultApp() }, logger)
    }
    case 'migrate': {
      const args = parseMigrateArgs(rest)
      const database = resolveDatabase({
        store: args.store,
        url: args.databaseUrl,
        table: args.table,
      })
      await migrateDatabase(database)
      process.stdout.write(
        `sessions table ${database.table} is ready on ${describeDatabase(database)}\n` +
          '(created if it was missing; running this again changes nothing)\n',
      )
      return 0
    }
    case 'sessions':
      return runSessions(parseSessionsArgs(rest))
    case 'restart': {
      const { port } = parseRestartArgs(rest)
      process.stderr.write(`replacing the nodes behind port ${port} one at a time…\n`)
      const reply = await sendControl(port, 'restart')
      process.stdout.write(`${reply.message}\n`)
      return reply.ok ? 0 : 1
    }
    case 'nginx': {
      const args = parseNginxArgs(rest)
      try {
        process.stdout.write(
          renderNginxConfig({
            upstreams: args.upstreams,
            listen: args.listen,
            sticky: args.sticky,
            cookieName: args.cookie,
            frontProxies: args.frontProxies,
            ...(args.tls
              ? {
                  tls: {
                    ...args.tls,
                    redirectFrom: args.httpListen,
                    http2: args.http2 ?? localHttp2Mode(),
                  },
                }
              : {}),
          }),
        )
      } catch (error) {
        throw new UsageError(`nginx: ${(error as Error).message}`)
      }
      return 0
    }
    case 'pm2': {
      const args = parsePm2Args(rest)
      process.stdout.write(
        renderPm2Ecosystem({
          app: args.app ? resolve(args.app) : defaultApp(),
          nodes: args.nodes,
          basePort: args.basePort,
          redisUrl: args.redis,
          name: args.name,
        }),
      )
      return 0
    }
    case '--version':
    case '-v': {
      const pkg = JSON.parse(readFileSync(resolve(here, '../../package.json'), 'utf8')) as {
        version: string
      }
      process.stdout.write(`${pkg.version}\n`)
      return 0
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE)
      return command === undefined ? 1 : 0
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}\n\n${USAGE}`)
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof UsageError || error instanceof DatabaseError)
      process.stderr.write(`sessionmesh: ${error.message}\n`)
    else
      process.stderr.write(
        `sessionmesh: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      )
    process.exit(error instanceof UsageError ? 2 : 1)
  },
)
