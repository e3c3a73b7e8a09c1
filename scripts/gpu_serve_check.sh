#!/usr/bin/env bash
# Issue 14's GPU check, one command on the GPU machine (about 80 s on an H100 without the
# compiled sections, which add torch.compile's compilation twice; give the run 480 s):
#   run(command="bash scripts/gpu_serve_check.sh", carry=[".gpu"], timeout_s=480)
# (.gpu/ from scripts/gpu_serve_prep.sh). --budget (default 300 s) skips sections that would
# start later; --sections picks them (e.g. --sections compiled,lsp_compiled).
# Installs the carried wheels, unpacks the fixture, runs benchmarks/gpu_serve.py; the log and
# gpu_serve.json land in $OUT. Extra arguments go to gpu_serve.py (e.g. --tiny --device cpu
# to rehearse on a CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}; export OUT
PY=${PYTHON:-python3}
if ls .gpu/wheels/*.whl >/dev/null 2>&1 && ! $PY -c "import pygls, tree_sitter_python" 2>/dev/null
then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/coda-site .gpu/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/coda-site
fi
FIXTURE=$(mktemp -d)
$PY - "$FIXTURE" .gpu/fixture/*.xz <<'UNPACK' || exit 1
import lzma, pathlib, sys
for packed in map(pathlib.Path, sys.argv[2:]):
    (pathlib.Path(sys.argv[1]) / packed.stem).write_bytes(lzma.decompress(packed.read_bytes()))
UNPACK
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
timeout 450 $PY benchmarks/gpu_serve.py --fixture "$FIXTURE" "$@" 2>&1 | tee "$OUT/gpu_serve.log"
