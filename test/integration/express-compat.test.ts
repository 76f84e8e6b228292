import { randomBytes } from 'node:crypto'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import express, {
  type NextFunction,
  type Request,
  type RequestHandler,
  type Response,
} from 'express'
import expressSession from 'express-session'
import { SessionStore } from 'sessionmesh'
import { session } from 'sessionmesh/express'
import { afterEach, describe, expect, it } from 'vitest'

// The express-session options and behaviours sessionmesh/express takes over
// unchanged (issue 12), each checked over real HTTP through Express.

type Data = Record<string, unknown>
type Middleware = Parameters<typeof session>[0]

const servers: Server[] = []
afterEach(() => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections()
    server.close()
  }
})

/** An app counting visits in the session; `errors` collects what reached the error handler. */
async function start(
  middleware: RequestHandler,
  before: RequestHandler[] = [],
  route?: (req: Request, res: Response) => void,
) {
  const errors: Error[] = []
  const app = express()
  app.set('trust proxy', true)
  for (const handler of before) app.use(handler)
  app.use(middleware)
  app.get(
    '/',
    route ??
      ((req, res) => {
        const data = req.session as unknown as Data | undefined
        if (!data) return void res.send('no session')
        data.visits = Number(data.visits ?? 0) + 1
        res.send(String(data.visits))
      }),
  )
  app.use((error: Error, _req: Request, res: Response, _next: NextFunction) => {
    errors.push(error)
    if (!res.headersSent) res.status(500).send(error.message)
  })
  const server = app.listen(0, '127.0.0.1')
  servers.push(server)
  await new Promise((resolve) => server.once('listening', resolve))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, errors }
}

const mw = (options: Middleware) => session(options) as unknown as RequestHandler

async function get(url: string, headers: Record<string, string> = {}) {
  const response = await fetch(url, { headers })
  return {
    status: response.status,
    body: await response.text(),
    setCookies: response.headers.getSetCookie(),
  }
}

/** `name=value` of the first Set-Cookie line. */
const pair = (lines: string[]) => (lines[0] ?? '').split(';')[0] ?? ''

describe('sessionmesh/express: express-session options', () => {
  it('honours the deprecated `key` as the cookie name when `name` is not given', async () => {
    const { url } = await start(mw({ secret: 'k', key: 'sessid' }))
    const first = await get(url)
    expect(pair(first.setCookies)).toMatch(/^sessid=s%3A/)
    expect((await get(url, { cookie: pair(first.setCookies) })).body).toBe('2')
  })

  it('takes `cookie` as a function of the request, for new sessions and the path check', async () => {
    const { url } = await start(
      mw({ secret: 'k', cookie: (req) => ({ path: '/', domain: String(req.headers['x-site']) }) }),
    )
    const { setCookies } = await get(url, { 'x-site': 'a.example' })
    expect(setCookies[0]).toContain('Domain=a.example')
    expect((await get(url, { 'x-site': 'b.example' })).setCookies[0]).toContain('Domain=b.example')
  })

  it("sameSite 'auto' is None on a secure request and Lax otherwise", async () => {
    const { url } = await start(mw({ secret: 'k', cookie: { sameSite: 'auto' } }))
    const secure = await get(url, { 'x-forwarded-proto': 'https' })
    expect(secure.setCookies[0]).toMatch(/; SameSite=None$/)
    expect((await get(url)).setCookies[0]).toMatch(/; SameSite=Lax$/)
  })

  it('regression: sameSite and priority in another case are sent, not as "undefined"', async () => {
    const options = { sameSite: 'None', priority: 'HIGH', secure: true } as unknown as {
      sameSite: 'none'
    }
    const { url } = await start(mw({ secret: 'k', cookie: options }))
    const line = (await get(url, { 'x-forwarded-proto': 'https' })).setCookies[0] ?? ''
    expect(line).toContain('; Priority=High')
    expect(line).toContain('; SameSite=None')
    expect(line).not.toContain('undefined')
  })

  it('an unknown sameSite or an invalid expires sends no cookie and passes the error on', async () => {
    const bogus = { sameSite: 'sometimes' } as unknown as { sameSite: 'lax' }
    for (const cookie of [bogus, { expires: new Date(Number.NaN) }]) {
      const { url, errors } = await start(mw({ secret: 'k', cookie }))
      const response = await get(url)
      expect(response.setCookies).toEqual([])
      await expect.poll(() => errors.map((e) => e.message)).toHaveLength(1)
      expect(errors[0]?.message).toMatch(/^option (sameSite|expires) is invalid$/)
    }
  })

  it('signs with a Buffer secret and reads the cookie back', async () => {
    const { url } = await start(mw({ secret: randomBytes(32) }))
    const first = await get(url)
    expect((await get(url, { cookie: pair(first.setCookies) })).body).toBe('2')
  })

  it("without `secret`, uses cookie-parser's req.secret, and fails a request that has neither", async () => {
    const withSecret: RequestHandler = (req, _res, next) => {
      ;(req as { secret?: string }).secret = 'from-cookie-parser'
      next()
    }
    const { url } = await start(mw({}), [withSecret])
    const first = await get(url)
    expect((await get(url, { cookie: pair(first.setCookies) })).body).toBe('2')
    const bare = await start(mw({ secret: undefined }))
    expect(await get(bare.url)).toMatchObject({
      status: 500,
      body: 'secret option required for sessions',
    })
  })

  it("reads the id from cookie-parser's req.signedCookies and req.cookies when the header lacks it", async () => {
    let found: Record<string, string> = {}
    const parsed: RequestHandler = (req, _res, next) => {
      Object.assign(req, found)
      req.headers.cookie = 'other=1'
      next()
    }
    const { url } = await start(mw({ secret: 'k' }), [parsed])
    const value = decodeURIComponent(pair((await get(url)).setCookies).split('=')[1] ?? '')
    found = { cookies: { 'connect.sid': value } } as never
    expect((await get(url)).body).toBe('2')
    const sid = value.slice(2, value.lastIndexOf('.'))
    found = { signedCookies: { 'connect.sid': sid } } as never
    expect((await get(url)).body).toBe('3')
  })

  it("runs without a session while a foreign store says 'disconnect', and with one after 'connect'", async () => {
    const store = new expressSession.MemoryStore()
    const { url } = await start(mw({ secret: 'k', store }))
    store.emit('disconnect')
    expect(await get(url)).toMatchObject({ body: 'no session', setCookies: [] })
    store.emit('connect')
    expect((await get(url)).body).toBe('1')
  })

  it("rejects bad options at start-up with express-session's messages, naming a bad secret entry", () => {
    const bad = (options: unknown) => () => session(options as Middleware)
    expect(bad({ secret: 'k', genid: 'x' })).toThrow(/genid option must be a function/)
    expect(bad({ secret: 'k', unset: 'x' })).toThrow(/unset option must be "destroy" or "keep"/)
    expect(bad({ secret: [] })).toThrow(/secret option array must contain one or more strings/)
    expect(bad({ secret: 42 })).toThrow(/secret must be a non-empty string or an HMAC key/)
    expect(bad({ secret: ['new', undefined] })).toThrow(
      /secret\[1\] is undefined: .*environment variable unset/,
    )
    expect(bad({ secret: ['new', ''] })).toThrow(/secret\[1\] is an empty string/)
  })

  it('regression: a bogus req.sessionID set by other middleware saves nothing and sends no cookie', async () => {
    const store = new SessionStore()
    const { url } = await start(mw({ secret: 'k', store }), [], (req, res) => {
      ;(req as unknown as { sessionID: unknown }).sessionID = 42
      ;(req.session as unknown as Data).visits = 1
      res.send('ok')
    })
    expect(await get(url)).toMatchObject({ status: 200, body: 'ok', setCookies: [] })
    expect(await store.length()).toBe(0)
  })

  it("regression: a second res.end() while the save is pending keeps the first call's body", async () => {
    const { url } = await start(mw({ secret: 'k' }), [], (req, res) => {
      ;(req.session as unknown as Data).seen = true
      res.send('hello world')
      res.end()
    })
    const response = await get(url)
    expect(response).toMatchObject({ status: 200, body: 'hello world' })
    expect(response.setCookies).toHaveLength(1)
  })
})

describe('sessionmesh/express over a foreign store: errors reach next() as under express-session', () => {
  it("a failed touch: the response is sent, and the error handler gets the store's error", async () => {
    const store = new expressSession.MemoryStore()
    const { url, errors } = await start(
      mw({ secret: 'k', store, resave: false }),
      [],
      (_q, res) => {
        res.send('read only')
      },
    )
    const first = await get(url)
    const touch = (_sid: string, _session: unknown, callback?: (error?: unknown) => void) =>
      callback?.(new Error('touch boom'))
    store.touch = touch as typeof store.touch
    const second = await fetch(url, { headers: { cookie: pair(first.setCookies) } })
    expect(second.status).toBe(200)
    await expect.poll(() => errors.map((e) => e.message)).toEqual(['touch boom'])
  })

  it('a failed destroy with unset: destroy: the response is sent, and the error handler gets it', async () => {
    const store = new expressSession.MemoryStore()
    const { url, errors } = await start(
      mw({ secret: 'k', store, unset: 'destroy' }),
      [],
      (req, res) => {
        if (req.headers.cookie) (req as { session?: unknown }).session = null
        else (req.session as unknown as Data).visits = 1
        res.send('done')
      },
    )
    const first = await get(url)
    store.destroy = (_sid, callback) => callback?.(new Error('destroy boom'))
    // The session is still stored, so its cookie is not expired either.
    expect(await get(url, { cookie: pair(first.setCookies) })).toMatchObject({
      status: 200,
      setCookies: [],
    })
    await expect.poll(() => errors.map((e) => e.message)).toEqual(['destroy boom'])
  })

  it('regression: an error while inflating a stored session reaches next() instead of hanging', async () => {
    const store = new expressSession.MemoryStore()
    const { url, errors } = await start(mw({ secret: 'k', store }))
    const first = await get(url)
    store.get = (_sid, callback) => {
      const hostile = { cookie: {} }
      Object.defineProperty(hostile, 'boom', {
        enumerable: true,
        get: () => {
          throw new Error('inflate boom')
        },
      })
      callback(null, hostile as never)
    }
    const second = await get(url, { cookie: pair(first.setCookies) })
    expect(second).toMatchObject({ status: 500, body: 'inflate boom' })
    expect(errors.map((e) => e.message)).toEqual(['inflate boom'])
  })

  it('reads a stored session that has no cookie object, instead of dropping it', async () => {
    const store = new expressSession.MemoryStore()
    const { url } = await start(mw({ secret: 'k', store }))
    const first = await get(url)
    const sid = decodeURIComponent(pair(first.setCookies).split('=')[1] ?? '').slice(2)
    await new Promise((resolve) =>
      store.set(sid.slice(0, sid.lastIndexOf('.')), { visits: 41 } as never, resolve),
    )
    expect((await get(url, { cookie: pair(first.setCookies) })).body).toBe('42')
  })
})
