#!/bin/sh
# Create .venv (Python 3.11+) with syncd and its test tools, once; later runs reuse it.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/syncd ] || [ pyproject.toml -nt .venv/.installed ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        echo "syncd needs Python 3.11 or newer (found $("$PYTHON" --version))" >&2
        exit 1
    }
    [ -d .venv ] || "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[test]'
    touch .venv/.installed
fi
