#!/usr/bin/env node
// Type-checks every ```ts snippet of README.md and docs/*.md under `strict`,
// against the package's published types (the `sessionmesh` exports map and
// dist/*.d.ts, so run `npm run build` first). Each snippet is a module of its
// own; the names a snippet takes from the app around it or from an earlier
// snippet of the same page (app, client, pool, secret, ...) are declared once in
// PRELUDE below. Errors are reported at their line in the Markdown file.
//
// usage: node scripts/check-doc-snippets.mjs [file.md ...]
import { spawnSync } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(fileURLToPath(import.meta.url), '../..')
const PRELUDE = `
import type { Express, Request } from 'express'
import type { Server } from 'node:http'
import type { Pool } from 'pg'
import type { Backend, SessionStore } from 'sessionmesh'
import type { SessionMiddleware } from 'sessionmesh/express'

// What an application declares for its own session keys, as express-session documents.
declare module 'express-session' {
  interface SessionData {
    cart: unknown
  }
}

declare global {
  const app: Express
  const req: Request
  const secret: string
  const sid: string
  const url: string
  const redisUrl: string
  const httpServer: Server
  const client: ReturnType<typeof import('redis').createClient>
  const pool: Pool
  const backend: Backend
  const store: SessionStore
  const sessionMiddleware: SessionMiddleware
  const createClient: typeof import('redis').createClient
  const session: typeof import('express-session')
  const SessionStore: typeof import('sessionmesh').SessionStore
  const redisBackend: typeof import('sessionmesh/redis').redisBackend
  const postgresBackend: typeof import('sessionmesh/postgres').postgresBackend
}
`

/** The ```ts blocks of a Markdown file: their code (dedented) and the line they start on. */
function snippets(file) {
  const lines = readFileSync(file, 'utf8').split('\n')
  const found = []
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```ts\s*$/.exec(lines[i])
    if (!open) continue
    const indent = open[1].length
    const start = i + 2
    const code = []
    for (i++; i < lines.length && !/^\s*```\s*$/.test(lines[i]); i++)
      code.push(lines[i].slice(indent))
    found.push({ file, start, code: code.join('\n') })
  }
  return found
}

const files =
  process.argv.length > 2
    ? process.argv.slice(2).map((f) => resolve(f))
    : [
        join(root, 'README.md'),
        ...readdirSync(join(root, 'docs'))
          .filter((f) => f.endsWith('.md'))
          .sort()
          .map((f) => join(root, 'docs', f)),
      ]
if (!existsSync(join(root, 'packages/sessionmesh/dist/index.d.ts'))) {
  console.error('check-doc-snippets: no published types yet; run `npm run build` first')
  process.exit(2)
}

const dir = join(tmpdir(), `sessionmesh-snippets-${process.pid}`)
mkdirSync(dir, { recursive: true })
try {
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir')
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n')
  writeFileSync(join(dir, 'prelude.d.ts'), `${PRELUDE.trim()}\n`)
  const all = files.flatMap(snippets)
  const byName = new Map()
  all.forEach((snippet, n) => {
    const name = `snippet-${n}.ts`
    byName.set(name, snippet)
    // `export {}` makes every snippet a module (top-level await, its own scope).
    writeFileSync(join(dir, name), `${snippet.code}\nexport {}\n`)
  })
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        target: 'es2022',
        module: 'nodenext',
        moduleResolution: 'nodenext',
        lib: ['es2023'],
        types: ['node'],
        skipLibCheck: true,
        noEmit: true,
      },
      include: ['*.ts'],
    }),
  )
  const tsc = spawnSync(
    process.execPath,
    [join(root, 'node_modules/typescript/bin/tsc'), '-p', dir, '--pretty', 'false'],
    {
      encoding: 'utf8',
    },
  )
  const out = `${tsc.stdout}${tsc.stderr}`
  // "snippet-3.ts(5,10): error TS2339: ..." -> "README.md:53:10: error TS2339: ..."
  const report = out
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const m = /(snippet-\d+\.ts)\((\d+),(\d+)\): (.*)$/.exec(line)
      const snippet = m && byName.get(m[1])
      if (!snippet) return line
      return `${relative(root, snippet.file)}:${snippet.start + Number(m[2]) - 1}:${m[3]}: ${m[4]}`
    })
  if (tsc.status !== 0) {
    console.error(report.join('\n'))
    console.error(`check-doc-snippets: ${all.length} snippets, type errors above`)
    process.exitCode = 1
  } else {
    console.log(`check-doc-snippets: ${all.length} snippets type-check under strict`)
  }
} finally {
  rmSync(dir, { recursive: true, force: true })
}
