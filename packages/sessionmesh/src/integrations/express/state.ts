import { ServerResponse } from 'node:http'
import type { TLSSocket } from 'node:tls'
import { encodeSession } from '../../core/codec.js'
import type { Loaded, Snapshot } from '../../core/engine/snapshot.js'
import { debug } from '../../core/telemetry.js'
import { deviceOf } from '../../store.js'
import { appendSetCookie, expiredCookie, serializeCookie } from './cookie.js'
import { sendToken } from './header.js'
import { Session, SessionCookie, type SessionHost } from './objects.js'
import type { Config, RequestCookies, SessionRequest } from './options.js'
import { checkRotated, notCurrent, planRotation } from './rotate.js'

type Fields = Record<string, string>
type End = ServerResponse['end']

/** Where a hooked response keeps its request's state. */
const STATE = Symbol('sessionmesh.request')
type Hooked = ServerResponse & { [STATE]?: RequestState }
type Method = (this: ServerResponse, ...args: unknown[]) => ServerResponse

/**
 * Node's own `writeHead` and `end`, as they were when the first request came,
 * and the hooks put in their place on `ServerResponse.prototype`.
 */
interface PrototypeHooks {
  writeHead: Method
  end: Method
  hookedWriteHead: Method
  hookedEnd: Method
}
let prototypeHooks: PrototypeHooks | undefined

/**
 * One request's session bookkeeping: what was loaded, what was saved, and what
 * the response must carry. It wraps `res.writeHead` (to add cookies as headers
 * leave) and `res.end` (to save before the response starts).
 */
export class RequestState implements SessionHost {
  readonly cookieId: string | undefined
  readonly #c: Config
  readonly #cookies: RequestCookies
  readonly #req: SessionRequest
  readonly #res: ServerResponse
  readonly #next: (error?: unknown) => void
  // What each session object of this request was loaded or last saved as. A
  // request nearly always holds one session object, so it lives in two fields; a
  // Map is made only when a second appears (regenerate). A WeakMap per request
  // would cost more to create and to collect than the rest of the state.
  #snapshotOwner: Session | undefined
  #snapshot: Snapshot | undefined
  #moreSnapshots: Map<Session, Snapshot> | undefined
  /** The id and fields the request started with: what "modified" compares to. */
  #originalId: string | undefined
  #baseFields: Fields | undefined
  /** The fields last saved (or loaded, unless `resave`): what "saved" compares to. */
  #savedFields: Fields | undefined
  /** The id {@link #savedFields} were saved under. */
  #savedId: string | undefined
  /** The session this request was served in the old id's grace window after a rotation: its id is not sent. */
  #forwardedId: string | undefined
  #endFields: Fields | undefined
  #touched = false
  #ending = false
  /** The save failed and the error handler answers: its end() is the response's. */
  #answering = false
  #headersDone = false
  /** A save failed or was refused: send no session cookie. */
  #failed = false
  /** An explicit `save()` failed: the application was told, and answers; the end does not save again. */
  #saveFailed: Session | undefined
  /** Fail-open outage: an anonymous session that is never saved nor sent. */
  #degraded = false
  #destroyedId: string | undefined
  /** The version cookie to send (near cache only). */
  #version: string | undefined
  #unreported: unknown
  /** The `writeHead` and `end` the hooks call on. */
  readonly #writeHead: Method
  readonly #end: Method
  /** Hooked by the hooks on ServerResponse.prototype (else by methods of the response's own). */
  #onPrototype = false

  constructor(
    config: Config,
    cookies: RequestCookies,
    req: SessionRequest,
    res: ServerResponse,
    next: (error?: unknown) => void,
    cookieId: string | undefined,
  ) {
    this.#c = config
    this.#cookies = cookies
    this.#req = req
    this.#res = res
    this.#next = next
    this.cookieId = cookieId
    // `writeHead` and `end` are hooked once per process, on ServerResponse.prototype,
    // where every response finds them: giving each response methods of its own
    // makes Node's HTTP code slower for it (9% of a request's time, measured). A
    // response they do not reach (not a ServerResponse, or whose methods another
    // middleware replaced already) gets its own, the same two for every response.
    ;(res as Hooked)[STATE] = this
    prototypeHooks ??= RequestState.#hookPrototype()
    const hooks = prototypeHooks
    if (res.writeHead === hooks.hookedWriteHead && res.end === hooks.hookedEnd) {
      this.#onPrototype = true
      this.#writeHead = hooks.writeHead
      this.#end = hooks.end
    } else {
      this.#writeHead = res.writeHead as Method
      this.#end = res.end as Method
      res.writeHead = RequestState.#ownWriteHead as ServerResponse['writeHead']
      res.end = RequestState.#ownEnd as End
    }
  }

  /** Puts the hooks on ServerResponse.prototype: for a response without a session, they only pass the call on. */
  static #hookPrototype(): PrototypeHooks {
    const proto = ServerResponse.prototype as unknown as Record<'writeHead' | 'end', Method>
    const writeHead = proto.writeHead
    const end = proto.end
    const hookedWriteHead = function (this: Hooked): ServerResponse {
      const state = this[STATE]
      // biome-ignore lint/complexity/useOptionalChain: TypeScript allows no `?.` before a private name
      if (state !== undefined && state.#onPrototype) state.#onHeaders()
      // biome-ignore lint/complexity/noArguments: passed on as it came, no array made
      return writeHead.apply(this, arguments as unknown as unknown[])
    }
    const hookedEnd = function (this: Hooked): ServerResponse {
      const state = this[STATE]
      // biome-ignore lint/complexity/noArguments: passed on as it came, no array made
      const args = arguments as unknown as unknown[]
      // biome-ignore lint/complexity/useOptionalChain: TypeScript allows no `?.` before a private name
      if (state !== undefined && state.#onPrototype) return state.#onEnd(end, args)
      return end.apply(this, args)
    }
    proto.writeHead = hookedWriteHead
    proto.end = hookedEnd
    return { writeHead, end, hookedWriteHead, hookedEnd }
  }

  // Functions, not static methods: `this` is the response they are called on.
  static readonly #ownWriteHead = function (this: Hooked, ...args: unknown[]): ServerResponse {
    const state = this[STATE] as RequestState
    state.#onHeaders()
    return state.#writeHead.apply(this, args)
  }

  static readonly #ownEnd = function (this: Hooked, ...args: unknown[]): ServerResponse {
    const state = this[STATE] as RequestState
    return state.#onEnd(state.#end, args)
  }

  /** A new, empty session with a new id. */
  generate(initial = true): void {
    const req = this.#req
    const id = this.#c.genid(req)
    req.sessionID = id
    const cookie = this.#newCookie()
    const session = new Session(this, req, id, cookie)
    req.session = session
    this.#savedFields = undefined
    this.#savedId = undefined
    if (initial) {
      this.#originalId = id
      this.#baseFields = encodeSession(session)
    }
  }

  #newCookie(): SessionCookie {
    const options = this.#cookies.options
    const cookie = new SessionCookie(options)
    if (options.secure === 'auto' || options.sameSite === 'auto') {
      const secure = this.#isSecure()
      if (options.secure === 'auto') cookie.secure = secure
      if (options.sameSite === 'auto') cookie.sameSite = secure ? 'none' : 'lax'
    }
    return cookie
  }

  /** The backend is down and the policy is fail-open: run as anonymous, write nothing. */
  degrade(): void {
    this.generate()
    this.#degraded = true
  }

  /** `req.session` from a loaded session. */
  inflate(loaded: Loaded, presented: string | undefined): void {
    const session = this.#materialize(loaded)
    this.#originalId = session.id
    this.#baseFields = loaded.snapshot.fields
    this.#savedFields = this.#c.resave ? undefined : loaded.snapshot.fields
    this.#savedId = session.id
    const version = loaded.snapshot.version
    // A client holding an older version would miss the near cache on every request.
    if (this.#c.near && version !== undefined && version !== presented) this.#version = version
  }

  async save(session: Session): Promise<void> {
    try {
      await this.#save(session, encodeSession(session))
    } catch (error) {
      this.#saveFailed = session
      throw error
    }
  }

  async reload(session: Session): Promise<void> {
    const loaded = await this.#c.source.load(session.id, undefined, () => {})
    if (!loaded) throw new Error('failed to load session')
    this.#materialize(loaded)
  }

  async regenerate(session: Session): Promise<void> {
    // A session never stored (no snapshot) has nothing to destroy: writing a
    // tombstone for it would be a write any anonymous request can cause.
    if (this.#snapshotOf(session)) await this.#c.source.destroy(session.id, 'regenerated')
    this.#destroyedId = session.id
    this.generate(false)
  }

  /**
   * The session the old id (presented by this request) was rotated to, within the
   * grace window: served, written to if the request changes it, but never sent.
   */
  forwarded(loaded: Loaded): void {
    this.inflate(loaded, undefined)
    this.#forwardedId = loaded.snapshot.rotatedUntil === undefined ? undefined : this.#req.sessionID
  }

  async rotate(session: Session): Promise<void> {
    const req = this.#req
    if (req.session !== session) throw notCurrent()
    const oldId = session.id
    const snapshot = this.#snapshotOf(session)
    const plan = planRotation(this.#c, this.#cookies.signer, req, session, snapshot)
    // The cookie object moves across: the old Session is dead from here on.
    const fresh = new Session(this, req, plan.newId, session.cookie)
    for (const key in session) if (!(key in fresh)) fresh[key] = session[key]
    if (snapshot) {
      const fields = encodeSession(fresh)
      // The new session first: a failure here leaves the old one as it was.
      const saved = checkRotated(
        await this.#c.source.save(plan.newId, fresh, undefined, plan.device, plan.marked(fields)),
      )
      this.#setSnapshot(fresh, saved)
      this.#savedFields = fields
      this.#savedId = plan.newId
      if (this.#c.near) this.#version = saved.version
      req.sessionID = plan.newId
      req.session = fresh
      this.#destroyedId = oldId
      await this.#c.source.destroy(oldId, 'regenerated')
    } else {
      // Never stored: only the id changes, and what "modified" means does not
      // (an untouched anonymous session that rotates is still not saved).
      if (this.#originalId === oldId) this.#originalId = plan.newId
      req.sessionID = plan.newId
      req.session = fresh
    }
  }

  async destroy(session: Session): Promise<void> {
    const req = this.#req
    if (req.session === session) delete req.session
    if (this.#snapshotOf(session)) await this.#c.source.destroy(session.id)
    this.#destroyedId = session.id
  }

  unreported(error: unknown): void {
    if (this.#ending) debug('a save without a callback failed after the response ended: %s', error)
    else this.#unreported ??= error
  }

  #materialize({ data, snapshot }: Loaded): Session {
    const req = this.#req
    const id = req.sessionID as string
    // A record another store wrote without a cookie gets a new one, as configured.
    const stored = data.cookie
    const cookie =
      typeof stored === 'object' && stored !== null
        ? SessionCookie.from(
            stored as Record<string, unknown>,
            snapshot.fields.cookie,
            snapshot.meta.expiresAt,
          )
        : this.#newCookie()
    const session = new Session(this, req, id, cookie)
    for (const key in data) {
      if (!(key in session)) session[key] = data[key]
    }
    req.session = session
    this.#setSnapshot(session, snapshot)
    return session
  }

  #snapshotOf(session: Session): Snapshot | undefined {
    return session === this.#snapshotOwner ? this.#snapshot : this.#moreSnapshots?.get(session)
  }

  #setSnapshot(session: Session, snapshot: Snapshot): void {
    if (this.#snapshotOwner === undefined || this.#snapshotOwner === session) {
      this.#snapshotOwner = session
      this.#snapshot = snapshot
    } else {
      this.#moreSnapshots ??= new Map()
      this.#moreSnapshots.set(session, snapshot)
    }
  }

  async #save(session: Session, fields: Fields): Promise<void> {
    const snapshot = this.#snapshotOf(session)
    const device = snapshot ? {} : deviceOf(this.#req)
    const saved = await this.#c.source.save(session.id, session, snapshot, device, fields)
    if (saved) {
      this.#setSnapshot(session, saved)
      if (session === this.#req.session) {
        this.#savedFields = fields
        this.#savedId = session.id
      }
      if (this.#c.near) this.#version = saved.version
    } else {
      // Refused (destroyed meanwhile) or skipped (fail-open outage): do not hand
      // the client a cookie for a session that is not stored.
      if (session === this.#req.session) this.#failed = true
    }
  }

  #onEnd(end: Method, args: unknown[]): ServerResponse {
    const res = this.#res
    const finish = () => end.apply(res, args)
    // A second end() is ignored, as express-session ignores it: while the save is
    // pending, passing it on would end the response without the first call's body.
    if (this.#ending) return this.#answering ? finish() : res
    this.#ending = true
    let work: Promise<void> | undefined
    try {
      work = this.#finish()
    } catch (error) {
      work = Promise.reject(error)
    }
    if (!work) return finish()
    work.then(finish, (error: unknown) => {
      this.#failed = true
      this.#answering = true
      // Before the headers: the application's error handler answers instead.
      // After (a streamed response): Express's final handler closes the connection.
      this.#next(error)
      if (res.headersSent && !res.writableEnded && !res.destroyed) finish()
    })
    return res
  }

  /** What the end of the request must do; a Promise when it must wait for the backend. */
  #finish(): Promise<void> | undefined {
    if (this.#unreported !== undefined) return Promise.reject(this.#unreported)
    const req = this.#req
    const session = req.session
    if (!(session instanceof Session)) {
      const sid = req.sessionID
      const stored = this.#snapshotOwner?.id === sid
      if (
        session == null &&
        this.#c.unsetDestroy &&
        typeof sid === 'string' &&
        stored &&
        !this.#degraded
      ) {
        this.#destroyedId = sid
        const destroyed = this.#c.source.destroy(sid)
        // A foreign store's failure goes to next() after the response, as under express-session.
        if (!this.#c.foreign) return destroyed
        return destroyed.catch((error: unknown) => {
          // The session is still stored: the browser keeps its cookie.
          this.#destroyedId = undefined
          this.#passOn(error)
        })
      }
      return undefined
    }
    // Other middleware replaced the id with something that is not one: nothing to save.
    if (this.#degraded || typeof req.sessionID !== 'string') return undefined
    // Saving again would most likely fail again, and replace the application's
    // own answer to the first failure (its error handler's) with Express's.
    if (this.#saveFailed === session) {
      this.#failed = true
      return undefined
    }
    this.#touchCookie(session)
    const fields = encodeSession(session)
    this.#endFields = fields
    if (this.#shouldSave(session, fields)) return this.#save(session, fields)
    if (this.cookieId === session.id) {
      const snapshot = this.#snapshotOf(session)
      if (this.#c.source.touchDue(session, snapshot)) {
        // The response does not wait for a touch, and a failed touch fails nothing.
        this.#c.source.touch(session.id, session, snapshot).catch((error: unknown) => {
          // A foreign store's touch error is the application's to see, as under
          // express-session; a sessionmesh backend's only means the expiry moves later.
          if (this.#c.foreign) this.#passOn(error)
          else debug('touch failed: %s', error)
        })
      }
    }
    return undefined
  }

  /** An error found once the response is under way: next() gets it on the next turn. */
  #passOn(error: unknown): void {
    setImmediate(() => this.#next(error))
  }

  #touchCookie(session: Session): void {
    if (this.#touched) return
    this.#touched = true
    session.resetMaxAge()
  }

  #isModified(session: Session, fields: Fields): boolean {
    return this.#originalId !== session.id || !sameFields(fields, this.#baseFields)
  }

  #shouldSave(session: Session, fields: Fields): boolean {
    if (!this.#c.saveUninitialized && !this.#savedFields && this.cookieId !== session.id) {
      return this.#isModified(session, fields)
    }
    const saved =
      this.#savedFields !== undefined &&
      this.#savedId === session.id &&
      sameFields(fields, this.#savedFields)
    return !saved
  }

  #shouldSetCookie(session: Session): boolean {
    const modified = () => this.#isModified(session, this.#endFields ?? encodeSession(session))
    if (this.cookieId !== session.id) return this.#c.saveUninitialized || modified()
    return this.#c.rolling || (session.cookie.expires != null && modified())
  }

  #onHeaders(): void {
    if (this.#headersDone) return
    this.#headersDone = true
    const c = this.#c
    const session = this.#req.session
    const cookies: string[] = []
    let token: string | undefined
    if (!(session instanceof Session)) {
      if (this.#destroyedId !== undefined && this.#destroyedId === this.cookieId) {
        const options = this.#cookies.options
        cookies.push(expiredCookie(c.name, options))
        if (c.near) cookies.push(expiredCookie(c.versionName, options))
        token = ''
      }
    } else if (
      !this.#failed &&
      !this.#degraded &&
      typeof this.#req.sessionID === 'string' &&
      session.id !== this.#forwardedId
    ) {
      this.#touchCookie(session)
      const cookie = session.cookie
      const allowed = !cookie.secure || this.#isSecure()
      try {
        if (allowed && this.#shouldSetCookie(session)) {
          const value = this.#cookies.signer.value(session.id)
          cookies.push(cookie.serialize(c.name, value))
          token = value
        }
        if (allowed && this.#version !== undefined) {
          cookies.push(serializeCookie(c.versionName, this.#version, cookie.data))
        }
      } catch (error) {
        // An invalid attribute the application set (an `expires` that is no date):
        // no cookie, and the error goes on, as under express-session.
        cookies.length = 0
        token = undefined
        this.#passOn(error)
      }
    }
    if (cookies.length > 0) appendSetCookie(this.#res, cookies)
    if (c.header && token !== undefined) sendToken(this.#res, c.header, token)
  }

  #isSecure(): boolean {
    const req = this.#req
    if ((req.socket as TLSSocket | undefined)?.encrypted) return true
    const proxy = this.#c.proxy
    if (proxy === false) return false
    if (proxy !== true) return req.secure === true
    const header = req.headers['x-forwarded-proto']
    const first = (Array.isArray(header) ? header[0] : header)?.split(',')[0]
    return first?.trim().toLowerCase() === 'https'
  }
}

function sameFields(a: Fields, b: Fields | undefined): boolean {
  if (!b) return false
  let count = 0
  for (const key in a) {
    if (a[key] !== b[key]) return false
    count++
  }
  for (const _ in b) count--
  return count === 0
}
