import type { ChildProcess } from 'node:child_process'
import { createConnection } from 'node:net'
import { startServerProcess, stopProcess } from './system.js'

/** A private redis-server that `sessionmesh up` started. */
export interface RunningRedis {
  url: string
  process: ChildProcess
  /** SIGTERM (redis-server exits at once with nothing to save), SIGKILL after a timeout. */
  stop(): Promise<void>
}

/**
 * The redis-server arguments that keep a session's hash compact. Redis stores a
 * small hash as a listpack only while every value is at most 64 bytes (its
 * default). The backend keeps its own fields and the cookie within that, but an
 * application's values may be longer (a passport user that is a profile), and
 * the hash then takes about twice the memory (docs/backends.md, "Memory in
 * Redis"). The ziplist name is the one Redis 6 knows and Redis 7 still accepts.
 */
export const COMPACT_HASHES = ['--hash-max-ziplist-value', '1024'] as const

/**
 * Starts redis-server on 127.0.0.1:`port` with its working directory in `dir` and
 * no persistence: the cluster's sessions live as long as the cluster does.
 */
export async function startRedis(bin: string, port: number, dir: string): Promise<RunningRedis> {
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    'no',
    ...COMPACT_HASHES,
  ]
  const child = await startServerProcess(
    bin,
    args,
    `redis-server on port ${port}`,
    async () => (await ping(port)) === '+PONG',
  )
  return {
    url: `redis://127.0.0.1:${port}`,
    process: child,
    stop: () => stopProcess(child, 'SIGTERM', 5_000),
  }
}

/** Sends PING over a raw socket: readiness without loading a client library. */
export function ping(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host: '127.0.0.1' })
    socket.setTimeout(500)
    socket.once('connect', () => socket.write('PING\r\n'))
    socket.once('data', (data) => {
      resolve(data.toString().trim())
      socket.destroy()
    })
    socket.once('error', () => resolve(''))
    socket.once('timeout', () => {
      resolve('')
      socket.destroy()
    })
  })
}
