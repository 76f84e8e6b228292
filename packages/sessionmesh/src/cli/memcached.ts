import type { ChildProcess } from 'node:child_process'
import { MemcachedClient } from '../backends/memcached/client.js'
import { startServerProcess, stopProcess } from './system.js'

/** A private memcached that `sessionmesh up --store memcached` (or a test) started. */
export interface RunningMemcached {
  /** `127.0.0.1:port`, as `memcachedBackend({ servers })` takes it. */
  servers: string
  port: number
  process: ChildProcess
  /** SIGTERM, SIGKILL after a timeout. */
  stop(): Promise<void>
}

/**
 * Starts memcached on 127.0.0.1:`port`, TCP only (`-U 0`), with `memory` MB for
 * items. Its items live as long as it runs.
 */
export async function startMemcached(
  bin: string,
  port: number,
  options: { memory?: number } = {},
): Promise<RunningMemcached> {
  const args = [
    '-l',
    '127.0.0.1',
    '-p',
    String(port),
    '-U',
    '0',
    '-m',
    String(options.memory ?? 64),
  ]
  // memcached refuses to run as root unless told which user to be.
  if (process.getuid?.() === 0) args.push('-u', 'root')
  const child = await startServerProcess(bin, args, `memcached on port ${port}`, async () =>
    (await version(port)).startsWith('VERSION'),
  )
  return {
    servers: `127.0.0.1:${port}`,
    port,
    process: child,
    stop: () => stopProcess(child, 'SIGTERM', 5_000),
  }
}

/** Asks for `version`: readiness, through the client the backend uses. */
async function version(port: number): Promise<string> {
  const client = new MemcachedClient({ servers: `127.0.0.1:${port}`, timeout: 500 })
  try {
    return (await client.version())[0] ?? ''
  } catch {
    return ''
  } finally {
    await client.close()
  }
}
