#!/usr/bin/env bash
# Runs every test of the project. Installs the system tools the end-to-end tests use
# (curl drives the Stratos-compatible API as Stratos' own scripts do) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
{ [ -x /usr/bin/kill ] || [ -x /bin/kill ]; } || missing+=(procps)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing: ${missing[*]} (install them, or run this script as root on Debian to have it done)" >&2
    exit 1
  fi
fi

if cargo nextest --version >/dev/null 2>&1; then
  # The project has no doc tests, which nextest would not run anyway.
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
