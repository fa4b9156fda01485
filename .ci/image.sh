#!/usr/bin/env bash
# Builds the image from the Dockerfile where a container engine runs, and
# checks what it ships: one binary, stripped of its debug sections, that
# runs as uid 65532 and answers `--version`. Where no engine runs (our
# development machines: a docker client without a daemon, and no route to
# Docker Hub or gcr.io for the base images) it says so and stops: there is
# nothing it could check without building.
set -euo pipefail
cd "$(dirname "$0")/.."

engine=""
for candidate in docker podman; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" info >/dev/null 2>&1; then
    engine=$candidate
    break
  fi
done
if [ -z "$engine" ]; then
  echo "image: not built: no container engine answers here (docker info / podman info failed)"
  exit 0
fi

tag="tractor-ci:$(git rev-parse --short HEAD 2>/dev/null || echo local)"
echo "image: $engine build -t $tag ."
DOCKER_BUILDKIT=1 "$engine" build -t "$tag" .

work=$(mktemp -d)
trap 'rm -rf "$work"; "$engine" rm -f tractor-ci-copy >/dev/null 2>&1 || true' EXIT
"$engine" create --name tractor-ci-copy "$tag" >/dev/null
"$engine" cp tractor-ci-copy:/usr/local/bin/tractor "$work/tractor"
if readelf -S "$work/tractor" | grep -q '\.debug_'; then
  echo "image: the binary in $tag keeps .debug_* sections: not stripped" >&2
  exit 1
fi
user=$("$engine" image inspect --format '{{.Config.User}}' "$tag")
[ "$user" = "65532:65532" ] || { echo "image: runs as $user, not 65532:65532" >&2; exit 1; }
"$engine" run --rm "$tag" --version
echo "image: ok: $tag, binary $(du -h "$work/tractor" | cut -f1) without debug sections, user $user"
