import { describe, expect, it } from 'vitest'
import {
  parseMigrateArgs,
  parseUpArgs,
  redactUrl,
} from '../../packages/sessionmesh/src/cli/args.js'
import { describeDatabase, resolveDatabase } from '../../packages/sessionmesh/src/cli/database.js'

describe('sessionmesh up --store', () => {
  it('defaults to redis, as before the option existed', () => {
    expect(parseUpArgs([])).toMatchObject({ store: 'redis', databaseUrl: undefined })
  })

  it('takes a store, a URL and a table', () => {
    expect(
      parseUpArgs(['--store', 'tiered', '--database-url', 'mysql://u@h/db', '--table', 'app.s']),
    ).toMatchObject({ store: 'tiered', databaseUrl: 'mysql://u@h/db', table: 'app.s' })
  })

  it('refuses an unknown store, a non-SQL URL, an unsafe table, and database flags with redis', () => {
    expect(() => parseUpArgs(['--store', 'sqlite'])).toThrow(/--store must be one of redis/)
    expect(() => parseUpArgs(['--store', 'postgres', '--database-url', 'redis://h'])).toThrow(
      /postgres:\/\/ or mysql:\/\//,
    )
    expect(() => parseUpArgs(['--store', 'postgres', '--table', 'x; DROP TABLE y'])).toThrow(
      /--table/,
    )
    expect(() => parseUpArgs(['--database-url', 'postgres://h/db'])).toThrow(/need --store/)
  })

  it('takes --store memcached without database flags, and --adapter streams (default) or classic', () => {
    expect(parseUpArgs(['--store', 'memcached'])).toMatchObject({
      store: 'memcached',
      adapter: 'streams',
    })
    expect(() => parseUpArgs(['--store', 'memcached', '--table', 's'])).toThrow(
      /sessions are in Memcached/,
    )
    expect(parseUpArgs(['--adapter', 'classic'])).toMatchObject({ adapter: 'classic' })
    expect(() => parseUpArgs(['--adapter', 'sharded'])).toThrow(/--adapter must be one of/)
  })

  it('migrate needs --store postgres or mysql', () => {
    expect(() => parseMigrateArgs([])).toThrow(/--store postgres or --store mysql/)
    expect(() => parseMigrateArgs(['--store', 'tiered'])).toThrow(/postgres, mysql/)
    expect(parseMigrateArgs(['--store', 'mysql'])).toMatchObject({ store: 'mysql' })
  })
})

describe('where the database comes from', () => {
  const none = { url: undefined, table: undefined }

  it('prefers the flag, then SESSIONMESH_DATABASE_URL, then MYSQL_URL (mysql), then DATABASE_URL', () => {
    const env = {
      SESSIONMESH_DATABASE_URL: 'mysql://a@h/db',
      MYSQL_URL: 'mysql://b@h/db',
      DATABASE_URL: 'mysql://c@h/db',
    }
    expect(
      resolveDatabase({ store: 'mysql', url: 'mysql://flag@h/db', table: undefined }, env).url,
    ).toBe('mysql://flag@h/db')
    expect(resolveDatabase({ store: 'mysql', ...none }, env).url).toBe('mysql://a@h/db')
    expect(
      resolveDatabase({ store: 'mysql', ...none }, { ...env, SESSIONMESH_DATABASE_URL: undefined })
        .url,
    ).toBe('mysql://b@h/db')
    expect(
      resolveDatabase({ store: 'mysql', ...none }, { DATABASE_URL: 'mysql://c@h/db' }),
    ).toEqual({
      kind: 'mysql',
      url: 'mysql://c@h/db',
      table: 'sessionmesh_sessions',
    })
  })

  it('lets node-postgres read the PG* variables when PostgreSQL has no URL', () => {
    expect(resolveDatabase({ store: 'postgres', ...none }, { PGHOST: 'db' })).toMatchObject({
      kind: 'postgres',
      url: undefined,
    })
  })

  it('runs tiered over the database the URL names', () => {
    expect(resolveDatabase({ store: 'tiered', url: 'mariadb://r@h/db', table: 't' }, {})).toEqual({
      kind: 'mysql',
      url: 'mariadb://r@h/db',
      table: 't',
    })
    expect(
      resolveDatabase({ store: 'tiered', url: 'postgres://h/db', table: undefined }, {}).kind,
    ).toBe('postgres')
  })

  it('names the flag and the variables when nothing is set', () => {
    expect(() => resolveDatabase({ store: 'mysql', ...none }, {})).toThrow(
      /--database-url .*SESSIONMESH_DATABASE_URL, MYSQL_URL or DATABASE_URL/,
    )
    expect(() => resolveDatabase({ store: 'postgres', ...none }, {})).toThrow(/PGHOST/)
  })

  it('refuses a URL of the other database', () => {
    expect(() =>
      resolveDatabase({ store: 'postgres', ...none }, { DATABASE_URL: 'mysql://h/db' }),
    ).toThrow(/needs a postgres:\/\/ URL/)
  })

  it('never shows the password', () => {
    expect(redactUrl('postgres://me:s3cret@h:5432/db')).toBe('postgres://me:***@h:5432/db')
    expect(redactUrl('mysql://me@h/db')).toBe('mysql://me@h/db')
    expect(
      describeDatabase({ kind: 'mysql', url: 'mysql://root:pw@127.0.0.1/test', table: 't' }),
    ).not.toContain('pw')
  })
})
