import { createConnection, createServer, type Server, type Socket } from 'node:net'

/**
 * A TCP proxy on a free loopback port in front of `127.0.0.1:target` that can
 * freeze: it stops moving bytes in both directions while keeping every connection
 * open, as a link does that hangs without a reset or a close.
 */
export class FreezableProxy {
  readonly #server: Server
  readonly #pairs = new Set<[Socket, Socket]>()
  #frozen = false
  port = 0

  private constructor(target: number) {
    this.#server = createServer((client) => {
      const upstream = createConnection({ host: '127.0.0.1', port: target })
      const pair: [Socket, Socket] = [client, upstream]
      this.#pairs.add(pair)
      this.#forward(client, upstream)
      this.#forward(upstream, client)
      const end = () => {
        this.#pairs.delete(pair)
        client.destroy()
        upstream.destroy()
      }
      client.on('error', end).on('close', end)
      upstream.on('error', end).on('close', end)
    })
  }

  // Held bytes wait in a queue per direction, in order, until the thaw.
  readonly #held = new Map<Socket, Buffer[]>()

  #forward(from: Socket, to: Socket): void {
    from.on('data', (chunk: Buffer) => {
      if (this.#frozen) {
        const queue = this.#held.get(to) ?? []
        queue.push(chunk)
        this.#held.set(to, queue)
      } else to.write(chunk)
    })
  }

  static async start(target: number): Promise<FreezableProxy> {
    const proxy = new FreezableProxy(target)
    await new Promise<void>((resolve) => proxy.#server.listen(0, '127.0.0.1', resolve))
    const address = proxy.#server.address()
    if (address && typeof address === 'object') proxy.port = address.port
    return proxy
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`
  }

  /** Stops forwarding: what either side sends is held, and nothing is closed, until {@link thaw}. */
  freeze(): void {
    this.#frozen = true
  }

  /** Delivers what was held, in order, and forwards again. */
  thaw(): void {
    this.#frozen = false
    for (const [to, queue] of this.#held)
      for (const chunk of queue) if (!to.destroyed) to.write(chunk)
    this.#held.clear()
  }

  async close(): Promise<void> {
    for (const [a, b] of this.#pairs) {
      a.destroy()
      b.destroy()
    }
    await new Promise((resolve) => this.#server.close(resolve))
  }
}
