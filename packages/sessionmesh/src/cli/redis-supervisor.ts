import type { Logger } from 'pino'
import { type RunningRedis, startRedis } from './redis.js'

/** `up`'s private redis-server, kept running: restarted on the same port if it dies. */
export interface SupervisedRedis {
  url: string
  /** The process id of the redis-server running now, if one is. */
  pid(): number | undefined
  /** Stops it for good (no restart). */
  stop(): Promise<void>
}

/** Restart delay after the first exit; doubles with each failed restart in a row. */
const BACKOFF_MS = 250
const MAX_BACKOFF_MS = 5_000

/**
 * Starts redis-server and supervises it like a node: when it exits while the
 * cluster runs, it is started again on the same port (with backoff while it keeps
 * failing), so that nginx and the nodes stay up and clients get the outage
 * policy's 503 meanwhile, not a stopped cluster. It keeps nothing on disk: a
 * restarted Redis is empty, and everyone signs in again.
 */
export async function superviseRedis(
  bin: string,
  port: number,
  dir: string,
  logger: Logger,
): Promise<SupervisedRedis> {
  let current: RunningRedis | undefined = await startRedis(bin, port, dir)
  let stopped = false
  let failures = 0
  let timer: NodeJS.Timeout | undefined

  const restart = async () => {
    timer = undefined
    if (stopped) return
    try {
      const fresh = await startRedis(bin, port, dir)
      if (stopped) {
        await fresh.stop()
        return
      }
      current = fresh
      failures = 0
      logger.info({ redisPid: fresh.process.pid, port }, 'redis-server restarted')
      watch(fresh)
    } catch (error) {
      logger.error({ err: (error as Error).message }, 'redis-server restart failed')
      schedule()
    }
  }
  const schedule = () => {
    const delay = Math.min(BACKOFF_MS * 2 ** failures, MAX_BACKOFF_MS)
    failures++
    timer = setTimeout(restart, delay)
  }
  const watch = (running: RunningRedis) => {
    running.process.once('exit', (code, signal) => {
      if (stopped || current !== running) return
      current = undefined
      logger.error({ code, signal, port }, 'redis-server exited; restarting it')
      schedule()
    })
  }
  watch(current)

  return {
    url: current.url,
    pid: () => current?.process.pid,
    stop: async () => {
      stopped = true
      clearTimeout(timer)
      await current?.stop()
    },
  }
}
