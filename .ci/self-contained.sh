#!/usr/bin/env bash
# Fails when a tracked file reaches outside the repository: the sibling `shared/` folder of the
# development machines (its contents are copied into tests/fixtures), or an absolute path of a
# workstation. A clone alone must build, test and run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
pattern='(\.\./)+shared/|shared/spec|/work/main|/work/shared'
if hits=$(git grep -nIE "$pattern" -- . ':!.ci/self-contained.sh'); then
    echo "These lines reach outside the repository (use tests/fixtures/ instead):" >&2
    echo "$hits" >&2
    exit 1
fi
echo "self-contained: no path leaves the repository"
