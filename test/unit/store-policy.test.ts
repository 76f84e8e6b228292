import { stat } from 'node:fs/promises'
import { type Backend, InvalidOptionError, SessionStore, StoreUnavailableError } from 'sessionmesh'
import { memoryBackend } from 'sessionmesh/memory'
import { describe, expect, it } from 'vitest'

/** A backend whose every call hangs until `answer()`: a server that stopped responding. */
function hangingBackend(): Backend & { calls: number } {
  const inner = memoryBackend()
  const hang = <T>(): Promise<T> => {
    backend.calls++
    return new Promise<T>(() => {})
  }
  const backend = {
    ...inner,
    kind: 'hanging',
    calls: 0,
    get: hang,
    write: hang,
    touch: hang,
    destroy: hang,
    listUser: hang,
    destroyUser: hang,
    count: hang,
    clear: hang,
    close: () => inner.close(),
  } as Backend & { calls: number }
  return backend
}

describe('store policy', () => {
  it('bounds a hung backend call by the timeout, then fails fast without calling it', async () => {
    const backend = hangingBackend()
    const store = new SessionStore({ backend, timeout: 50, retryAfter: 10_000 })
    const started = Date.now()
    await expect(store.get('a')).rejects.toBeInstanceOf(StoreUnavailableError)
    expect(Date.now() - started).toBeGreaterThanOrEqual(45)
    await expect(store.get('b')).rejects.toMatchObject({
      code: 'SESSIONMESH_STORE_UNAVAILABLE',
      status: 503,
    })
    expect(backend.calls).toBe(1) // the breaker kept the second call off the dead backend
  })

  it('takes an answer that arrived while the process was busy past the timeout, instead of a false 503', async () => {
    // The backend's answer (a real file system call, through libuv's thread pool) is in before the
    // timeout, but the process is busy on something else until well after it. In the
    // next turn of the event loop, timers run before I/O callbacks: the timeout must
    // not beat an answer that is already waiting.
    const inner = memoryBackend()
    const backend: Backend = {
      ...inner,
      kind: 'busy',
      get: (sid) => {
        const answer = stat(import.meta.filename).then(() => inner.get(sid))
        const until = Date.now() + 150
        while (Date.now() < until) {} // another request's synchronous work
        return answer
      },
    }
    const store = new SessionStore({ backend, timeout: 50, retryAfter: 10_000 })
    expect(await store.get('a')).toBeNull()
    // And nothing tripped: the next call goes through, not refused by the breaker.
    expect(await store.get('b')).toBeNull()
  })

  it('fail-open answers no session instead of an error', async () => {
    const store = new SessionStore({
      backend: hangingBackend(),
      timeout: 20,
      onUnavailable: 'fail-open',
    })
    expect(await store.get('a')).toBeNull()
  })

  it('calls back and resolves, for express-session and promise users alike', async () => {
    const store = new SessionStore()
    const viaCallback = await new Promise((resolve, reject) =>
      store.get('missing', (error, value) => (error ? reject(error) : resolve(value))),
    )
    expect(viaCallback).toBeNull()
    expect(await store.get('missing')).toBeNull()
  })

  it('rejects options it cannot work with, naming them', () => {
    expect(() => new SessionStore({ timeout: -1 })).toThrow(InvalidOptionError)
    expect(() => new SessionStore({ onUnavailable: 'maybe' as never })).toThrow(/onUnavailable/)
  })
})
