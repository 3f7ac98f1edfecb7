#!/bin/sh
# Quick start: book a simulated fortnight of meetings, exactly once.
set -eu
cd "$(dirname "$0")/.."
sh scripts/bootstrap.sh
exec .venv/bin/syncd demo "$@"
