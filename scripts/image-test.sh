#!/usr/bin/env bash
# Builds the image (scripts/image.sh) and checks it without running it
# (containers cannot start in every sandbox: setrlimit fails in ours):
#   - the config: a numeric non-root user, the entrypoint /outbox-relay, the
#     version label;
#   - the files: podman create + podman export give the filesystem, whose
#     binaries must be static (no ELF interpreter) and print, run here on
#     the host, the version the label states; the CA bundle is there.
# Each failure prints one line saying what was expected and what was found.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "image-test: FAIL: $*" >&2
  exit 1
}

ref=$(scripts/image.sh | tail -n 1)
[ -n "$ref" ] || fail "scripts/image.sh printed no image name"

user=$(podman image inspect --format '{{.Config.User}}' "$ref")
entrypoint=$(podman image inspect --format '{{json .Config.Entrypoint}}' "$ref")
version=$(podman image inspect --format '{{index .Config.Labels "org.opencontainers.image.version"}}' "$ref")
revision=$(podman image inspect --format '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$ref")

uid=${user%%:*}
[[ "$uid" =~ ^[0-9]+$ ]] || fail "image user is '$user', want a numeric uid (runAsNonRoot can check only a number)"
[ "$uid" -ne 0 ] || fail "image user is '$user', want a non-root uid"
[ "$entrypoint" = '["/outbox-relay"]' ] || fail "entrypoint is $entrypoint, want [\"/outbox-relay\"]"
[ "$revision" = "$(git rev-parse HEAD)" ] || fail "revision label is '$revision', want HEAD $(git rev-parse HEAD)"
[[ "$version" == v* ]] || fail "version label is '$version', want a module version (v...)"

root=$(mktemp -d)
container=
cleanup() {
  [ -z "$container" ] || podman rm --force "$container" >/dev/null 2>&1 || true
  rm -rf "$root"
}
trap cleanup EXIT
container=$(podman create "$ref")
podman export "$container" | tar -x -C "$root"

[ -s "$root/etc/ssl/certs/ca-certificates.crt" ] || fail "no /etc/ssl/certs/ca-certificates.crt in the image (KAFKA_TLS needs it)"
for bin in outbox-relay outboxkit; do
  [ -x "$root/$bin" ] || fail "/$bin is missing or not executable in the image"
  desc=$(file -b "$root/$bin")
  [[ "$desc" == ELF* ]] || fail "/$bin is not an ELF binary: $desc"
  if [[ "$desc" == *interpreter* || "$desc" == *"dynamically linked"* ]]; then
    fail "/$bin is not static (CGO_ENABLED=0 expected): $desc"
  fi
done

# The binaries run on the host: both print the version of the label and
# the commit of the revision label.
check_version() {
  local name=$1 out
  shift
  out=$("$@") || fail "$* exited $?"
  [ "$(head -n 1 <<<"$out")" = "$name $version" ] ||
    fail "$* printed '$(head -n 1 <<<"$out")', want '$name $version'"
  grep -q "^commit $revision " <<<"$out" || fail "$* does not print commit $revision: $out"
}
check_version outbox-relay "$root/outbox-relay" -version
check_version outboxkit "$root/outboxkit" version

echo "image-test: ok: $ref, user $user, entrypoint $entrypoint, version $version, static binaries"
