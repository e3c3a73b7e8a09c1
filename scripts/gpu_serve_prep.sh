#!/usr/bin/env bash
# Packs what benchmarks/gpu_serve.py needs beside the repository into .gpu/ (git-ignored), to be
# carried to the GPU machine, which has no network and no ../shared:
#   .gpu/fixture/*.xz  the reference tiny checkpoint, golden.json and the real tokenizer (its
#                      slow files: vocab.json + merges.txt give the same ids as tokenizer.json,
#                      tests/test_golden.py checks that, at a third of the size), xz-compressed
#   .gpu/wheels/       the server's packages missing there (pygls, lsprotocol, cattrs, attrs,
#                      tree-sitter, tree-sitter-python) for Python 3.12 x86-64
# Then, on the GPU machine: bash scripts/gpu_serve_check.sh   (carry: .gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
FIXTURE=${1:-../shared/fixtures/coda-reference-tiny}
rm -rf .gpu && mkdir -p .gpu/fixture .gpu/wheels
for f in config.json golden.json model.safetensors vocab.json merges.txt added_tokens.json \
         tokenizer_config.json special_tokens_map.json generation_config.json; do
  xz -6 -T1 -c "$FIXTURE/$f" > ".gpu/fixture/$f.xz"
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels \
  pygls==2.1.1 lsprotocol==2025.0.0 cattrs==26.2.1 attrs==26.1.0 tree-sitter==0.26.1 \
  tree-sitter-python==0.25.0
du -sh .gpu; echo "travels: $(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1) bytes tracked + .gpu"
