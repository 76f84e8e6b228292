import fastifyCookie from '@fastify/cookie'
import fastifySession from '@fastify/session'
import Fastify from 'fastify'
import { createClient } from 'redis'
import { SessionStore } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { Client } from '../support/express-app.js'
import { RedisServer } from '../support/redis-server.js'

// The same store object under @fastify/session: it calls get/set/destroy with
// callbacks. fastify copies loaded data into its own Session object, so the store
// cannot tell what a request loaded: saves there are whole-session writes (still
// refused after a destroy, still indexed by user).

let server: RedisServer
let client: Awaited<ReturnType<ReturnType<typeof createClient>['connect']>>
let store: SessionStore
let base: string
const app = Fastify()

beforeAll(async () => {
  server = await RedisServer.start()
  client = await createClient({ url: server.url }).connect()
  store = new SessionStore({
    backend: redisBackend({ client }),
    userId: (session) => (typeof session.user === 'string' ? session.user : undefined),
  })
  await app.register(fastifyCookie)
  await app.register(fastifySession, {
    secret: 'a secret with at least thirty-two characters',
    store,
    saveUninitialized: false,
    cookie: { secure: false, maxAge: 3_600_000 },
  })
  app.post<{ Body: { username: string } }>('/login', async (request) => {
    request.session.set('user' as never, request.body.username as never)
    return { ok: true }
  })
  app.get('/me', async (request, reply) => {
    const user = request.session.get('user' as never)
    return user ? { user } : reply.code(401).send()
  })
  app.post('/logout', async (request, reply) => {
    await request.session.destroy()
    return reply.code(204).send()
  })
  base = await app.listen({ port: 0, host: '127.0.0.1' })
})

afterAll(async () => {
  await app.close()
  client.destroy()
  await server.stop()
})

it('logs in, indexes the user, and logs out under @fastify/session', async () => {
  const browser = new Client(base)
  expect((await browser.request('POST', '/login', { username: 'olga' })).status).toBe(200)
  const me = await browser.request('GET', '/me')
  expect(me.status).toBe(200)
  expect(await me.json()).toEqual({ user: 'olga' })
  const sessions = await store.listUserSessions('olga')
  expect(sessions).toHaveLength(1)

  expect((await browser.request('POST', '/logout')).status).toBe(204)
  expect((await browser.request('GET', '/me')).status).toBe(401)
  expect(await store.listUserSessions('olga')).toEqual([])
})

it('a session revoked through the store is gone for fastify too', async () => {
  const browser = new Client(base)
  await browser.request('POST', '/login', { username: 'pete' })
  expect((await browser.request('GET', '/me')).status).toBe(200)
  const [session] = await store.listUserSessions('pete')
  await store.revokeSession(session?.id ?? '')
  expect((await browser.request('GET', '/me')).status).toBe(401)
})
