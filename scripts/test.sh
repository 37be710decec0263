#!/usr/bin/env bash
# Installs what is missing, then runs the whole test suite (type checks included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsc -p test/tsconfig.json --noEmit # the sources and the tests
npx vitest run "$@"
