# Shared by the scripts/conformance*.sh scripts (sourced, not run): where this
# repository is, a private work dir removed on exit, and how a peer's checkout
# is copied there. A checkout is never written to.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/sessionmesh-conformance.XXXXXX")
trap 'rm -rf "$work"' EXIT

[ -f "$repo/packages/sessionmesh/dist/index.js" ] || { echo "run npm run build first" >&2; exit 2; }

# copy <checkout> <dest> <node_modules to link>: the checkout without its
# node_modules and .git; node_modules is linked, not copied.
copy() {
  mkdir -p "$2"
  (cd "$1" && tar --exclude=./node_modules --exclude=./.git -cf - .) | tar -xf - -C "$2"
  ln -s "$3" "$2/node_modules"
}

# need_installed <checkout> <package>: the checkout's own devDependencies must be in.
need_installed() {
  [ -d "$1/node_modules/$2" ] || {
    echo "$1: install its devDependencies first (npm install there)" >&2
    exit 2
  }
}

# mocha_counts <label> <mocha spec output>: "label: N passing, M failing", then
# each failure's title and the first line of its error. A failed hook counts as
# one failure (mocha's count) and skips the tests under it.
mocha_counts() {
  printf '%s: %s passing, %s failing\n' "$1" \
    "$(grep -oE '[0-9]+ passing' <<<"$2" | grep -oE '[0-9]+' || echo 0)" \
    "$(grep -oE '[0-9]+ failing' <<<"$2" | grep -oE '[0-9]+' || echo 0)"
  # A failure's title block: "  1) suite" then indented lines up to the one
  # ending in ':'; its error is the next non-empty line.
  awk '/^ +[0-9]+ failing/ { summary = 1; next }
       !summary { next }
       /^ +[0-9]+\) / { on = 1; t = $0; sub(/^ +/, "", t); next }
       on && /:$/ { l = $0; sub(/^ +/, "", l); sub(/:$/, "", l); print "    failed: " t " › " l; on = 0; err = 1; next }
       on { l = $0; sub(/^ +/, "", l); t = t " › " l; next }
       err && NF { l = $0; sub(/^ +/, "", l); print "      " substr(l, 1, 160); err = 0 }' <<<"$2"
}
