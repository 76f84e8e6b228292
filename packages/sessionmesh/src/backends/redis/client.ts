import { debuglog } from 'node:util'
import { InvalidOptionError } from '../../core/errors.js'

const debug = debuglog('sessionmesh:redis')

/** The part of a node-redis (v5+) client (`createClient`) this backend uses. */
export interface NodeRedisLike {
  sendCommand(args: string[]): Promise<unknown>
  duplicate(): unknown
}

/** The part of an ioredis client (`new Redis(...)`, also with `sentinels`) this backend uses. */
export interface IoredisLike {
  call(command: string, ...args: string[]): Promise<unknown>
  duplicate(): unknown
}

/** The part of a node-redis (v5+) cluster client (`createCluster`) this backend uses. */
export interface NodeRedisClusterLike {
  sendCommand(
    firstKey: string | undefined,
    isReadonly: boolean | undefined,
    args: string[],
  ): Promise<unknown>
  readonly masters: ReadonlyArray<unknown>
  nodeClient(node: never): Promise<unknown>
}

/** The part of a node-redis (v5+) sentinel client (`createSentinel`) this backend uses. */
export interface NodeRedisSentinelLike {
  sendCommand(isReadonly: boolean | undefined, args: string[]): Promise<unknown>
  getMasterNode(): unknown
}

/** The part of an ioredis cluster client (`new Cluster(...)`) this backend uses. */
export interface IoredisClusterLike extends IoredisLike {
  readonly isCluster: boolean
  nodes(role?: 'master' | 'slave' | 'all'): unknown[]
}

/**
 * A connected node-redis (v5+) or ioredis client: a single server, a Redis
 * Cluster (`createCluster`, `new Cluster`) or a primary found through Sentinel
 * (`createSentinel`, `new Redis({ sentinels, name })`).
 */
export type RedisLike =
  | NodeRedisLike
  | IoredisLike
  | NodeRedisClusterLike
  | NodeRedisSentinelLike
  | IoredisClusterLike

/** One command, as the backend sends it: the first key (for a cluster's routing) and the arguments. */
export type Send = (key: string | undefined, args: string[]) => Promise<unknown>

/** A standalone connection that receives pub/sub messages; made and closed by the bus. */
export interface Subscriber {
  /** Subscribes to `channels`; `onMessage` gets every message on them. */
  subscribe(
    channels: string[],
    onMessage: (channel: string, message: string) => void,
  ): Promise<void>
  /** Called with a reason when the connection drops or fails. */
  onLost(listener: (reason: string) => void): void
  close(): Promise<void>
}

/** What the backend needs of a client, whatever its library and topology. */
export interface Connection {
  readonly library: 'node-redis' | 'ioredis'
  readonly topology: 'standalone' | 'sentinel' | 'cluster'
  readonly send: Send
  /** A way to send to each primary (every shard of a cluster; the one server otherwise). */
  primaries(): Promise<Array<(args: string[]) => Promise<unknown>>>
  /**
   * A fresh subscriber connection. `attempt` counts failed subscribers so far, so a
   * cluster can move to another node after one fails.
   */
  subscriber(attempt: number): Promise<Subscriber>
  /** Called after an outage error: lets a client that would not notice a failover by itself re-read the topology. */
  repair(): void
}

type Anyish = Record<string, unknown> & { [key: string]: unknown }

/**
 * Wraps whichever client was given. A client of an unknown shape is refused here,
 * at construction, with the reason: a wrong setup must not look like an outage.
 */
export function connect(client: unknown): Connection {
  const c = client as Anyish | undefined
  if (!c || typeof c !== 'object') throw misconfigured('no client was given')
  keepAlive(c)
  if (typeof c.call === 'function') {
    if (c.isCluster === true && typeof c.nodes === 'function') return ioredisCluster(c)
    return ioredisStandalone(c)
  }
  if (typeof c.sendCommand !== 'function') {
    throw misconfigured('the client has neither `call` (ioredis) nor `sendCommand` (node-redis)')
  }
  if (Array.isArray(c.masters) && typeof c.nodeClient === 'function') return nodeRedisCluster(c)
  if (typeof c.getMasterNode === 'function') return nodeRedisSentinel(c)
  if (typeof c.duplicate === 'function') return nodeRedisStandalone(c)
  throw misconfigured(
    'this node-redis client is of a kind the backend does not know (v5+ is needed)',
  )
}

function misconfigured(reason: string): InvalidOptionError {
  return new InvalidOptionError(
    `redisBackend needs \`client\`: a node-redis (v5+) or ioredis client, single, cluster or sentinel; ${reason}`,
  )
}

/**
 * node-redis emits 'error' on every connection failure, and an EventEmitter with no
 * 'error' listener ends the process: a Redis outage must be an outage, not a crash.
 * The application's own listeners still run; this one only logs at debug level.
 */
function keepAlive(client: Anyish): void {
  const on = client.on as ((event: string, listener: (error: unknown) => void) => void) | undefined
  if (typeof on !== 'function') return
  on.call(client, 'error', (error: unknown) => debug('client error: %s', describe(error)))
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

// ---- ioredis ---------------------------------------------------------------

interface IoredisClient {
  call(command: string, ...args: string[]): Promise<unknown>
  duplicate(): IoredisClient
  on(event: string, listener: (...args: never[]) => void): unknown
  subscribe(...channels: string[]): Promise<unknown>
  quit(): Promise<unknown>
  disconnect(): void
  status?: string
}

function ioredisStandalone(c: Anyish): Connection {
  const client = c as unknown as IoredisClient
  const send: Send = (_key, [command = '', ...rest]) => client.call(command, ...rest)
  return {
    library: 'ioredis',
    topology: (c.options as { sentinels?: unknown } | undefined)?.sentinels
      ? 'sentinel'
      : 'standalone',
    send,
    primaries: async () => [(args) => send(undefined, args)],
    subscriber: async () => ioredisSubscriber(client.duplicate()),
    repair() {},
  }
}

function ioredisCluster(c: Anyish): Connection {
  const cluster = c as unknown as IoredisClient & { nodes(role?: string): IoredisClient[] }
  return {
    library: 'ioredis',
    topology: 'cluster',
    // ioredis routes by the keys of the command (for EVALSHA, the declared KEYS).
    send: (_key, [command = '', ...rest]) => cluster.call(command, ...rest),
    primaries: async () =>
      cluster.nodes('master').map(
        (node) =>
          ([command = '', ...rest]: string[]) =>
            node.call(command, ...rest),
      ),
    // Pub/sub on a cluster reaches every node: subscribe on one node directly, and
    // on the next attempt on another, rather than through the cluster client.
    subscriber: async (attempt) => {
      const nodes = cluster.nodes('all')
      const node = nodes[attempt % Math.max(nodes.length, 1)]
      if (!node) throw new Error('the cluster client knows no node yet')
      return ioredisSubscriber(node.duplicate())
    },
    repair() {},
  }
}

function ioredisSubscriber(client: IoredisClient): Subscriber {
  const lost: Array<(reason: string) => void> = []
  const fire = (reason: string) => {
    for (const listener of lost) listener(reason)
  }
  client.on('error', (error: unknown) => fire(`error: ${describe(error)}`))
  client.on('close', () => fire('connection closed'))
  return {
    async subscribe(channels, onMessage) {
      client.on('message', (channel: string, message: string) => onMessage(channel, message))
      await client.subscribe(...channels)
    },
    onLost: (listener) => lost.push(listener),
    async close() {
      lost.length = 0
      client.disconnect()
    },
  }
}

// ---- node-redis ------------------------------------------------------------

interface NodeRedisClient {
  sendCommand(args: string[]): Promise<unknown>
  duplicate(overrides?: object): NodeRedisClient
  connect(): Promise<unknown>
  on(event: string, listener: (...args: never[]) => void): unknown
  subscribe(
    channels: string[],
    listener: (message: string, channel: string) => void,
  ): Promise<unknown>
  destroy(): void
  isOpen?: boolean
  options?: { socket?: object }
}

/**
 * A copy of `client` for subscribing. node-redis would reconnect by itself; the bus
 * decides when a subscriber is lost and replaces it, so this one must not retry.
 * (`socket` is replaced whole by duplicate(): keep its host and port.)
 */
function subscriberCopy(client: NodeRedisClient): NodeRedisClient {
  const socket = client.options?.socket ?? {}
  return client.duplicate({ socket: { ...socket, reconnectStrategy: false } })
}

function nodeRedisStandalone(c: Anyish): Connection {
  const client = c as unknown as NodeRedisClient
  const send: Send = (_key, args) => client.sendCommand(args)
  return {
    library: 'node-redis',
    topology: 'standalone',
    send,
    primaries: async () => [(args) => client.sendCommand(args)],
    subscriber: async () => nodeRedisSubscriber(subscriberCopy(client)),
    repair() {},
  }
}

function nodeRedisSentinel(c: Anyish): Connection {
  const sentinel = c as unknown as NodeRedisSentinelLike & {
    SUBSCRIBE(
      channels: string[],
      listener: (message: string, channel: string) => void,
    ): Promise<unknown>
    UNSUBSCRIBE(
      channels: string[],
      listener: (message: string, channel: string) => void,
    ): Promise<unknown>
  }
  const send: Send = (_key, args) => sentinel.sendCommand(false, args)
  return {
    library: 'node-redis',
    topology: 'sentinel',
    send,
    primaries: async () => [(args) => send(undefined, args)],
    // The sentinel client keeps its subscriptions on the current primary and moves
    // them after a failover; the bus's heartbeat tells whether that worked.
    subscriber: async () => {
      let subscribed:
        | { channels: string[]; listener: (message: string, channel: string) => void }
        | undefined
      return {
        async subscribe(channels, onMessage) {
          const listener = (message: string, channel: string) => onMessage(channel, message)
          await sentinel.SUBSCRIBE(channels, listener)
          subscribed = { channels, listener }
        },
        onLost() {},
        async close() {
          if (subscribed)
            await sentinel.UNSUBSCRIBE(subscribed.channels, subscribed.listener).catch(() => {})
          subscribed = undefined
        },
      }
    },
    repair() {},
  }
}

interface NodeRedisCluster {
  sendCommand(
    firstKey: string | undefined,
    isReadonly: boolean | undefined,
    args: string[],
  ): Promise<unknown>
  masters: Array<{ client?: { isReady?: boolean } }>
  replicas: Array<{ client?: { isReady?: boolean } }>
  nodeClient(node: unknown): Promise<NodeRedisClient>
  _slots?: { rediscover?(startWith: unknown): Promise<void> }
}

function nodeRedisCluster(c: Anyish): Connection {
  const cluster = c as unknown as NodeRedisCluster & {
    on(event: string, listener: () => void): unknown
  }
  let repairing = 0
  // Commands to a dead primary wait in its client's queue rather than fail, so do
  // not wait for a failed command to ask for a refresh: a node's client losing its
  // connection is the signal.
  const repairSoon = () => connection.repair()
  cluster.on('node-error', repairSoon)
  cluster.on('node-reconnecting', repairSoon)
  const connection: Connection = {
    library: 'node-redis',
    topology: 'cluster',
    send: retryTryAgain((key, args) => cluster.sendCommand(key, false, args)),
    primaries: async () =>
      Promise.all(
        cluster.masters.map(async (node) => {
          const client = await cluster.nodeClient(node)
          return (args: string[]) => client.sendCommand(args)
        }),
      ),
    subscriber: async (attempt) => {
      const nodes = [...cluster.masters, ...cluster.replicas]
      const node = nodes[attempt % Math.max(nodes.length, 1)]
      if (!node) throw new Error('the cluster client knows no node yet')
      const client = await cluster.nodeClient(node)
      return nodeRedisSubscriber(subscriberCopy(client))
    },
    // node-redis re-reads the slot map only after a MOVED or ASK reply, and a dead
    // primary sends neither: after a failover, commands for its slots would keep
    // going to it. Ask it to re-read the map, at most once a second.
    repair() {
      const now = Date.now()
      const rediscover = cluster._slots?.rediscover
      if (!rediscover || now - repairing < 1_000) return
      repairing = now
      const nodes = [...cluster.masters, ...cluster.replicas]
      const start = nodes.find((node) => node.client?.isReady)?.client
      if (!start) return
      rediscover.call(cluster._slots, start).catch((error: unknown) => {
        debug('cluster topology refresh failed: %s', describe(error))
      })
    },
  }
  return connection
}

/** How often, and how far apart, a command answered TRYAGAIN is sent again. */
const TRY_AGAIN = { times: 10, everyMs: 20 }

/**
 * While a slot migrates, a script whose keys are split between the two nodes is
 * answered TRYAGAIN. ioredis sends it again by itself; node-redis does not, so
 * do it here (the store's timeout still bounds the whole call).
 */
function retryTryAgain(send: Send): Send {
  return async (key, args) => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await send(key, args)
      } catch (error) {
        if (
          attempt >= TRY_AGAIN.times ||
          !(error instanceof Error) ||
          !/^TRYAGAIN\b/.test(error.message)
        ) {
          throw error
        }
        await new Promise((resolve) => setTimeout(resolve, TRY_AGAIN.everyMs))
      }
    }
  }
}

function nodeRedisSubscriber(client: NodeRedisClient): Subscriber {
  const lost: Array<(reason: string) => void> = []
  const fire = (reason: string) => {
    for (const listener of lost) listener(reason)
  }
  client.on('error', (error: unknown) => fire(`error: ${describe(error)}`))
  client.on('end', () => fire('connection ended'))
  return {
    async subscribe(channels, onMessage) {
      await client.connect()
      await client.subscribe(channels, (message, channel) => onMessage(channel, message))
    },
    onLost: (listener) => lost.push(listener),
    async close() {
      lost.length = 0
      // destroy() throws on a client that already closed itself (after a failed connect).
      if (client.isOpen !== false) client.destroy()
    },
  }
}
