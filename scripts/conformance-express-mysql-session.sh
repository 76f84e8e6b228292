#!/usr/bin/env bash
# Runs express-mysql-session's own tests, unchanged, against SessionStore over
# mysqlBackend (MariaDB/MySQL at DB_HOST:DB_PORT, user DB_USER, password DB_PASS;
# default 127.0.0.1:3306, root, no password). It creates a private database for
# the run and drops it after: the suite drops every table of its database.
#
#   scripts/conformance-express-mysql-session.sh <chill117/express-mysql-session checkout>
#
# Only the entry point the tests require ('..', index.js) is replaced, by an
# adapter from express-mysql-session's constructor to SessionStore. The suite
# reaches into its store for `connection` (a mysql2 promise pool) and
# `options.schema` (table and column names): the adapter names ours there. Tests
# of express-mysql-session's own internals (its DDL, constructor options, timers,
# helpers) are run apart and counted as not applicable. STORE_OPTIONS (JSON) are
# SessionStore options. See docs/middleware.md, "Conformance".
set -euo pipefail
source "$(dirname "$0")/conformance-lib.sh"

checkout=${1:?usage: $0 <chill117/express-mysql-session checkout>}
need_installed "$checkout" mocha
ems=$work/express-mysql-session
copy "$checkout" "$ems" "$(cd "$checkout" && pwd)/node_modules"

cat >"$ems/index.js" <<ADAPTER
'use strict'
const mysql = require('$repo/node_modules/mysql2/promise')
const { SessionStore } = require('$repo/packages/sessionmesh/dist/index.js')
const { mysqlBackend, migrateMysql } = require('$repo/packages/sessionmesh/dist/backends/mysql/index.js')
const storeOptions = JSON.parse(process.env.STORE_OPTIONS || '{}')
const table = 'sessionmesh_sessions'

module.exports = function () {
  return class MySQLStore extends SessionStore {
    constructor (options = {}, connection) {
      const pool = connection ?? mysql.createPool({
        host: options.host, port: Number(options.port), user: options.user,
        password: options.password, database: options.database,
      })
      const ttl = options.expiration ?? 86400000
      super({ ...storeOptions, backend: mysqlBackend({ pool, table }), ttl })
      this.connection = pool
      this.options = {
        expiration: ttl,
        schema: { tableName: table, columnNames: { session_id: 'id', expires: 'expires_at', data: 'fields' } },
      }
      this.ready = migrateMysql(pool, { table })
      this.ownsPool = !connection
    }
    onReady () { return this.ready }
    close (callback) {
      this.closing ??= super.close().then(() => this.ownsPool && this.connection.end())
      if (callback) this.closing.then(() => callback(), callback)
      return this.closing
    }
  }
}
ADAPTER

export DB_HOST=${DB_HOST:-127.0.0.1} DB_PORT=${DB_PORT:-3306} DB_USER=${DB_USER:-root} DB_PASS=${DB_PASS:-}
export DB_NAME=sessionmesh_conformance_$$
database() { # CREATE or DROP the run's database
  node -e "
    const mysql = require('$repo/node_modules/mysql2/promise')
    mysql.createConnection({ host: process.env.DB_HOST, port: +process.env.DB_PORT,
      user: process.env.DB_USER, password: process.env.DB_PASS })
      .then(c => c.query('$1 DATABASE \`' + process.env.DB_NAME + '\`').then(() => c.end()))"
}
database CREATE
trap 'database DROP; rm -rf "$work"' EXIT

# Tests of express-mysql-session's internals: its table DDL and jsonData layout,
# constructor options and pool handling, its expiry timer, its promiseAllSeries,
# and fixtures or checks that write its rows (session_id, expires in s, data) in SQL.
internal_files='test/unit/clearExpiredSessions.js test/unit/constructor.js test/unit/createDatabaseTable.js test/unit/custom/data-json.js test/unit/promiseAllSeries.js test/unit/setExpirationInterval.js'
internal_titles='^(all\(\[callback\]\) when sessions exist|length\(\[callback\]\) with at least some|close\(\) database connection|touch\(session_id, data\[, callback\]\) (when the session exists|disableTouch))'
contract_files=$(cd "$ems" && ls test/unit/*.js test/integration/*.js | grep -vxF -f <(tr ' ' '\n' <<<"$internal_files"))

run() { # label, mocha arguments...
  local label=$1; shift
  local out
  out=$(cd "$ems" && timeout 600 node_modules/.bin/mocha --reporter spec --exit "$@" 2>&1 || true)
  mocha_counts "$label" "$out"
}
# shellcheck disable=SC2086 # file lists
run 'express-mysql-session tests vs SessionStore on mysqlBackend' \
  test/manager.js $contract_files --grep "$internal_titles" --invert
# shellcheck disable=SC2086
STORE_OPTIONS='{"maxBytes":1048576}' run '... the same with maxBytes: 1 MiB' \
  test/manager.js $contract_files --grep "$internal_titles" --invert
# shellcheck disable=SC2086
run '... its internals (not applicable)' \
  test/manager.js $internal_files $contract_files --grep "$internal_titles|^(clearExpiredSessions|constructor|createDatabaseTable|JSON data column|promiseAllSeries|setExpirationInterval)"
