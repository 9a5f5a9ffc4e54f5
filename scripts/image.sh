#!/usr/bin/env bash
# Builds the container image of deploy/container/Containerfile with podman:
# outbox-relay and outboxkit built here, static, then copied onto scratch.
# No registry is involved (none is reachable from CI), and nothing is pushed.
#
#   scripts/image.sh           build; print the image's name on the last line
#
# The image holds the commit checked out (HEAD), never uncommitted changes:
# the binaries are built in a fresh clone of HEAD, so that the Go toolchain
# records the module version and commit that `outbox-relay -version` and
# `outboxkit version` print (internal/buildinfo). Building in place would
# not do: go stamps VCS information only where .git is a directory, and in
# a git worktree it is a file, leaving "(devel)" and "commit unknown".
#
# IMAGE (default localhost/outboxkit/outbox-relay) names the image; it is
# tagged with the module version and "latest". The binaries and the build
# context go to bin/image (ignored by git). podman is installed with apt-get
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${IMAGE:-localhost/outboxkit/outbox-relay}
ctx=bin/image
go=${GO:-go}

if ! command -v podman >/dev/null; then
  echo "image: podman missing, installing it with apt-get" >&2
  apt-get install -y podman >/dev/null
fi

if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "image: the work tree has uncommitted changes; the image is built from HEAD without them" >&2
fi
rm -rf "$ctx"
mkdir -p "$ctx"
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
git clone --quiet --shared --no-checkout . "$src"
git -C "$src" checkout --quiet --detach "$(git rev-parse HEAD)"
# -trimpath keeps the clone's path out of the binaries (and lets the build
# cache serve one clone's build to the next); -buildvcs=true overrides a
# GOFLAGS=-buildvcs=false and fails loudly if git cannot be asked.
(cd "$src" && CGO_ENABLED=0 "$go" build -trimpath -buildvcs=true -o "$OLDPWD/$ctx/" ./cmd/outbox-relay ./cmd/outboxkit)

version=$("$go" version -m "$ctx/outbox-relay" | awk '$1 == "mod" { print $3 }')
revision=$("$go" version -m "$ctx/outbox-relay" | awk '$1 == "build" && $2 ~ /^vcs.revision=/ { sub(/^vcs.revision=/, "", $2); print $2 }')
if [ -z "$version" ] || [ "$version" = "(devel)" ] || [ -z "$revision" ]; then
  echo "image: $ctx/outbox-relay has no module version or VCS commit recorded (go version -m: version '$version', commit '$revision')" >&2
  exit 1
fi
cp /etc/ssl/certs/ca-certificates.crt "$ctx/"

tag=${version//+/-} # an image tag allows no "+"
podman build --quiet -f deploy/container/Containerfile \
  --build-arg VERSION="$version" \
  --build-arg REVISION="${revision:-unknown}" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$image:$tag" -t "$image:latest" "$ctx" >/dev/null
echo "image: built $image:$tag ($image:latest), version $version" >&2
echo "$image:$tag"
