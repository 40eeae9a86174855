#!/bin/sh
# Re-resolve requirements.txt, the lock the Dockerfile installs from: pyproject.toml's dependencies and its build
# backend, each pinned with the hashes of every file PyPI has for it (docs/deploy.md#the-lock-file). Keeps the
# pins that still fit; add --upgrade for the newest releases, or --upgrade-package NAME for one.
set -eu
cd "$(dirname "$0")/.."
python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' |
  uv pip compile pyproject.toml - --universal --python-version 3.11 --generate-hashes \
    --custom-compile-command "deploy/lock.sh" --output-file requirements.txt "$@"
