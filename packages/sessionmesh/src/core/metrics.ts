import type { SessionLifecycleEvent } from './events.js'
import type { NearCacheStats } from './near-cache.js'

/**
 * Where the engine reports what it measures. The core knows only this
 * interface; `sessionmesh`'s `metrics` option fills it with prom-client metrics
 * (loaded only then), and without the option nothing is recorded.
 */
export interface Recorder {
  /** One backend call: its operation (`get`, `set`, `touch`, `destroy`, …), how it ended, and how long it took. */
  backendCall(operation: string, outcome: 'ok' | 'error' | 'unavailable', seconds: number): void
  /** A lifecycle event (the recorder counts this process's own). */
  session(event: SessionLifecycleEvent): void
  /** A save refused: the session was gone (destroyed or expired) or too large. */
  refusedWrite(reason: 'gone' | 'too_large'): void
  /** Sockets the socket.io binding closed, by its end reason. */
  socketsClosed(reason: string, count: number): void
  /** Reads breaker and near cache state at scrape time; returns a function that stops it. */
  watch(source: MeteredSource): () => void
}

/** What is read at scrape time from one engine. */
export interface MeteredSource {
  backend: string
  breakerOpen(): boolean
  nearCache(): NearCacheStats | undefined
}
