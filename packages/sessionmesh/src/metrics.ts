import { createRequire } from 'node:module'
import type { Counter, Gauge, Histogram, Registry } from 'prom-client'
import { InvalidOptionError } from './core/errors.js'
import type { MeteredSource, Recorder } from './core/metrics.js'

/**
 * The `metrics` option of `new SessionStore(…)` and `session(…)`: a prom-client
 * `Registry` (`new Registry()`, or prom-client's default `register`) that the
 * `sessionmesh_*` metrics are registered in. prom-client is an optional peer
 * dependency, loaded only when this option is given.
 */
export interface MetricsOptions {
  /** A prom-client `Registry`; only its `getSingleMetric` is named here, so that these types need no prom-client. */
  registry: { getSingleMetric(name: string): unknown }
}

type PromClient = typeof import('prom-client')

let promClient: PromClient | undefined
function prom(): PromClient {
  try {
    promClient ??= createRequire(import.meta.url)('prom-client') as PromClient
  } catch (error) {
    throw new InvalidOptionError(
      `the metrics option needs prom-client: npm install prom-client (${(error as Error).message})`,
    )
  }
  return promClient
}

/** One set of metrics per registry, shared by every store and middleware that uses it. */
const recorders = new WeakMap<object, Recorder>()

/** The recorder for `options`, or `undefined` (nothing recorded) without them. */
export function recorderFor(options: MetricsOptions | undefined): Recorder | undefined {
  if (options === undefined) return undefined
  const registry = options.registry as Registry | undefined
  if (typeof registry?.getSingleMetric !== 'function') {
    throw new InvalidOptionError('metrics.registry must be a prom-client Registry')
  }
  let recorder = recorders.get(registry)
  if (!recorder) {
    recorder = prometheusRecorder(registry)
    recorders.set(registry, recorder)
  }
  return recorder
}

function prometheusRecorder(registry: Registry): Recorder {
  const client = prom()
  const registers = [registry]
  const sources = new Set<MeteredSource>()
  // Near cache counters are read from the caches at scrape time: the last total
  // seen per cache, so that each scrape adds what happened since.
  const seen = new WeakMap<MeteredSource, { hits: number; misses: number; evictions: number }>()
  const nearCounter = (name: string, help: string, key: 'hits' | 'misses' | 'evictions') =>
    new client.Counter({
      name,
      help,
      registers,
      collect(this: Counter) {
        for (const source of sources) {
          const stats = source.nearCache()
          if (!stats) continue
          const last = seen.get(source) ?? { hits: 0, misses: 0, evictions: 0 }
          const value = key === 'evictions' ? stats.evictions + stats.invalidations : stats[key]
          if (value > last[key]) this.inc(value - last[key])
          last[key] = value
          seen.set(source, last)
        }
      },
    })

  const calls: Histogram = new client.Histogram({
    name: 'sessionmesh_backend_call_duration_seconds',
    help: 'Backend calls by operation and outcome (ok, error, unavailable: failed, timed out or refused by the open breaker)',
    labelNames: ['operation', 'outcome'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers,
  })
  new client.Gauge({
    name: 'sessionmesh_breaker_open',
    help: '1 while the circuit breaker refuses backend calls, 0 when calls go through',
    labelNames: ['backend'],
    registers,
    collect(this: Gauge) {
      this.reset()
      // Several stores over one backend kind: open if any of them is.
      const open = new Map<string, number>()
      for (const source of sources) {
        open.set(
          source.backend,
          Math.max(open.get(source.backend) ?? 0, source.breakerOpen() ? 1 : 0),
        )
      }
      for (const [backend, value] of open) this.set({ backend }, value)
    },
  })
  nearCounter('sessionmesh_near_cache_hits_total', 'Loads the near cache answered', 'hits')
  nearCounter(
    'sessionmesh_near_cache_misses_total',
    'Loads the near cache sent to the backend',
    'misses',
  )
  nearCounter(
    'sessionmesh_near_cache_evictions_total',
    'Near cache entries dropped: to stay within its size, or because the session changed elsewhere',
    'evictions',
  )
  const created: Counter = new client.Counter({
    name: 'sessionmesh_sessions_created_total',
    help: 'Sessions this process created',
    registers,
  })
  const destroyed: Counter = new client.Counter({
    name: 'sessionmesh_sessions_destroyed_total',
    help: 'Sessions this process ended, by reason: logout, revoked, regenerated, expired, limit',
    labelNames: ['reason'],
    registers,
  })
  const refused: Counter = new client.Counter({
    name: 'sessionmesh_refused_writes_total',
    help: 'Saves refused: gone (destroyed or expired meanwhile) or too_large (over maxBytes)',
    labelNames: ['reason'],
    registers,
  })
  const sockets: Counter = new client.Counter({
    name: 'sessionmesh_socket_disconnects_total',
    help: 'Sockets the socket.io binding closed, by reason: revoked, expired, logged-out, ended',
    labelNames: ['reason'],
    registers,
  })

  return {
    backendCall: (operation, outcome, seconds) => calls.observe({ operation, outcome }, seconds),
    refusedWrite: (reason) => refused.inc({ reason }),
    socketsClosed: (reason, count) => sockets.inc({ reason }, count),
    session(event) {
      if (event.origin !== 'local') return
      if (event.type === 'created') created.inc()
      else destroyed.inc({ reason: event.reason })
    },
    watch(source) {
      sources.add(source)
      return () => sources.delete(source)
    },
  }
}
