#!/usr/bin/env bash
# Installs the Python peers the tests run (tests/python/requirements.txt, pinned) into a
# virtual environment at target/python, from PyPI, once: it is rebuilt only when the
# requirements change. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/python
stamp="$venv/.requirements"
if [ -x "$venv/bin/python" ] && cmp -s tests/python/requirements.txt "$stamp"; then
    exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
cp tests/python/requirements.txt "$stamp"
