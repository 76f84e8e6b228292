#!/usr/bin/env bash
# Runs connect-pg-simple's own tests, unchanged, against SessionStore over
# postgresBackend (PostgreSQL from the usual PG* variables; default 127.0.0.1,
# user postgres, database test). Each run works in a schema of its own, dropped
# after.
#
#   scripts/conformance-connect-pg-simple.sh <voxpelli/node-connect-pg-simple checkout>
#
# Two files are replaced: the entry point ('../..', index.js), by an adapter from
# connect-pg-simple's constructor (pool, pgPromise, conObject, conString, ttl in
# seconds; pruneSessions) to SessionStore; and test/db-utils.js, whose DDL is
# connect-pg-simple's own table: it creates sessionmesh's table instead, and a
# view named as theirs (session: sid, sess, expire) that the tests' SQL reads.
# Tests of connect-pg-simple's internals (main.spec.js: its timers, query helper,
# config parsing; basic.spec.js: its table creation) are run apart and counted as
# not applicable. STORE_OPTIONS (JSON) are SessionStore options. See
# docs/middleware.md, "Conformance".
set -euo pipefail
source "$(dirname "$0")/conformance-lib.sh"

checkout=${1:?usage: $0 <voxpelli/node-connect-pg-simple checkout>}
need_installed "$checkout" mocha
need_installed "$checkout" pg-promise
cps=$work/connect-pg-simple
copy "$checkout" "$cps" "$(cd "$checkout" && pwd)/node_modules"

cat >"$cps/index.js" <<ADAPTER
'use strict'
const pg = require('$repo/node_modules/pg')
const { SessionStore } = require('$repo/packages/sessionmesh/dist/index.js')
const { postgresBackend } = require('$repo/packages/sessionmesh/dist/backends/postgres/index.js')
const storeOptions = JSON.parse(process.env.STORE_OPTIONS || '{}')

module.exports = function () {
  return class PGStore extends SessionStore {
    constructor (options = {}) {
      const given = options.pool ?? options.pgPromise?.\$pool
      const pool = given ?? new pg.Pool(options.conObject ?? { connectionString: options.conString })
      super({
        ...storeOptions,
        backend: postgresBackend({ pool, table: 'sessionmesh_sessions', notify: false }),
        ...(options.ttl === undefined ? {} : { ttl: options.ttl * 1000 }),
      })
      this.pool = pool
      this.ownsPool = !given
    }
    pruneSessions (callback) {
      const swept = this.backend.cleanup()
      if (callback) swept.then(() => callback(), callback)
      return swept
    }
    close () {
      this.closing ??= super.close().then(() => this.ownsPool && this.pool.end())
      return this.closing
    }
  }
}
ADAPTER

cat >"$cps/test/db-utils.js" <<HELPER
'use strict'
const pg = require('$repo/node_modules/pg')
const { migratePostgres } = require('$repo/packages/sessionmesh/dist/backends/postgres/index.js')
const conObject = { database: process.env.PGDATABASE }
const pool = new pg.Pool(conObject)
async function removeTables () {
  await pool.query('DROP VIEW IF EXISTS session')
  await pool.query('DROP TABLE IF EXISTS sessionmesh_sessions')
}
async function initTables () {
  await migratePostgres(pool, { table: 'sessionmesh_sessions' })
  // Live and expired sessions, not tombstones; expire as their timestamp (UTC).
  await pool.query(\`CREATE VIEW session AS SELECT id AS sid, fields AS sess,
    (to_timestamp(expires_at / 1000.0) AT TIME ZONE 'UTC')::timestamp(6) AS expire
    FROM sessionmesh_sessions WHERE fields IS NOT NULL\`)
}
module.exports = Object.freeze({ conObject, queryPromise: pool.query.bind(pool), removeTables, initTables })
HELPER

export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-test}
schema=sessionmesh_conformance_$$
export PGOPTIONS="-c search_path=$schema"
sql() { # one statement, outside the run's schema
  PGOPTIONS= node -e "
    const pool = new (require('$repo/node_modules/pg').Pool)()
    pool.query(process.argv[1]).finally(() => pool.end())" "$1"
}
sql "CREATE SCHEMA $schema"
trap 'sql "DROP SCHEMA $schema CASCADE"; rm -rf "$work"' EXIT

run() { # label, mocha arguments...
  local label=$1; shift
  local out
  out=$(cd "$cps" && timeout 600 node_modules/.bin/mocha --reporter spec --exit "$@" 2>&1 || true)
  mocha_counts "$label" "$out"
}
contract='test/integration/express.spec.js test/integration/pgpromise.spec.js'
# shellcheck disable=SC2086 # file lists
run 'connect-pg-simple tests vs SessionStore on postgresBackend' $contract
# shellcheck disable=SC2086
STORE_OPTIONS='{"touchAfter":0}' run '... the same with touchAfter: 0' $contract
run '... its internals (not applicable)' test/main.spec.js test/integration/basic.spec.js
