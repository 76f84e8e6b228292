import type { ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'

/** One answer of the agent's `fetch`. */
export interface AgentAnswer {
  status: number
  node: string | null
  location?: string | null
  setCookie?: string[]
  body?: string
  error?: string
  ms: number
}

/** What a steady loop counted. */
export interface LoopCounts {
  count: number
  byStatus: Record<string, number>
  byNode: Record<string, number>
  /** Answers by `node status`, e.g. `app1 503`; `none` when no node answered. */
  byNodeStatus: Record<string, number>
  errors: Record<string, number>
  /** 401s: a logged-in cookie that was no longer logged in. */
  logouts: number
  slowestMs: number
}

/** One request as the agent sends it. */
export interface AgentRequest {
  url: string
  method?: string
  headers?: Record<string, string>
  body?: unknown
  timeoutMs?: number
}

/** A socket's state as the agent saw it. */
export interface SocketState {
  connected: boolean
  disconnectedAt: number | null
  reason: string | null
  /** The reason of the server's `session:ended` event, if one came. */
  ended: string | null
  error: string | null
  welcome: { user: unknown; node: string } | null
}

/**
 * The test's handle on the agent (test/support/fleet-agent.mjs) that runs in the
 * client namespace: every request and socket starts there.
 */
export class FleetClient {
  readonly #child: ChildProcess
  readonly #pending = new Map<number, (answer: Record<string, unknown>) => void>()
  #next = 1
  #exited = false

  constructor(child: ChildProcess) {
    this.#child = child
    if (!child.stdout) throw new Error('the agent needs a stdout pipe')
    createInterface({ input: child.stdout }).on('line', (line) => {
      const answer = JSON.parse(line) as Record<string, unknown>
      this.#pending.get(Number(answer.id))?.(answer)
      this.#pending.delete(Number(answer.id))
    })
    child.once('exit', () => {
      this.#exited = true
      for (const resolve of this.#pending.values()) resolve({ ok: false, error: 'agent exited' })
      this.#pending.clear()
    })
  }

  async #call<T>(op: string, args: object = {}): Promise<T> {
    if (this.#exited) throw new Error(`agent ${op}: the agent has exited (see client.log)`)
    const id = this.#next++
    const answer = await new Promise<Record<string, unknown>>((resolve) => {
      this.#pending.set(id, resolve)
      this.#child.stdin?.write(`${JSON.stringify({ id, op, ...args })}\n`)
    })
    if (!answer.ok) throw new Error(`agent ${op}: ${String(answer.error)}`)
    return answer as T
  }

  /** One request from the client host. */
  fetch(request: AgentRequest): Promise<AgentAnswer> {
    return this.#call('fetch', request)
  }

  /** Requests all sent at once; answers in the same order. */
  async burst(requests: AgentRequest[]): Promise<AgentAnswer[]> {
    return (await this.#call<{ answers: AgentAnswer[] }>('burst', { requests })).answers
  }

  /** Starts a steady loop: one worker per cookie sending `request` one after the other. */
  async startLoop(
    name: string,
    cookies: string[],
    request: AgentRequest,
    options: { pauseMs?: number; maxRequests?: number } = {},
  ): Promise<void> {
    await this.#call('startLoop', { name, cookies, request, ...options })
  }

  /** Stops loop `name` (its in-flight requests finish) and returns its counts. */
  stopLoop(name: string): Promise<LoopCounts> {
    return this.#call('stopLoop', { name })
  }

  /** Opens a socket.io client (WebSocket only) with `cookie`; resolves once welcomed or refused. */
  openSocket(name: string, url: string, cookie: string): Promise<SocketState> {
    return this.#call('openSocket', { name, url, cookie })
  }

  socketState(name: string): Promise<SocketState> {
    return this.#call('socketState', { name })
  }

  async closeSockets(): Promise<void> {
    await this.#call('closeSockets')
  }

  /** Logs `username` in through `base` and returns the `name=value` session cookie. */
  async login(base: string, username: string): Promise<string> {
    const answer = await this.fetch({
      url: `${base}/api/login`,
      method: 'POST',
      headers: { origin: base },
      body: { username, password: 'sessionmesh' },
    })
    const cookie = answer.setCookie?.[0]?.split(';')[0]
    if (answer.status !== 200 || !cookie) {
      throw new Error(`login ${username}: ${answer.status} ${answer.error ?? answer.body}`)
    }
    return cookie
  }
}
