#!/usr/bin/env bash
# Runs the peers' own test files, unchanged, against this package, and prints
# pass/fail counts. It fetches nothing and never writes into the checkouts: each
# is copied to a temp dir, where only the entry point the tests import is
# replaced by a small adapter onto sessionmesh. Build first (`npm run build`).
#
#   scripts/conformance.sh express-session=DIR connect-redis=DIR fastify-session=DIR \
#     connect-pg-simple=DIR express-mysql-session=DIR       (any of them)
#   scripts/conformance.sh <expressjs/session checkout> [<tj/connect-redis checkout>]
#
# Give each peer's checkout (expressjs/session, tj/connect-redis, fastify/session,
# voxpelli/node-connect-pg-simple, chill117/express-mysql-session). Each but
# connect-redis needs its own devDependencies installed (`npm install` there);
# connect-redis's test runs on this repository's vitest, redis, ioredis and
# express-session, and starts its own redis-server on a free loopback port. The
# last three run in scripts/conformance-<peer>.sh (also runnable alone), against
# the memory, PostgreSQL and MySQL backends. See docs/middleware.md,
# "Conformance", for the expected counts and why each failure is there.
set -euo pipefail
here=$(dirname "$0")

express_session='' connect_redis='' others=()
for arg in "$@"; do
  case $arg in
    express-session=*) express_session=${arg#*=} ;;
    connect-redis=*) connect_redis=${arg#*=} ;;
    fastify-session=* | connect-pg-simple=* | express-mysql-session=*) others+=("$arg") ;;
    *=*) echo "unknown peer: ${arg%%=*}" >&2; exit 2 ;;
    *) if [ -z "$express_session" ]; then express_session=$arg; else connect_redis=$arg; fi ;;
  esac
done
[ -n "$express_session$connect_redis${others[*]:-}" ] || { sed -n '7,9p' "$0" >&2; exit 2; }

source "$here/conformance-lib.sh"

# --- express-session's test/session.js ---------------------------------------
if [ -n "$express_session" ]; then
need_installed "$express_session" mocha
es=$work/express-session
copy "$express_session" "$es" "$(cd "$express_session" && pwd)/node_modules"
mv "$es/index.js" "$es/express-session.js"
mkdir -p "$es/test/fixtures"
openssl req -x509 -nodes -newkey rsa:2048 -days 2 -subj "/CN=express-session.local" \
  -keyout "$es/test/fixtures/server.key" -out "$es/test/fixtures/server.crt" 2>/dev/null

# Our middleware as `require('../')`; Store, MemoryStore, Session and Cookie stay
# express-session's, since the suite builds its own stores from them.
cat >"$es/middleware.cjs" <<EOF
const real = require('./express-session.js')
const { session } = require('$repo/packages/sessionmesh/dist/integrations/express/index.js')
module.exports = Object.assign((options) => session(options ?? {}), {
  Store: real.Store, MemoryStore: real.MemoryStore, Session: real.Session, Cookie: real.Cookie,
})
EOF
# The real middleware, with SessionStore (memory backend) as the default store and
# as MemoryStore; STORE_OPTIONS (JSON) are SessionStore options, e.g. touchAfter.
cat >"$es/store.cjs" <<EOF
const real = require('./express-session.js')
const { SessionStore } = require('$repo/packages/sessionmesh/dist/index.js')
const options = JSON.parse(process.env.STORE_OPTIONS || '{}')
class MemoryStore extends SessionStore { constructor() { super(options) } }
module.exports = Object.assign((o) => real({ ...o, store: (o ?? {}).store ?? new MemoryStore() }), {
  Store: real.Store, MemoryStore, Session: real.Session, Cookie: real.Cookie,
})
EOF

run_es() { # label, adapter, [STORE_OPTIONS]
  cp "$es/$2.cjs" "$es/index.js"
  local out
  out=$(cd "$es" && STORE_OPTIONS=${3:-} NO_DEPRECATION=express-session \
    timeout 600 node_modules/.bin/mocha --check-leaks --no-exit --reporter spec test/session.js 2>&1 || true)
  printf '%s: %s passing, %s failing\n' "$1" \
    "$(grep -oE '[0-9]+ passing' <<<"$out" | grep -oE '[0-9]+' || echo 0)" \
    "$(grep -oE '[0-9]+ failing' <<<"$out" | grep -oE '[0-9]+' || echo 0)"
  grep -E '^ +[0-9]+\) [a-z]' <<<"$out" | grep -v 'session()$' | sed 's/^ */    failed: /' || true
}

run_es 'express-session test/session.js vs sessionmesh/express' middleware
run_es 'express-session test/session.js vs SessionStore under express-session' store
run_es '... the same with touchAfter: 0' store '{"touchAfter":0}'
fi

# --- connect-redis's index_test.ts ---------------------------------------------
if [ -n "$connect_redis" ]; then
cr=$work/connect-redis
copy "$connect_redis" "$cr" "$repo/node_modules"
# sessionmesh keeps a session at <prefix>s:<id>: prefix 'ses' gives connect-redis's
# sess:<id>, so the test's own TTL checks read our keys.
cat >"$cr/index.ts" <<'EOF'
import { Redis } from 'ioredis'
import { SessionStore } from 'sessionmesh'
import { redisBackend } from 'sessionmesh/redis'

export class RedisStore extends SessionStore {
  constructor(options: { client: { options?: { url?: string } } }) {
    const url = options.client.options?.url as string
    const client =
      process.env.CONNECT_REDIS_CLIENT === 'ioredis' ? new Redis(url) : (options.client as never)
    super({ backend: redisBackend({ client, prefix: 'ses' }), touchAfter: 0 })
  }
}
EOF
# Its redis-server, on a free loopback port instead of the fixed 18543.
cat >"$cr/testdata/server.ts" <<'EOF'
import { type ChildProcess, spawn } from 'node:child_process'
import { createServer } from 'node:net'

let server: ChildProcess
export const port = await new Promise<string>((resolve) => {
  const probe = createServer().listen(0, '127.0.0.1', () => {
    const { port } = probe.address() as { port: number }
    probe.close(() => resolve(String(port)))
  })
})
export function connect() {
  return new Promise((resolve, reject) => {
    server = spawn('redis-server', ['--port', port, '--bind', '127.0.0.1', '--save', '', '--loglevel', 'warning'], { stdio: 'inherit' })
    server.on('error', reject)
    setTimeout(resolve, 1500)
  })
}
export function disconnect() {
  server.kill('SIGKILL')
  return Promise.resolve()
}
EOF
# The test imports the store as "./" (the built package): point that at index.ts.
cat >"$cr/vitest.conformance.config.ts" <<EOF
import { defineConfig } from 'vitest/config'
export default defineConfig({
  resolve: { alias: [{ find: /^\.\/\$/, replacement: '$cr/index.ts' }] },
  test: { include: ['index_test.ts'], root: '$cr' },
})
EOF
for client in node-redis ioredis; do
  out=$(cd "$cr" && CONNECT_REDIS_CLIENT=$client timeout 300 \
    "$repo/node_modules/.bin/vitest" run --config vitest.conformance.config.ts 2>&1 || true)
  # vitest colours its summary; strip the escapes before reading it.
  summary=$(sed 's/\x1b\[[0-9;]*m//g' <<<"$out" | grep -E '^ +Tests ' || echo 'no summary')
  echo "connect-redis index_test.ts vs SessionStore on $client: ${summary#*Tests }"
  sed 's/\x1b\[[0-9;]*m//g' <<<"$out" | grep -E '^ FAIL |AssertionError' | sed 's/^/    /' || true
done
fi

# --- the others, each in its own script --------------------------------------
for arg in "${others[@]}"; do
  "$here/conformance-${arg%%=*}.sh" "${arg#*=}"
done
