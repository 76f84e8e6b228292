#!/usr/bin/env bash
# The integration tests use the machine's PostgreSQL (127.0.0.1:5432, trust, db
# `test`) and MariaDB (127.0.0.1:3306, root, no password, db `test`). Where they
# are installed but stopped, start them; Redis servers are started by the tests.
set -uo pipefail
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if command -v mysqladmin >/dev/null && ! mysqladmin -h 127.0.0.1 -uroot ping >/dev/null 2>&1; then
  echo "starting MariaDB" >&2
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  for _ in $(seq 1 50); do mysqladmin -h 127.0.0.1 -uroot ping >/dev/null 2>&1 && break; sleep 0.2; done
fi
exit 0
