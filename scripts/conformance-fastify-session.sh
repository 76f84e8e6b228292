#!/usr/bin/env bash
# Runs @fastify/session's own tests, unchanged, with SessionStore (memory
# backend) as its store, and again with a control store: @fastify/session's own
# MemoryStore with every callback deferred, as any networked store's are. A test
# that fails with both assumes a synchronous store; the ones that fail only with
# SessionStore are listed as such.
#
#   scripts/conformance-fastify-session.sh <fastify/session checkout>
#
# Two files are replaced: lib/store.js (the plugin's default store) and
# test/TestStore.js (the store the suite's buildFastify gives the plugin), both
# by the store under test. memorystore.test.js tests @fastify/session's own
# MemoryStore (a Map handed to its constructor), and three more tests read or
# seed that Map (store.store): not applicable. STORE_OPTIONS (JSON) are
# SessionStore options. See docs/middleware.md, "Conformance".
set -euo pipefail
source "$(dirname "$0")/conformance-lib.sh"

checkout=${1:?usage: $0 <fastify/session checkout>}
need_installed "$checkout" fastify
need_installed "$checkout" @fastify/cookie
fs=$work/fastify-session
copy "$checkout" "$fs" "$(cd "$checkout" && pwd)/node_modules"
cp "$fs/lib/store.js" "$fs/lib/own-store.js"

cat >"$fs/sessionstore.js" <<ADAPTER
'use strict'
const { SessionStore } = require('$repo/packages/sessionmesh/dist/index.js')
const options = JSON.parse(process.env.STORE_OPTIONS || '{}')
module.exports = class MemoryStore extends SessionStore { constructor () { super(options) } }
ADAPTER
cat >"$fs/control.js" <<'ADAPTER'
'use strict'
const Store = require('./lib/own-store.js')
module.exports = class AsyncMemoryStore extends Store {
  set (id, session, cb) {
    const copy = JSON.parse(JSON.stringify(session))
    setImmediate(() => super.set(id, copy, cb))
  }
  get (id, cb) { setImmediate(() => super.get(id, cb)) }
  destroy (id, cb) { setImmediate(() => super.destroy(id, cb)) }
}
ADAPTER
echo "module.exports = require('../lib/store.js').MemoryStore" >"$fs/test/TestStore.js"

run() { # label, store module (sessionstore or control); prints the failures' titles to $work/<store>
  cat >"$fs/lib/store.js" <<STORE
'use strict'
const Store = require('../$2.js')
module.exports = Object.assign(Store, { default: Store, Store, MemoryStore: Store })
STORE
  local out
  out=$(cd "$fs" && timeout 600 node --test --test-reporter=spec test/*.test.js 2>&1 || true)
  printf '%s: %s pass, %s fail\n' "$1" \
    "$(grep -oE '^ℹ pass [0-9]+' <<<"$out" | grep -oE '[0-9]+' || echo 0)" \
    "$(grep -oE '^ℹ fail [0-9]+' <<<"$out" | grep -oE '[0-9]+' || echo 0)"
  # The summary after "failing tests:" names each failed test once.
  sed -n '/failing tests:/,$p' <<<"$out" | grep -E '^✖ ' | grep -v '^✖ failing tests:' | sed -E 's/^✖ //; s/ \([0-9.]+ms\)$//' | sort -u >"$work/$2"
}
run '@fastify/session tests vs SessionStore' sessionstore
run '... the same with the control store' control
comm -12 "$work/sessionstore" "$work/control" | sed 's/^/    failed with both: /'
comm -23 "$work/sessionstore" "$work/control" | sed 's/^/    failed with SessionStore only: /'
comm -13 "$work/sessionstore" "$work/control" | sed 's/^/    failed with the control only: /'
