#!/usr/bin/env bash
# Creates tests/.venv-ort with onnxruntime and numpy from PyPI (~20 MB download), the
# reference runtime the export tests and `just bench-infer` compare tract against.
# Idempotent: does nothing when the venv already imports the pinned versions.
# Prints the venv's python path on stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$(dirname "$here")/.venv-ort"
ORT=1.31.1
NUMPY=2.4.6

check() {
    [ -x "$venv/bin/python" ] &&
        "$venv/bin/python" - "$ORT" <<'PY' 2>/dev/null
import sys
import numpy
import onnxruntime
assert onnxruntime.__version__ == sys.argv[1], onnxruntime.__version__
PY
}

if ! check; then
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        echo "ort-venv: python3 with the venv module is needed (Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
    echo "ort-venv: creating $venv (onnxruntime $ORT, numpy $NUMPY)" >&2
    # A lock directory: parallel tests must not build the venv twice at once.
    lock="$venv.lock"
    until mkdir "$lock" 2>/dev/null; do sleep 1; done
    trap 'rmdir "$lock"' EXIT
    if ! check; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "onnxruntime==$ORT" "numpy==$NUMPY" >&2
    fi
    if ! check; then
        echo "ort-venv: onnxruntime does not import in $venv" >&2
        exit 1
    fi
fi
echo "$venv/bin/python"
