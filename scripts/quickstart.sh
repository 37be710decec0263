#!/usr/bin/env bash
# Quick start: install what is missing, build the default osbuild.config.ts, show the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
./bin/osbuild.js run "$@"
echo
echo "The build graph (osbuild graph --format mermaid):"
./bin/osbuild.js graph --format mermaid
echo "Outputs in ./out:"
ls -la out
