// What the benchmarks share: pinning to a core, starting a bench/server.mjs
// configuration, waiting for a Redis to come up, and which Redis commands a
// request sends itself.
import { execFileSync, spawn } from 'node:child_process'
import { availableParallelism } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createClient } from 'redis'

const here = dirname(fileURLToPath(import.meta.url))

/** True when processes can be pinned: two cores or more, and taskset. */
export const multiCore = availableParallelism() >= 2 && hasTaskset()

/** `command args` to run on `core` (as is without pinning): [command, args] for spawn. */
export const pin = (core, command, args) =>
  multiCore ? ['taskset', ['-c', String(core), command, ...args]] : [command, args]

function hasTaskset() {
  try {
    execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** Starts `bench/server.mjs config ...args` on core 0; resolves with the process and its port once it listens. */
export function startServer(config, args) {
  return startListening([join(here, 'server.mjs'), config, ...args], `server ${config}`)
}

/**
 * Starts `node ...nodeArgs` on core 0; resolves with the process and its port once
 * it prints `listening <port>`. What it prints after that is the caller's to read.
 */
export function startListening(nodeArgs, name) {
  const [cmd, rest] = pin(0, process.execPath, nodeArgs)
  const child = spawn(cmd, rest, { stdio: ['ignore', 'pipe', 'inherit'] })
  return new Promise((resolve, reject) => {
    let out = ''
    const listening = (chunk) => {
      out += chunk
      const match = /listening (\d+)/.exec(out)
      if (!match) return
      child.stdout.off('data', listening)
      resolve({ child, port: Number(match[1]) })
    }
    child.stdout.on('data', listening)
    child.once('exit', (code) => reject(new Error(`${name} exited with ${code}`)))
  })
}

/**
 * The Redis commands a request can send itself; every other command in
 * commandstats ran inside a script, whose own usec already covers it.
 */
export const REDIS_TOP_LEVEL = new Set([
  'get',
  'set',
  'setex',
  'expire',
  'pexpire',
  'hgetall',
  'evalsha',
  'eval',
  'del',
])

/** Connects `client` (node-redis) to a redis-server that is still starting: retries for 5 s. */
export async function connectWhenUp(client) {
  for (let i = 0; ; i++) {
    try {
      return await client.connect()
    } catch (error) {
      if (i > 100) throw error
      await new Promise((r) => setTimeout(r, 50))
    }
  }
}

/**
 * Deletes what bench/server.mjs configurations wrote to a shared Redis (their
 * sessions live a day): each writes under its own prefix, connect-redis under `cr:`.
 */
export async function removeWritten(redisUrl, configs) {
  const client = createClient({ url: redisUrl })
  await client.connect()
  for (const config of configs) {
    const prefix = config === 'es-connect-redis' ? 'cr:' : `${config}:`
    for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 500 })) {
      for (const key of [keys].flat()) await client.unlink(key)
    }
  }
  await client.quit()
}
