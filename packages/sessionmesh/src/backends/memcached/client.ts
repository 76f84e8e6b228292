import { createHash } from 'node:crypto'
import { connect, type Socket } from 'node:net'
import { debuglog } from 'node:util'
import { InvalidOptionError, StoreUnavailableError } from '../../core/errors.js'

const debug = debuglog('sessionmesh:memcached')

/** Options of {@link MemcachedClient}. */
export interface MemcachedClientOptions {
  /** `host:port` of each server, as a list or comma-separated (`'10.0.0.1:11211,10.0.0.2:11211'`). */
  servers: string | string[]
  /**
   * Longest wait for one reply, in ms. A server that does not answer in time has its
   * connection closed (replies on it can no longer be matched to requests) and
   * every command waiting on it fails as an outage.
   * @default 1000
   */
  timeout?: number
}

/** One item as `gets` returns it. */
export interface MemcachedItem {
  value: string
  /** The item's CAS unique, for {@link MemcachedClient.cas}. */
  cas: string
}

/** What a storage command answered: `NOT_STORED` (add), `EXISTS`/`NOT_FOUND` (cas). */
export type StoreReply = 'STORED' | 'NOT_STORED' | 'EXISTS' | 'NOT_FOUND'

type Expect = 'line' | 'values' | 'lines'

interface Pending {
  expect: Expect
  resolve(reply: string[]): void
  reject(error: Error): void
  timer: NodeJS.Timeout
  lines: string[]
}

/**
 * A small client of Memcached's text protocol (the one every server version
 * speaks; the binary protocol is deprecated since 1.6). Commands on one server are
 * pipelined on one connection and answered in order. There is no offline queue
 * and no failover: a command to a server that is down fails at once with a
 * {@link StoreUnavailableError}, and its keys are never moved to another server
 * (that would split a session from its tombstone and its CAS history).
 *
 * Keys are spread over the servers by rendezvous hashing, so adding a server moves
 * only the keys that now belong to it.
 *
 * @example
 * const client = new MemcachedClient({ servers: '127.0.0.1:11211' })
 * const backend = memcachedBackend({ client })
 */
export class MemcachedClient {
  readonly #servers: Connection[]

  constructor(options: MemcachedClientOptions) {
    const list = (Array.isArray(options.servers) ? options.servers : options.servers.split(','))
      .map((server) => server.trim())
      .filter(Boolean)
    if (list.length === 0) throw new InvalidOptionError('memcached: `servers` names no server')
    const timeout = options.timeout ?? 1000
    this.#servers = list.map((server) => {
      const match = /^(.+):(\d+)$/.exec(server)
      if (!match?.[1] || !match[2])
        throw new InvalidOptionError(`memcached: "${server}" is not host:port`)
      return new Connection(match[1].replace(/^\[|\]$/g, ''), Number(match[2]), timeout)
    })
  }

  /** The `host:port` of every server. */
  get servers(): string[] {
    return this.#servers.map((server) => server.name)
  }

  /** The items that exist among `keys`, with their CAS uniques (one round trip per server). */
  async gets(keys: string[]): Promise<Map<string, MemcachedItem>> {
    const found = new Map<string, MemcachedItem>()
    const byServer = new Map<Connection, string[]>()
    for (const key of keys) {
      const server = this.#serverOf(key)
      byServer.set(server, [...(byServer.get(server) ?? []), key])
    }
    await Promise.all(
      [...byServer].map(async ([server, group]) => {
        const lines = await server.send(`gets ${group.join(' ')}\r\n`, 'values')
        for (let i = 0; i + 1 < lines.length; i += 2) {
          // VALUE <key> <flags> <bytes> <cas>, then the data line.
          const header = (lines[i] ?? '').split(' ')
          const key = header[1]
          const cas = header[4]
          if (key !== undefined && cas !== undefined)
            found.set(key, { value: lines[i + 1] ?? '', cas })
        }
      }),
    )
    return found
  }

  /** Stores unless the key exists (live or not yet expired). */
  add(key: string, value: string, exptime: number): Promise<StoreReply> {
    return this.#store('add', key, value, exptime)
  }

  /** Stores unconditionally. */
  set(key: string, value: string, exptime: number): Promise<StoreReply> {
    return this.#store('set', key, value, exptime)
  }

  /** Stores only if the item has not changed since `gets` returned `cas`. */
  cas(key: string, value: string, exptime: number, cas: string): Promise<StoreReply> {
    return this.#store('cas', key, value, exptime, cas)
  }

  /** Deletes a key; true when it existed. */
  async delete(key: string): Promise<boolean> {
    const [line] = await this.#serverOf(key).send(`delete ${key}\r\n`, 'line')
    return reply(line, ['DELETED', 'NOT_FOUND']) === 'DELETED'
  }

  /**
   * Every key on every server, from `lru_crawler metadump` (Memcached 1.4.31+).
   * It walks the whole cache: for tools, never for requests.
   */
  async keys(): Promise<string[]> {
    const all: string[] = []
    for (const server of this.#servers) {
      // One slab class at a time: `metadump all` silently skips the classes that
      // memcached's background crawler is walking at that moment, while a dump of
      // one class answers BUSY then, and is retried.
      const stats = await server.send('stats slabs\r\n', 'lines')
      const classes = new Set(stats.map((line) => /^STAT (\d+):/.exec(line)?.[1]).filter(Boolean))
      for (const id of classes) {
        for (let attempt = 0; ; attempt++) {
          // memcached refuses a metadump pipelined behind other commands: a connection of its own.
          const dump = new Connection(server.host, server.port, server.timeout * 10)
          const lines = await dump
            .send(`lru_crawler metadump ${id}\r\n`, 'lines')
            .finally(() => dump.close())
          if (lines[0]?.startsWith('BUSY')) {
            if (attempt >= 250)
              throw new Error(`memcached ${server.name}: the LRU crawler stays busy`)
            await new Promise((resolve) => setTimeout(resolve, 20))
            continue
          }
          for (const line of lines) {
            const match = /^key=(\S+)/.exec(line)
            if (match?.[1]) all.push(decodeURIComponent(match[1]))
          }
          break
        }
      }
    }
    return all
  }

  /** Each server's `VERSION …` line, in the order of {@link servers}. */
  async version(): Promise<string[]> {
    return Promise.all(
      this.#servers.map(async (server) => (await server.send('version\r\n', 'line'))[0] ?? ''),
    )
  }

  /** Closes every connection; commands after this fail. */
  async close(): Promise<void> {
    for (const server of this.#servers) server.close()
  }

  async #store(
    command: string,
    key: string,
    value: string,
    exptime: number,
    cas?: string,
  ): Promise<StoreReply> {
    const bytes = Buffer.byteLength(value)
    const tail = cas === undefined ? '' : ` ${cas}`
    const [line] = await this.#serverOf(key).send(
      `${command} ${key} 0 ${exptime} ${bytes}${tail}\r\n${value}\r\n`,
      'line',
    )
    return reply(line, ['STORED', 'NOT_STORED', 'EXISTS', 'NOT_FOUND']) as StoreReply
  }

  #serverOf(key: string): Connection {
    const [only] = this.#servers
    if (only && this.#servers.length === 1) return only
    let best = only as Connection
    let bestScore = -1
    for (const server of this.#servers) {
      const score = createHash('sha1').update(`${server.name}\n${key}`).digest().readUInt32BE(0)
      if (score > bestScore) {
        best = server
        bestScore = score
      }
    }
    return best
  }
}

/** The reply line if it is one of `expected`; otherwise the server's error, thrown. */
function reply(line: string | undefined, expected: string[]): string {
  if (line !== undefined && expected.includes(line)) return line
  throw new Error(`memcached replied ${JSON.stringify(line ?? '')}`)
}

/** One server: a lazily opened, pipelined connection that reconnects on the next command. */
class Connection {
  readonly name: string
  readonly host: string
  readonly port: number
  readonly timeout: number
  #socket: Socket | undefined
  #buffer: Buffer = Buffer.alloc(0)
  /** Bytes of the data block being read (a VALUE's payload), or -1 while reading lines. */
  #awaitingData = -1
  readonly #queue: Pending[] = []
  #closed = false

  constructor(host: string, port: number, timeout: number) {
    this.host = host
    this.port = port
    this.timeout = timeout
    this.name = `${host}:${port}`
  }

  send(command: string, expect: Expect): Promise<string[]> {
    if (this.#closed) return Promise.reject(new StoreUnavailableError('memcached client closed'))
    const socket = this.#open()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => this.#fail(`memcached ${this.name} did not answer within ${this.timeout} ms`),
        this.timeout,
      )
      this.#queue.push({ expect, resolve, reject, timer, lines: [] })
      socket.write(command)
    })
  }

  close(): void {
    this.#closed = true
    this.#fail('memcached client closed')
  }

  #open(): Socket {
    if (this.#socket) return this.#socket
    const socket = connect({ host: this.host, port: this.port, noDelay: true })
    socket.setKeepAlive(true, 10_000)
    socket.on('data', (chunk: Buffer) => this.#read(chunk))
    socket.on('error', (error) => this.#fail(`memcached ${this.name}: ${error.message}`, error))
    socket.on('close', () => {
      if (this.#socket === socket) this.#fail(`memcached ${this.name}: connection closed`)
    })
    this.#socket = socket
    return socket
  }

  /** Fails every waiting command as an outage and drops the connection (a fresh one next time). */
  #fail(message: string, cause?: Error): void {
    debug('%s', message)
    const socket = this.#socket
    this.#socket = undefined
    this.#buffer = Buffer.alloc(0)
    this.#awaitingData = -1
    socket?.destroy()
    for (const pending of this.#queue.splice(0)) {
      clearTimeout(pending.timer)
      pending.reject(new StoreUnavailableError(message, cause ? { cause } : undefined))
    }
  }

  #read(chunk: Buffer): void {
    this.#buffer = this.#buffer.length ? Buffer.concat([this.#buffer, chunk]) : chunk
    for (;;) {
      const pending = this.#queue[0]
      if (!pending) {
        this.#buffer = Buffer.alloc(0)
        return
      }
      let line: string
      if (this.#awaitingData >= 0) {
        if (this.#buffer.length < this.#awaitingData + 2) return
        line = this.#buffer.toString('utf8', 0, this.#awaitingData)
        this.#buffer = this.#buffer.subarray(this.#awaitingData + 2)
        this.#awaitingData = -1
        pending.lines.push(line)
        continue
      }
      const end = this.#buffer.indexOf('\r\n')
      if (end < 0) return
      line = this.#buffer.toString('utf8', 0, end)
      this.#buffer = this.#buffer.subarray(end + 2)
      if (pending.expect === 'lines') {
        // A metadump ends its lines with a bare \n; only the final END has \r\n.
        const parts = line.split('\n')
        line = parts.pop() ?? ''
        pending.lines.push(...parts.filter(Boolean))
      }
      const error = /^(ERROR|CLIENT_ERROR|SERVER_ERROR)\b/.test(line)
      if (pending.expect === 'line' || error || line === 'END' || line.startsWith('BUSY')) {
        if (line !== 'END') pending.lines.push(line)
        this.#queue.shift()
        clearTimeout(pending.timer)
        if (error && pending.expect !== 'line')
          pending.reject(new Error(`memcached replied ${JSON.stringify(line)}`))
        else pending.resolve(pending.lines)
        continue
      }
      pending.lines.push(line)
      if (pending.expect === 'values' && line.startsWith('VALUE ')) {
        this.#awaitingData = Number(line.split(' ')[3])
      }
    }
  }
}
