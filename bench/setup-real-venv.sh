#!/usr/bin/env bash
# Creates the venv of `just bench-real`'s dataset builder (bench/make_real.py) at $VENV
# (default runs/bench-real/venv) from bench/requirements-real.txt. Idempotent: does nothing
# when the venv already imports the pinned defect-synthesis. Needs python3 with the venv
# module and PyPI; about 70 MB download.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv=${VENV:-"$here/../runs/bench-real/venv"}
req="$here/requirements-real.txt"
want="$(sed -n 's/^defect-synthesis==//p' "$req")"

check() {
    [ -x "$venv/bin/python" ] &&
        "$venv/bin/python" - "$want" <<'PY' 2>/dev/null
import sys
import cv2, numpy, PIL
import defect_synthesis
assert defect_synthesis.__version__ == sys.argv[1], defect_synthesis.__version__
defect_synthesis.ScratchGenerator().apply(numpy.zeros((64, 64, 3), numpy.uint8))
PY
}

if check; then
    echo "bench-real venv ready ($venv, defect-synthesis $want)" >&2
    exit 0
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "setup-real-venv: python3 with the venv module is needed (Debian: apt-get install python3-venv)" >&2
    exit 1
fi
echo "setup-real-venv: creating $venv (defect-synthesis $want)" >&2
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$req"
if ! check; then
    echo "setup-real-venv: defect-synthesis does not work in $venv" >&2
    "$venv/bin/python" -c 'import defect_synthesis' || true
    exit 1
fi
echo "bench-real venv ready ($venv, defect-synthesis $want)" >&2
