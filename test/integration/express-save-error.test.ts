import type { AddressInfo } from 'node:net'
import express, { type NextFunction, type Request, type Response } from 'express'
import { createClient } from 'redis'
import { session } from 'sessionmesh/express'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testPassport } from '../support/express-app.js'
import { RedisServer } from '../support/redis-server.js'

// Found by the header-session e2e test under load: a passport login whose save
// failed was answered by the app's JSON error handler, then the end of the
// request saved again, failed again, and Express's HTML error page replaced
// that answer. Against a real redis-server, stalled with SIGSTOP.

let redis: RedisServer

beforeAll(async () => {
  redis = await RedisServer.start()
})
afterAll(async () => {
  redis?.signal('SIGCONT')
  await redis?.stop()
})

describe('a save that failed inside the route', () => {
  it('is not retried at the end of the request: the application’s error handler answers', async () => {
    const client = createClient({ url: redis.url, socket: { reconnectStrategy: () => 100 } })
    client.on('error', () => {})
    await client.connect()
    const auth = testPassport()
    const app = express()
    app.use(express.json())
    app.use(
      session({
        backend: redisBackend({ client }),
        secret: 'k',
        resave: false,
        saveUninitialized: false,
        timeout: 200,
      }),
    )
    app.use(auth.session())
    app.post('/login', auth.authenticate('local'), (_req, res) => res.json({ ok: true }))
    app.put('/note', (req, res, next) => {
      ;(req.session as unknown as Record<string, unknown>).note = 'n'
      req.session.save((error) => (error ? next(error) : res.json({ ok: true })))
    })
    app.use(
      (
        error: Error & { code?: string; status?: number },
        _q: Request,
        res: Response,
        _n: NextFunction,
      ) => {
        res.status(error.status ?? 500).json({ handled: error.code })
      },
    )
    const server = app.listen(0, '127.0.0.1')
    await new Promise((resolve) => server.once('listening', resolve))
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    try {
      const login = async () =>
        fetch(`${base}/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ username: 'ann', password: 'pw' }),
        })
      const ok = await login()
      expect(ok.status).toBe(200)
      const cookie = (ok.headers.getSetCookie()[0] ?? '').split(';')[0] ?? ''

      redis.signal('SIGSTOP')
      for (const response of [
        await login(),
        await fetch(`${base}/note`, { method: 'PUT', headers: { cookie } }),
      ]) {
        expect(response.status).toBe(503)
        expect(response.headers.get('content-type')).toMatch(/application\/json/)
        expect(await response.json()).toEqual({ handled: 'SESSIONMESH_STORE_UNAVAILABLE' })
        expect(response.headers.getSetCookie()).toEqual([])
      }
    } finally {
      redis.signal('SIGCONT')
      server.closeAllConnections()
      server.close()
      client.destroy()
    }
  })
})
