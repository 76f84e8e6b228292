import { describe, expect, it } from 'vitest'
import { parseSessionsArgs } from '../../packages/sessionmesh/src/cli/sessions-args.js'
import { UsageError } from '../../packages/sessionmesh/src/cli/system.js'

const noEnv = {}

describe('sessionmesh sessions: arguments', () => {
  it('reads the four actions', () => {
    expect(parseSessionsArgs(['list', '--user', 'alice'], noEnv).action).toEqual({
      kind: 'list',
      user: 'alice',
    })
    expect(parseSessionsArgs(['revoke', 'abc123'], noEnv).action).toEqual({
      kind: 'revoke',
      sid: 'abc123',
    })
    expect(
      parseSessionsArgs(['revoke', '--user', 'bob', '--except', 'keep'], noEnv).action,
    ).toEqual({ kind: 'revoke-user', user: 'bob', except: 'keep' })
    expect(parseSessionsArgs(['revoke', '--user', 'bob'], noEnv).action).toEqual({
      kind: 'revoke-user',
      user: 'bob',
      except: undefined,
    })
    expect(parseSessionsArgs(['count'], noEnv).action).toEqual({ kind: 'count' })
  })

  it('takes session and user ids that start with a dash (one base64url id in 64 does)', () => {
    expect(parseSessionsArgs(['revoke', '-Ab_c'], noEnv).action).toEqual({
      kind: 'revoke',
      sid: '-Ab_c',
    })
    expect(parseSessionsArgs(['revoke', '--json', '--', '-Ab_c'], noEnv)).toMatchObject({
      action: { kind: 'revoke', sid: '-Ab_c' },
      json: true,
    })
    expect(
      parseSessionsArgs(['revoke', '--user', '-bob', '--except', '-keep', '--json'], noEnv),
    ).toMatchObject({ action: { kind: 'revoke-user', user: '-bob', except: '-keep' }, json: true })
    expect(parseSessionsArgs(['revoke', '--except=-keep', '--user=bob'], noEnv).action).toEqual({
      kind: 'revoke-user',
      user: 'bob',
      except: '-keep',
    })
  })

  it('defaults to the Redis of REDIS_URL, then 127.0.0.1:6379, a 5 s timeout and text output', () => {
    expect(parseSessionsArgs(['count'], noEnv)).toMatchObject({
      store: 'redis',
      redis: 'redis://127.0.0.1:6379',
      prefix: undefined,
      json: false,
      timeout: 5000,
    })
    expect(parseSessionsArgs(['count'], { REDIS_URL: 'redis://127.0.0.1:7000' }).redis).toBe(
      'redis://127.0.0.1:7000',
    )
  })

  it('takes every Redis URL form, a prefix, --json and --timeout', () => {
    for (const url of [
      'redis://127.0.0.1:6379',
      'redis+cluster://127.0.0.1:7000,127.0.0.1:7001',
      'redis+sentinel://127.0.0.1:26379/sessions',
    ]) {
      expect(
        parseSessionsArgs(
          ['list', '--user', 'u', '--redis', url, '--prefix', 'app:', '--json', '--timeout', '900'],
          noEnv,
        ),
      ).toMatchObject({ redis: url, prefix: 'app:', json: true, timeout: 900 })
    }
  })

  it('takes a SQL store with its URL and table, and no Redis for it', () => {
    expect(
      parseSessionsArgs(
        [
          'count',
          '--store',
          'mysql',
          '--database-url',
          'mysql://root@127.0.0.1/test',
          '--table',
          'app.s',
        ],
        { REDIS_URL: 'redis://127.0.0.1:7000' },
      ),
    ).toMatchObject({
      store: 'mysql',
      redis: undefined,
      databaseUrl: 'mysql://root@127.0.0.1/test',
      table: 'app.s',
    })
    expect(
      parseSessionsArgs(['count', '--store', 'tiered', '--database-url', 'postgres://h/db'], noEnv),
    ).toMatchObject({ store: 'tiered', redis: 'redis://127.0.0.1:6379' })
  })

  it.each([
    [[], /say what to do/],
    [['purge'], /unknown subcommand "purge"/],
    [['list'], /needs --user U/],
    [['list', 'extra', '--user', 'u'], /takes no extra/],
    [['revoke'], /needs a session id/],
    [['revoke', 'a', 'b'], /one session id/],
    [['revoke', 'a', '--user', 'u'], /not both/],
    [['revoke', 'a', '--except', 'b'], /--except goes with revoke --user/],
    [['list', '--user', 'u', '--except', 'b'], /--except goes with revoke --user/],
    [['count', '--user', 'u'], /counts every session/],
    [['list', '--user'], /--user/],
    [['revoke', '--user', 'bob', '--except', '--json'], /--except/],
    [['revoke', 'a', '-b'], /one session id/],
    [['count', '--bogus'], /Unknown option '--bogus'/],
    [['count', '--store', 'sqlite'], /--store must be one of redis, postgres, mysql, tiered/],
    [['count', '--redis', 'http://127.0.0.1'], /--redis must be a redis:\/\//],
    [['count', '--redis', 'redis+sentinel://127.0.0.1:26379'], /--redis must be/],
    [['count', '--table', 'x'], /need --store postgres, mysql or tiered/],
    [['count', '--store', 'postgres', '--redis', 'redis://h:1'], /--redis does not go/],
    [['count', '--store', 'postgres', '--prefix', 'p:'], /--prefix is the Redis key prefix/],
    [['count', '--store', 'postgres', '--database-url', 'redis://h'], /postgres:\/\/ or mysql/],
    [['count', '--store', 'postgres', '--table', 'x; DROP TABLE y'], /--table/],
    [['count', '--timeout', '0'], /--timeout must be/],
    [['count', '--timeout', '2s'], /--timeout must be/],
  ])('refuses %j with a usage error (exit 2)', (argv, message) => {
    let thrown: unknown
    try {
      parseSessionsArgs(argv as string[], noEnv)
    } catch (error) {
      thrown = error
    }
    expect(thrown).toBeInstanceOf(UsageError)
    expect((thrown as Error).message).toMatch(message)
  })

  it('never echoes a database password in a usage error', () => {
    expect(() =>
      parseSessionsArgs(
        ['count', '--store', 'mysql', '--database-url', 'http://u:hunter2@h/'],
        noEnv,
      ),
    ).toThrow(/^(?!.*hunter2)/s)
  })
})
