import { StoreUnavailableError } from './errors.js'

/** How the store protects requests from a slow or dead backend. */
export interface GuardOptions {
  /** Longest wait for one backend call, in ms. */
  timeout: number
  /** After a failure, calls fail at once for this long, in ms; then one call probes. */
  retryAfter: number
  /** Names the backend in error messages. */
  kind: string
  /** True when an error means the backend is unreachable. */
  isOutage: (error: unknown) => boolean
}

/**
 * A timeout on every call plus a circuit breaker. A dead backend costs the first
 * request at most `timeout`; after that, requests get an immediate
 * {@link StoreUnavailableError} instead of piling up in a client's offline queue,
 * and one probe call every `retryAfter` notices when the backend is back.
 */
export class Guard {
  readonly #options: GuardOptions
  #openUntil = 0
  #probing = false
  #lastError: unknown

  constructor(options: GuardOptions) {
    this.#options = options
  }

  /** True while calls are being refused without trying the backend. */
  get open(): boolean {
    return this.#openUntil !== 0
  }

  /**
   * Runs `call` under the timeout and breaker. `call` gets the deadline a backend
   * must not apply its work after: the timeout, less a margin (a tenth, at most
   * 50 ms) for the reply to come back before the caller gives up.
   */
  async run<T>(call: (deadline: number) => Promise<T>): Promise<T> {
    const probe = this.#admit()
    const { timeout } = this.#options
    const deadline = Date.now() + timeout - Math.min(50, timeout / 10)
    try {
      const result = await this.#withTimeout(() => call(deadline))
      this.#openUntil = 0
      return result
    } catch (error) {
      if (error instanceof StoreUnavailableError || this.#options.isOutage(error)) {
        this.#trip(error)
        throw error instanceof StoreUnavailableError
          ? error
          : new StoreUnavailableError(`${this.#options.kind} backend failed: ${describe(error)}`, {
              cause: error,
            })
      }
      // The backend answered, with an error of its own: it is up.
      this.#openUntil = 0
      throw error
    } finally {
      if (probe) this.#probing = false
    }
  }

  /** Lets the call through, or throws; returns true when the call is the breaker's probe. */
  #admit(): boolean {
    if (this.#openUntil === 0) return false
    if (this.#probing || Date.now() < this.#openUntil) {
      throw new StoreUnavailableError(
        `${this.#options.kind} backend is unavailable (last error: ${describe(this.#lastError)}); retrying every ${this.#options.retryAfter} ms`,
        { cause: this.#lastError },
      )
    }
    this.#probing = true
    return true
  }

  #trip(error: unknown): void {
    this.#lastError = error
    this.#openUntil = Date.now() + this.#options.retryAfter
  }

  #withTimeout<T>(call: () => Promise<T>): Promise<T> {
    const { timeout, kind } = this.#options
    return new Promise<T>((resolve, reject) => {
      // A process busy past the timeout may have the answer waiting already: in a turn
      // of the event loop timers run before I/O callbacks, so the timeout gives up one
      // turn later (setImmediate runs after I/O). Otherwise a slow process reads as a
      // dead backend, and a write that was applied gets a 503.
      const timer = setTimeout(
        () =>
          setImmediate(() =>
            reject(
              new StoreUnavailableError(`${kind} backend did not answer within ${timeout} ms`),
            ),
          ),
        timeout,
      )
      let pending: Promise<T>
      try {
        pending = call()
      } catch (error) {
        clearTimeout(timer)
        reject(error)
        return
      }
      pending.then(
        (value) => {
          clearTimeout(timer)
          resolve(value)
        },
        (error: unknown) => {
          clearTimeout(timer)
          reject(error)
        },
      )
    })
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
