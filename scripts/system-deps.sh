#!/usr/bin/env bash
# Installs the Debian packages the tests drive for real (redis-server, memcached,
# nginx, chromium; for the network-namespace fleet tests iproute2, nftables,
# openssl) when they are missing. Needs root and apt-get; otherwise says what to
# install and fails.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v memcached >/dev/null || need+=(memcached)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || need+=(chromium)
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need+=(iproute2)
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || need+=(nftables)
command -v openssl >/dev/null || need+=(openssl)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing missing Debian packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "missing: ${need[*]}. Install them first, e.g.: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
