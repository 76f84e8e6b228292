import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'

const root = join(import.meta.dirname, '..', '..')
const pkgDir = join(root, 'packages', 'sessionmesh')

describe('the published package', () => {
  it('ships a README and the MIT LICENSE its package.json names (the tarball had neither)', {
    timeout: 60_000,
  }, () => {
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: pkgDir,
      encoding: 'utf8',
    })
    const [report] = JSON.parse(out) as Array<{ files: Array<{ path: string }> }>
    const files = (report?.files ?? []).map((file) => file.path)
    expect(files).toContain('README.md')
    expect(files).toContain('LICENSE')
    const manifest = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as {
      license: string
    }
    expect(manifest.license).toBe('MIT')
    for (const dir of [root, pkgDir]) {
      expect(readFileSync(join(dir, 'LICENSE'), 'utf8')).toMatch(/^MIT License/)
    }
  })
})
