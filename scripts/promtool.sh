#!/usr/bin/env bash
# Prints the path of a promtool binary, installing one first if needed, for
# `make alerts-test` (promtool test rules deploy/prometheus/...).
#
# Order: $PROMTOOL if set, the cached copy, promtool on PATH, then an
# install into the cache: promtool taken out of Debian's prometheus package
# (only that binary, which needs nothing but libc: installing the package
# would also install and start a Prometheus server on :9090, the relay's
# default port), or else built with `go install` from the Prometheus module.
set -euo pipefail

CACHE=${OUTBOXKIT_CACHE:-$HOME/.cache/outboxkit}
BIN=$CACHE/bin/promtool
# The Go fallback's version (Prometheus 3.x tags its Go module v0.3xx.y).
GO_VERSION=${PROMTOOL_GO_VERSION:-v0.316.0}

log() { printf 'promtool: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -n "${PROMTOOL:-}" ]; then echo "$PROMTOOL"; exit 0; fi
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
if command -v promtool >/dev/null 2>&1; then command -v promtool; exit 0; fi

mkdir -p "$(dirname "$BIN")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

from_debian() {
  command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 || return 1
  log "taking promtool from Debian's prometheus package"
  # apt-get download writes to the current directory; _apt may not be able
  # to, which only costs a warning.
  if ! (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1); then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || return 1
    (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1) || return 1
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root" || return 1
  [ -x "$tmp/root/usr/bin/promtool" ] || return 1
  "$tmp/root/usr/bin/promtool" --version >/dev/null 2>&1 || return 1
  install -m 0755 "$tmp/root/usr/bin/promtool" "$BIN"
}

from_go() {
  command -v go >/dev/null 2>&1 || return 1
  log "building promtool $GO_VERSION with go install (a few minutes)"
  GOBIN="$tmp/gobin" go install "github.com/prometheus/prometheus/cmd/promtool@$GO_VERSION" >&2 || return 1
  install -m 0755 "$tmp/gobin/promtool" "$BIN"
}

if from_debian || from_go; then
  log "installed $("$BIN" --version 2>&1 | head -n 1) at $BIN"
  echo "$BIN"
  exit 0
fi
log "could not install promtool (neither from Debian's prometheus package nor with go install)"
exit 1
