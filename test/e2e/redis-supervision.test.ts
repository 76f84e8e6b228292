import { afterAll, describe, expect, it } from 'vitest'
import { Browser, Cluster, freePortRange, isAlive } from '../support/cluster.js'
import { RedisServer } from '../support/redis-server.js'

// Issue 11, item 10: `sessionmesh up` keeps its private Redis alive like a node,
// and its nodes shut down cleanly (drained, not SIGKILLed) when the store is gone.

const clusters: Cluster[] = []
const servers: RedisServer[] = []
afterAll(async () => {
  for (const cluster of clusters) await cluster.stop()
  for (const server of servers) await server.stop()
})

function logsWith(cluster: Cluster, msg: string): Array<Record<string, unknown>> {
  return cluster.logs().filter((line) => line.msg === msg)
}

describe('sessionmesh up and its Redis', () => {
  it('restarts its private redis-server when it dies, and the cluster serves again (it used to stop)', async () => {
    const cluster = await Cluster.start(['--nodes', '2'], await freePortRange(3))
    clusters.push(cluster)
    const [started] = logsWith(cluster, 'redis-server started')
    const redisPid = Number(started?.redisPid)
    expect(isAlive(redisPid)).toBe(true)
    process.kill(redisPid, 'SIGKILL')

    await expect
      .poll(() => logsWith(cluster, 'redis-server restarted').length, { timeout: 20_000 })
      .toBe(1)
    expect(cluster.process.exitCode).toBeNull()
    // The restarted Redis is empty (up keeps nothing on disk); a login works again.
    const browser = new Browser(cluster.base)
    await expect
      .poll(async () => (await browser.login('alice')).status, { timeout: 20_000 })
      .toBe(200)
    expect((await browser.request('GET', '/api/me')).status).toBe(200)
  })

  it('with an external Redis gone, the nodes still drain and exit on their own (they used to be SIGKILLed)', async () => {
    const redis = await RedisServer.start()
    servers.push(redis)
    const cluster = await Cluster.start(
      ['--nodes', '2', '--redis', redis.url],
      await freePortRange(3),
    )
    clusters.push(cluster)
    const browser = new Browser(cluster.base)
    expect((await browser.login('bob')).status).toBe(200)
    await redis.stop()
    // The outage policy answers while Redis is gone (nginx still up, a 503 not a refusal).
    await expect.poll(async () => (await browser.request('GET', '/api/me')).status).toBe(503)
    expect(await cluster.stop()).toBe(0)
    const stopped = logsWith(cluster, 'node stopped')
    expect(stopped).toHaveLength(2)
    for (const line of stopped)
      expect({ code: line.code, signal: line.signal }).toEqual({ code: 0, signal: null })
  })
})
