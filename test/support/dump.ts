import { execFile } from 'node:child_process'
import { connect } from 'node:net'
import { promisify } from 'node:util'
import { MYSQL_URL, PG_URL } from './sql.js'

const run = promisify(execFile)

// Raw dumps by each server's own command-line tool, for the checks that nothing
// is stored in clear: what an operator (or an attacker with the files) would see.

/** Every key under `prefix` with its value, by `redis-cli` (strings, hashes, sets, lists, zsets). */
export async function redisCliDump(url: string, prefix: string): Promise<string> {
  // Keys raw (one a line, as they are), values quoted (binary escaped, text as it is).
  const cli = (...args: string[]) => run('redis-cli', ['-u', url, '--no-raw', ...args])
  const { stdout: keys } = await run('redis-cli', [
    '-u',
    url,
    '--raw',
    '--scan',
    '--pattern',
    `${prefix}*`,
  ])
  const out: string[] = []
  for (const key of keys.split('\n').filter(Boolean)) {
    const { stdout: type } = await run('redis-cli', ['-u', url, '--raw', 'TYPE', key])
    const read: Record<string, string[]> = {
      string: ['GET', key],
      hash: ['HGETALL', key],
      set: ['SMEMBERS', key],
      list: ['LRANGE', key, '0', '-1'],
      zset: ['ZRANGE', key, '0', '-1', 'WITHSCORES'],
    }
    const command = read[type.trim()]
    const { stdout } = command ? await cli(...command) : { stdout: '' }
    out.push(`${key} (${type.trim()})\n${stdout}`)
  }
  return out.join('\n')
}

/** The rows of `table` (schema-qualified) as `pg_dump --data-only` prints them. */
export async function pgDump(table: string): Promise<string> {
  const { stdout } = await run('pg_dump', ['--data-only', '--table', table, PG_URL])
  return stdout
}

/** The rows of `table` in `database` as `mariadb-dump` prints them. */
export async function mariadbDump(database: string, table: string): Promise<string> {
  const url = new URL(MYSQL_URL)
  const { stdout } = await run('mariadb-dump', [
    '-h',
    url.hostname,
    '-P',
    url.port || '3306',
    '-u',
    decodeURIComponent(url.username),
    '--skip-extended-insert',
    database,
    table,
  ])
  return stdout
}

/** Every item under `prefix` of a memcached, by its text protocol: `lru_crawler metadump all`, then `get`. */
export async function memcachedDump(port: number, prefix: string): Promise<string> {
  const metadump = await memcachedText(port, 'lru_crawler metadump all\r\n', /^END\r\n/m)
  const keys = [...metadump.matchAll(/^key=(\S+)/gm)]
    .map((match) => decodeURIComponent(match[1] as string))
    .filter((key) => key.startsWith(prefix))
  if (keys.length === 0) return ''
  return memcachedText(port, `get ${keys.join(' ')}\r\n`, /^END\r\n/m)
}

function memcachedText(port: number, command: string, end: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(command))
    let text = ''
    socket.setEncoding('utf8')
    socket.on('data', (chunk) => {
      text += chunk
      if (end.test(text)) {
        socket.end()
        resolve(text)
      }
    })
    socket.on('error', reject)
  })
}
