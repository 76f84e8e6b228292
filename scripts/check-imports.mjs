#!/usr/bin/env node
// Checks the package's import graph, type-only imports included: no two modules
// import each other, directly or round a longer circle, and each layer imports
// only the layers below it (docs/DESIGN.md): core/ nothing of ours outside core/;
// backends/ only core/ and backends/; store.ts and metrics.ts not integrations/
// or cli/. Prints each problem with the files involved and exits 1 when there is
// one.
//
// usage: node scripts/check-imports.mjs
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(fileURLToPath(import.meta.url), '../..')
const src = join(root, 'packages/sessionmesh/src')

/** The layer of a module, by its path under src/. */
function layerOf(path) {
  const top = path.split('/')[0]
  if (top === 'core' || top === 'backends' || top === 'integrations' || top === 'cli') return top
  return path === 'index.ts' ? 'index' : 'store'
}
/** What each layer may import, besides itself. */
const BELOW = {
  core: [],
  backends: ['core'],
  store: ['core', 'backends', 'store'],
  integrations: ['core', 'backends', 'store'],
  cli: ['core', 'backends', 'store', 'integrations'],
  index: ['core', 'backends', 'store', 'integrations'],
}

function sources(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return sources(path)
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : []
  })
}

// `import … from './x.js'` and `export … from './x.js'`, over several lines too.
const IMPORT = /^(?:import|export)\s[^;]*?from\s+'(\.[^']+)'/gms

const graph = new Map()
for (const file of sources(src)) {
  const targets = []
  for (const match of readFileSync(file, 'utf8').matchAll(IMPORT)) {
    const target = resolve(dirname(file), match[1].replace(/\.js$/, '.ts'))
    targets.push(relative(src, target))
  }
  graph.set(relative(src, file), targets)
}

const problems = []
for (const [from, targets] of graph) {
  for (const to of targets) {
    if (!graph.has(to)) problems.push(`${from} imports ${to}, which does not exist`)
    const [a, b] = [layerOf(from), layerOf(to)]
    if (a !== b && !BELOW[a].includes(b)) problems.push(`${from} (${a}) imports ${to} (${b})`)
  }
}

// Circles: a depth-first walk; a module met again while still on the path closes one.
const state = new Map()
const path = []
function walk(node) {
  state.set(node, 'open')
  path.push(node)
  for (const next of graph.get(node) ?? []) {
    if (state.get(next) === 'open') {
      problems.push(`an import circle: ${[...path.slice(path.indexOf(next)), next].join(' → ')}`)
    } else if (!state.has(next) && graph.has(next)) walk(next)
  }
  path.pop()
  state.set(node, 'done')
}
for (const node of graph.keys()) if (!state.has(node)) walk(node)

if (problems.length > 0) {
  process.stderr.write(`check-imports: ${problems.length} problem(s)\n  ${problems.join('\n  ')}\n`)
  process.exit(1)
}
process.stdout.write(`check-imports: ${graph.size} modules, no circles, layers in order\n`)
