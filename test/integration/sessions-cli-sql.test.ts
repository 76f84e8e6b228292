import { SessionStore } from 'sessionmesh'
import { migrate, openSqlBackend } from 'sessionmesh/migrate'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cli } from '../support/cluster.js'
import { MYSQL_URL, mysqlDatabase, PG_URL, pgSchema } from '../support/sql.js'

// `sessionmesh sessions` (the built CLI) against PostgreSQL and MariaDB: sessions
// written by a store as an app would, listed, counted and revoked from the shell.

interface Target {
  store: 'postgres' | 'mysql'
  url: string
  table: string
  drop(): Promise<void>
}

const targets: Target[] = []

beforeAll(async () => {
  const pg = await pgSchema()
  targets.push({ store: 'postgres', url: PG_URL, table: `${pg.schema}.sessions`, drop: pg.drop })
  const my = await mysqlDatabase()
  targets.push({ store: 'mysql', url: my.uri, table: 'sessions', drop: my.drop })
  for (const target of targets) await migrate(target)
})
afterAll(async () => {
  for (const target of targets) await target.drop()
})

describe.each(['postgres', 'mysql'] as const)('sessionmesh sessions --store %s', (kind) => {
  const target = () => targets.find((entry) => entry.store === kind) as Target
  const run = (...args: string[]) =>
    cli([
      'sessions',
      ...args,
      '--store',
      kind,
      '--database-url',
      target().url,
      '--table',
      target().table,
    ])

  it('lists, counts and revokes what the app wrote', async () => {
    const opened = await openSqlBackend(target())
    const store = new SessionStore({ backend: opened.backend })
    const device = { headers: { 'user-agent': `cli-${kind}` }, ip: '10.1.2.3' }
    const ids = ['sql-cli-session-aaaa', 'sql-cli-session-bbbb', 'sql-cli-session-cccc']
    try {
      for (const sid of ids) {
        await store.set(sid, { cookie: {}, passport: { user: 'dana' }, req: device })
      }
      const listed = await run('list', '--user', 'dana', '--json')
      expect(listed.stderr).toBe('')
      expect(listed.code).toBe(0)
      const sessions = JSON.parse(listed.stdout) as Array<Record<string, unknown>>
      expect(sessions.map((entry) => entry.id).sort()).toEqual(ids)
      expect(sessions[0]).toMatchObject({ userAgent: `cli-${kind}`, ip: '10.1.2.3' })

      expect(await run('count', '--json')).toMatchObject({ code: 0, stdout: '{"count":3}\n' })
      expect(await run('revoke', 'sql-cli-session-aaaa')).toMatchObject({
        code: 0,
        stdout: 'revoked session sql-cli-session-aaaa\n',
      })
      expect(await store.get('sql-cli-session-aaaa')).toBeNull()
      const rest = await run(
        'revoke',
        '--user',
        'dana',
        '--except',
        'sql-cli-session-cccc',
        '--json',
      )
      expect(JSON.parse(rest.stdout)).toEqual({ revoked: ['sql-cli-session-bbbb'] })
      expect(await store.get('sql-cli-session-cccc')).not.toBeNull()
      expect((await run('count')).stdout).toBe('1 live sessions\n')
    } finally {
      await store.close()
      await opened.close()
    }
  })

  it('exits 1 with a message naming the table when it is missing', async () => {
    const missing = await cli([
      'sessions',
      'count',
      '--store',
      kind,
      '--database-url',
      kind === 'postgres' ? PG_URL : MYSQL_URL,
      '--table',
      'no_such_sessions_table',
    ])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/cannot read the sessions table no_such_sessions_table/)
  })
})
