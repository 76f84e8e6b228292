import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { appEnvironment, nginxCommand, redisConf, sentinelConf } from '../support/fleet-configs.js'

// docs/deploy.md promises that its configs are the ones the fleet tests run. The
// fleet builds them with test/support/fleet-configs.ts; here the same functions,
// given the guide's paths and placeholders, must print exactly the guide's blocks.

const guide = readFileSync(resolve(import.meta.dirname, '../../docs/deploy.md'), 'utf8')

/** The fenced block right after `<!-- fleet: NAME -->`. */
function block(name: string): string {
  const match = new RegExp(`<!-- fleet: ${name} -->\\n\`\`\`\\w*\\n([\\s\\S]*?)\`\`\``).exec(guide)
  if (!match?.[1]) throw new Error(`docs/deploy.md has no block marked fleet: ${name}`)
  return match[1]
}

const REDIS_PASSWORD = 'CHANGE_ME_REDIS_PASSWORD'

describe('docs/deploy.md shows the configs the fleet runs', () => {
  it('the sessionmesh nginx command for the nginx host', () => {
    const args = nginxCommand({
      upstreams: ['10.77.1.11:3000', '10.77.1.12:3000', '10.77.1.13:3000'],
      cert: '/etc/ssl/sessionmesh/nginx.pem',
      key: '/etc/ssl/sessionmesh/nginx.key',
      listen: '10.77.1.2:443',
      httpListen: '10.77.1.2:80',
    })
    expect(block('nginx-command').split('\n')[0]).toBe(
      `npx sessionmesh ${args.join(' ')} > /etc/nginx/conf.d/sessionmesh.conf`,
    )
  })

  it('the environment file of an app host', () => {
    expect(block('app-env')).toBe(
      appEnvironment({
        nodeId: 'app1',
        host: '10.77.1.11',
        port: 3000,
        redisUrl: `rediss://:${REDIS_PASSWORD}@10.77.2.21:6380`,
        secret: 'CHANGE_ME_SESSION_SECRET',
        nginx: '10.77.1.2',
        caFile: '/etc/sessionmesh/ca.pem',
      }),
    )
  })

  it('the redis.conf of the Redis host, TLS only', () => {
    expect(block('redis-conf')).toBe(
      redisConf({
        bind: '10.77.2.21',
        dir: '/var/lib/redis',
        password: REDIS_PASSWORD,
        tls: {
          cert: '/etc/redis/tls/redis.pem',
          key: '/etc/redis/tls/redis.key',
          ca: '/etc/redis/tls/ca.pem',
        },
      }),
    )
  })

  it('the redis.conf of a Sentinel group member', () => {
    expect(block('sentinel-redis-conf')).toBe(
      redisConf({
        bind: '10.77.2.22',
        dir: '/var/lib/redis',
        password: REDIS_PASSWORD,
        replicaOf: '10.77.2.21:6379',
      }),
    )
  })

  it('the sentinel.conf of a Redis host', () => {
    expect(block('sentinel-conf')).toBe(
      sentinelConf({
        bind: '10.77.2.22',
        dir: '/var/lib/redis-sentinel',
        name: 'fleet',
        primary: '10.77.2.21:6379',
        password: REDIS_PASSWORD,
      }),
    )
  })
})
