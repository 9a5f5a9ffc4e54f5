#!/usr/bin/env bash
# Fails when git tracks build output: an executable binary (ELF, Mach-O, PE)
# or any file over 1 MiB. Every `go get` of the module downloads what is
# tracked, so neither belongs in the repository. Run by `make check`.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=$((1 << 20))
bad=0
while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue
  size=$(stat -c %s "$f")
  if [ "$size" -gt "$limit" ]; then
    echo "check: $f is $size bytes, over 1 MiB: keep build output and large data out of git" >&2
    bad=1
  fi
  magic=$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')
  case "$magic" in
  7f454c46 | cffaedfe | cefaedfe | feedface | feedfacf | 4d5a*)
    echo "check: $f is an executable binary: build output does not belong in git (see .gitignore)" >&2
    bad=1
    ;;
  esac
done < <(git ls-files -z)
exit "$bad"
