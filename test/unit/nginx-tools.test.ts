import { describe, expect, it } from 'vitest'
import { findTool, installHint, tools } from '../../packages/sessionmesh/src/cli/system.js'

describe('finding nginx and redis-server', () => {
  it('finds nginx in sbin even when sbin is not on PATH (Debian users often lack it)', () => {
    expect(findTool(tools.nginx, { PATH: '/nonexistent' })).toBe('/usr/sbin/nginx')
  })

  it('reports a missing tool, and says how to install it', () => {
    const missing = { ...tools.nginx, fallbacks: [] }
    expect(findTool(missing, { PATH: '/nonexistent' })).toBeUndefined()
    const hint = installHint(tools.nginx)
    expect(hint).toContain('nginx is not installed')
    expect(hint).toContain('sudo apt-get install nginx')
    expect(hint).toContain('brew install nginx')
    expect(installHint(tools.redis)).toContain('sudo apt-get install redis-server')
  })

  it('honours an override, and refuses one that is not executable', () => {
    expect(findTool(tools.redis, { PATH: '', SESSIONMESH_REDIS_SERVER: process.execPath })).toBe(
      process.execPath,
    )
    expect(
      findTool(tools.redis, { PATH: '/usr/bin', SESSIONMESH_REDIS_SERVER: '/nonexistent' }),
    ).toBeUndefined()
  })
})
