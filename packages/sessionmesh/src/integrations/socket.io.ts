import type { IncomingMessage, ServerResponse } from 'node:http'
import { debuglog } from 'node:util'
import type { Namespace, Server, Socket } from 'socket.io'
import type { BusState, SessionEvent } from '../core/backend.js'
import type { SessionData } from '../core/codec.js'
import { InvalidOptionError, redactSid } from '../core/errors.js'
import { engineOf, passportUser, type SessionStore } from '../store.js'

const debug = debuglog('sessionmesh:socket.io')

/**
 * A connect/express middleware, as `express-session` or `sessionmesh/express` returns
 * it. Declared as a method so that middlewares typed for Express's richer request
 * type are accepted too.
 */
export type SessionMiddleware = {
  handle(req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void): void
}['handle']

/** Options of {@link shareSession}. */
export interface ShareSessionOptions {
  /**
   * The session middleware the HTTP app uses (same cookie name and secret). With
   * `session` from `sessionmesh/express` (and a `secret` option), a client may
   * also connect with `auth: { session: token }`, the token being what the
   * middleware's `header` option sends (or the cookie's value).
   */
  session: SessionMiddleware
  /**
   * The store behind that middleware. When its backend publishes session events,
   * a revocation closes sockets on every node at once; otherwise each node
   * re-reads its sessions every `revocationCheckInterval`.
   */
  store: SessionStore
  /**
   * Refuse sockets whose session has no user (`connect_error` with message `unauthorized`).
   * @default true
   */
  requireLogin?: boolean
  /**
   * The user a session belongs to; must agree with the store's `userId`.
   * @default (session) => session.passport?.user, when it is a string or a number
   */
  userId?: (session: SessionData) => string | undefined
  /**
   * How often sessions with live sockets are checked for expiry, in ms. A session
   * is read only when its known expiry has passed.
   * @default 500
   */
  expiryCheckInterval?: number
  /**
   * For a backend that publishes no session events (no `subscribe`: Memcached,
   * MySQL): how often every session with sockets on this node is read again, in ms.
   * A revocation then closes its sockets within this interval instead of at once,
   * at the cost of one read per such session per interval on each node. Unused
   * when the backend publishes events.
   * @default 2000
   */
  revocationCheckInterval?: number
}

/**
 * Why {@link shareSession} closed a socket; sent to the client as `session:ended`
 * before the disconnect. `revoked`: destroyed (logout, revocation); `expired`;
 * `logged-out`: the session lost its user; `ended`: it was gone when looked at
 * again after the event bus had been down (destroyed meanwhile, or lost with
 * the store's data).
 */
export type SessionEndReason = 'revoked' | 'expired' | 'logged-out' | 'ended'

/** What {@link shareSession} returns. */
export interface SessionBinding {
  /** Stops listening to session events (sockets stay open). */
  close(): Promise<void>
}

/** Per-socket data the binding keeps in `socket.data.sessionmesh`. */
interface Bound {
  sid: string
  userId: string | undefined
}

/** Per session with sockets on this node: the last view read and when to look again. */
interface Watched {
  view: SessionData
  checkAt: number
}

/** Room of every socket of one session. */
export const sessionRoom = (sid: string): string => `sessionmesh:session:${sid}`
/** Room of every socket of one user, on every node (with a cluster adapter). */
export const userRoom = (userId: string): string => `sessionmesh:user:${userId}`

const bindings = new WeakMap<
  Namespace,
  { store: SessionStore; userId: ShareSessionOptions['userId'] }
>()

/**
 * Shares the HTTP session with socket.io on the main namespace. The session
 * middleware runs on the handshake only; sockets without a logged-in session are
 * refused; each socket joins {@link sessionRoom} and {@link userRoom}; a session
 * destroyed, revoked, logged out or expired on any node closes its sockets on every
 * node, pushed by the store's backend events (or, for a backend without them,
 * found by a re-read every `revocationCheckInterval`); activity on a socket keeps
 * its session alive (throttled like lazy touch).
 *
 * Handlers read the current session with {@link readSession} and change it with
 * {@link updateSession}, which writes a delta like an HTTP request does.
 *
 * @example
 * const io = new Server(httpServer)
 * await shareSession(io, { session: sessionMiddleware, store })
 * io.on('connection', async (socket) => {
 *   const session = await readSession(socket)
 * })
 */
export async function shareSession(
  io: Server,
  options: ShareSessionOptions,
): Promise<SessionBinding> {
  const { store, session } = options
  const requireLogin = options.requireLogin ?? true
  const userIdOf = options.userId ?? passportUser
  const subscribe = store.backend.subscribe?.bind(store.backend)
  const revocationCheckInterval = options.revocationCheckInterval ?? 2000
  if (!(revocationCheckInterval > 0)) {
    throw new InvalidOptionError(
      `revocationCheckInterval must be a positive number of ms, not ${revocationCheckInterval}`,
    )
  }
  const namespace = io.of('/')
  bindings.set(namespace, { store, userId: userIdOf })
  const watched = new Map<string, Watched>()
  /** Sessions a check could not read (store unavailable), with the reason to use if they are gone. */
  const recheck = new Map<string, SessionEndReason>()

  // The engine sees every HTTP request of every transport; only the handshake
  // (no engine.io `sid` yet) needs the session.
  io.engine.use(
    (
      req: IncomingMessage & { _query?: Record<string, string> },
      res: ServerResponse,
      next: (error?: unknown) => void,
    ) => {
      if (req._query?.sid === undefined) session(req, res, next)
      else next()
    },
  )

  const tokenId = (session as { sessionId?: (token: unknown) => string | undefined }).sessionId
  namespace.use((socket, next) => {
    const bind = (sid: string | undefined, view: SessionData | null | undefined) => {
      const userId = view ? userIdOf(view) : undefined
      if (!sid || (requireLogin && userId === undefined)) return next(new Error('unauthorized'))
      const bound: Bound = { sid, userId }
      socket.data.sessionmesh = bound
      next()
    }
    // A client without cookies (a native app, a header-session API client) hands
    // over the token `sessionmesh/express` sent it in its `header`.
    const token = (socket.handshake.auth as { session?: unknown } | undefined)?.session
    if (token !== undefined) {
      const sid = typeof tokenId === 'function' ? tokenId(token) : undefined
      if (sid === undefined) return next(new Error('unauthorized'))
      store.get(sid).then(
        (view) => bind(view ? sid : undefined, view),
        (error: unknown) => {
          debug('handshake: cannot read session %s: %s', redactSid(sid), error)
          next(new Error('session store unavailable'))
        },
      )
      return
    }
    const req = socket.request as IncomingMessage & { session?: SessionData; sessionID?: string }
    bind(req.sessionID, req.session)
  })

  namespace.on('connection', (socket) => {
    const { sid, userId } = boundOf(socket)
    socket.join(sessionRoom(sid))
    if (userId !== undefined) socket.join(userRoom(userId))
    void watch(sid)
    // Any event from the client counts as activity: extend the session's expiry,
    // at most as often as the store's lazy touch allows. The id is read each
    // time: a rotation moves the socket to the new one.
    socket.use((_packet, next) => {
      const current = boundOf(socket).sid
      const entry = watched.get(current)
      if (entry)
        void store.touch(current, entry.view).catch((error) => debug('touch failed: %s', error))
      next()
    })
    socket.on('disconnect', () => {
      const current = boundOf(socket).sid
      if (!namespace.adapter.rooms.get(sessionRoom(current))?.size) watched.delete(current)
    })
  })

  const rotatedId = (session as { rotatedId?: (sid: string) => string | undefined }).rotatedId
  /**
   * A session gone from under its sockets may have been rotated (`req.session.rotate()`
   * in `sessionmesh/express`): then its sockets move to the new id, if it has the
   * same user, instead of being closed. True when they moved.
   */
  async function follow(sid: string): Promise<boolean> {
    const to = typeof rotatedId === 'function' ? rotatedId(sid) : undefined
    if (to === undefined) return false
    let view: SessionData | null
    try {
      view = await store.get(to)
    } catch {
      return false
    }
    if (!view) return false
    const userId = userIdOf(view)
    const sockets = await namespace.in(sessionRoom(sid)).local.fetchSockets()
    if (sockets.some((socket) => (socket.data.sessionmesh as Bound | undefined)?.userId !== userId))
      return false
    for (const socket of sockets) {
      socket.data.sessionmesh = { sid: to, userId } satisfies Bound
      socket.join(sessionRoom(to))
      socket.leave(sessionRoom(sid))
    }
    watched.delete(sid)
    recheck.delete(sid)
    debug('session %s rotated: its sockets follow', redactSid(sid))
    void watch(to)
    return true
  }

  /** The session is gone: its sockets follow a rotation, or are closed. */
  async function gone(sid: string, reason: SessionEndReason): Promise<void> {
    if (!(await follow(sid))) end(sid, reason)
  }

  /** Reads the session now and schedules the next expiry check, or ends it. */
  async function watch(sid: string, missing: SessionEndReason = 'revoked'): Promise<void> {
    let view: SessionData | null
    try {
      view = await store.get(sid)
    } catch (error) {
      // Store unavailable: keep the sockets, and look again at the next tick.
      debug('cannot check session %s: %s', redactSid(sid), error)
      recheck.set(sid, missing)
      return
    }
    recheck.delete(sid)
    if (!namespace.adapter.rooms.get(sessionRoom(sid))?.size) {
      watched.delete(sid)
      recheck.delete(sid)
      return
    }
    if (!view) {
      // Gone before its known expiry: destroyed (the event may still be on its way).
      const known = watched.get(sid)
      if (known && Date.now() >= known.checkAt) return end(sid, 'expired')
      return gone(sid, missing)
    }
    const sockets = await namespace.in(sessionRoom(sid)).local.fetchSockets()
    const userId = userIdOf(view)
    if (requireLogin && userId === undefined) return end(sid, 'logged-out')
    if (
      sockets.some((socket) => (socket.data.sessionmesh as Bound | undefined)?.userId !== userId)
    ) {
      return end(sid, 'logged-out')
    }
    watched.set(sid, { view, checkAt: expiryOf(view) })
  }

  function end(sid: string, reason: SessionEndReason): void {
    watched.delete(sid)
    const engine = engineOf(store)
    if (reason === 'expired') engine?.lifecycle.destroyed(sid, 'expired')
    const count = namespace.adapter.rooms.get(sessionRoom(sid))?.size ?? 0
    if (count > 0) engine?.metrics?.socketsClosed(reason, count)
    debug('closing the sockets of session %s: %s', redactSid(sid), reason)
    const local = namespace.local.in(sessionRoom(sid))
    local.emit('session:ended', { reason })
    local.disconnectSockets(true)
  }

  function onEvent(event: SessionEvent): void {
    if (!namespace.adapter.rooms.get(sessionRoom(event.sid))?.size) return
    if (event.type === 'destroyed') void gone(event.sid, 'revoked')
    else void watch(event.sid)
  }

  // Destroys may have been missed while the bus was down: look at every session again.
  const onGap = (state: BusState) => {
    if (state === 'restored') for (const sid of watched.keys()) void watch(sid, 'ended')
  }
  const unsubscribe = subscribe ? await subscribe(onEvent, onGap) : async () => {}
  const interval = options.expiryCheckInterval ?? 500
  const timer = setInterval(() => {
    const now = Date.now()
    for (const [sid, entry] of watched)
      if (entry.checkAt <= now && !recheck.has(sid)) void watch(sid)
    for (const [sid, missing] of recheck) void watch(sid, missing)
  }, interval)
  timer.unref()
  // No events to push a revocation: look at every watched session again, a bounded delay.
  const poller = subscribe
    ? undefined
    : setInterval(() => {
        for (const sid of watched.keys()) if (!recheck.has(sid)) void watch(sid)
      }, revocationCheckInterval)
  poller?.unref()

  return {
    async close() {
      clearInterval(timer)
      clearInterval(poller)
      await unsubscribe()
    },
  }
}

/** The current session of a socket's user, read through the store (not the handshake's copy). */
export async function readSession(socket: Socket): Promise<SessionData | null> {
  const { store } = bindingOf(socket)
  return store.get(boundOf(socket).sid)
}

/**
 * Changes a socket's session: reads it, lets `change` modify it, and saves only the
 * top-level keys that changed. Resolves to `false` if the session no longer exists.
 */
export async function updateSession(
  socket: Socket,
  change: (session: SessionData) => void | Promise<void>,
): Promise<boolean> {
  const { store } = bindingOf(socket)
  const { sid } = boundOf(socket)
  const session = await store.get(sid)
  if (!session) return false
  await change(session)
  await store.set(sid, session)
  return true
}

/** The user id of a socket accepted by {@link shareSession}. */
export function socketUser(socket: Socket): string | undefined {
  return boundOf(socket).userId
}

function boundOf(socket: Socket): Bound {
  const bound = socket.data.sessionmesh as Bound | undefined
  if (!bound) throw new InvalidOptionError('this socket was not accepted by shareSession()')
  return bound
}

function bindingOf(socket: Socket) {
  const binding = bindings.get(socket.nsp)
  if (!binding)
    throw new InvalidOptionError('shareSession() was not called on this socket’s server')
  return binding
}

/** When to look at a session again: its cookie's expiry, or in a minute when it has none. */
function expiryOf(view: SessionData): number {
  const expires = (view.cookie as { expires?: unknown } | undefined)?.expires
  const at = typeof expires === 'string' ? Date.parse(expires) : Number.NaN
  return Number.isFinite(at) ? at : Date.now() + 60_000
}

/**
 * Makes a Redis client safe to hand to a socket.io Redis adapter during an outage.
 * The adapters publish heartbeats with no rejection handler, so with Redis down
 * each one becomes an unhandled rejection, which ends a Node.js process by
 * default. The client's publish methods are wrapped to log such failures
 * (`NODE_DEBUG=sessionmesh:socket.io`) and answer 0 receivers instead.
 *
 * @example
 * io.adapter(createAdapter(guardPublish(client.duplicate())))
 */
export function guardPublish<C extends object>(client: C): C {
  for (const name of ['publish', 'sPublish', 'spublish', 'PUBLISH', 'SPUBLISH']) {
    const original: unknown = Reflect.get(client, name)
    if (typeof original !== 'function') continue
    const guarded = (...args: unknown[]) =>
      Promise.resolve(original.apply(client, args)).catch((error: unknown) => {
        debug('adapter publish failed: %s', error)
        return 0
      })
    Object.defineProperty(client, name, { value: guarded, configurable: true, writable: true })
  }
  return client
}
