import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'

// A TCP proxy in a process of its own, so that a test can freeze it with SIGSTOP:
// the connections stay open (no RST, no close) and everything sent meanwhile
// waits in kernel buffers, as over a stalled network link, until SIGCONT.
const PROXY_SOURCE = `
const net = require('node:net')
const [host, port] = [process.argv[1], Number(process.argv[2])]
const server = net.createServer((client) => {
  const upstream = net.connect(port, host)
  client.pipe(upstream).pipe(client)
  const end = () => { client.destroy(); upstream.destroy() }
  client.on('error', end)
  upstream.on('error', end)
  client.on('close', end)
  upstream.on('close', end)
})
server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'))
`

/** A private loopback TCP proxy to `host:port` that a test can pause and resume. */
export class StallProxy {
  readonly port: number
  readonly #child: ChildProcess

  private constructor(child: ChildProcess, port: number) {
    this.#child = child
    this.port = port
  }

  static async start(port: number, host = '127.0.0.1'): Promise<StallProxy> {
    const child = spawn(process.execPath, ['-e', PROXY_SOURCE, host, String(port)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    const [chunk] = (await once(child.stdout as NodeJS.ReadableStream, 'data')) as [Buffer]
    return new StallProxy(child, Number(chunk.toString().trim()))
  }

  /** Freezes the proxy: nothing passes, nothing is closed. */
  pause(): void {
    this.#child.kill('SIGSTOP')
  }

  /** Lets everything that waited through. */
  resume(): void {
    this.#child.kill('SIGCONT')
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return
    this.#child.kill('SIGCONT')
    this.#child.kill('SIGKILL')
    await once(this.#child, 'exit')
  }
}
