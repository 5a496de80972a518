#!/usr/bin/env bash
# Builds the role images of the Dockerfile, tagged with the package version from pyproject.toml:
#   scripts/build-images.sh [docker build flags...]     e.g. --build-arg BASE_IMAGE=...
# CHORUS_IMAGE_REGISTRY (default ghcr.io/chorus-mesh) and CHORUS_IMAGE_TARGETS (default
# "control model-cpu model-gpu") change what is built; each tag is printed once built.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
registry=${CHORUS_IMAGE_REGISTRY:-ghcr.io/chorus-mesh}
for target in ${CHORUS_IMAGE_TARGETS:-control model-cpu model-gpu demo}; do
  tag="$registry/chorus-$target:$version"
  docker build --target "$target" -t "$tag" "$@" . >&2
  echo "$tag"
done
