#!/bin/sh
# Quick start: run the whole test suite (PostgreSQL tests start a private server).
set -eu
cd "$(dirname "$0")/.."
sh scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
