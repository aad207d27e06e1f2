#!/usr/bin/env bash
# Creates bench/.venv with the PyTorch CPU reference used by `just bench-train`.
# Idempotent: does nothing when the venv already imports the pinned torch.
# Needs python3 (with the venv module) and PyPI; about 2.4 GB download, 4 GB on disk.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
req="$here/requirements.txt"
want="$(sed -n 's/^torch==//p' "$req")"

check() {
    [ -x "$venv/bin/python" ] &&
        "$venv/bin/python" - "$want" <<'PY' 2>/dev/null
import sys
import numpy
import torch
assert torch.__version__.split("+")[0] == sys.argv[1], torch.__version__
torch.nn.Conv2d(1, 2, 3)(torch.zeros(1, 1, 4, 4)).sum().backward()
PY
}

if check; then
    echo "bench/.venv ready (torch $want)" >&2
    exit 0
fi

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "setup-venv: python3 with the venv module is needed (Debian: apt-get install python3-venv)" >&2
    exit 1
fi

echo "setup-venv: creating $venv (torch $want, CPU use; ~2.4 GB download)" >&2
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$req"

if ! check; then
    echo "setup-venv: torch does not import in $venv" >&2
    "$venv/bin/python" -c 'import torch' || true
    exit 1
fi
echo "bench/.venv ready (torch $want)" >&2
