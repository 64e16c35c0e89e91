#!/usr/bin/env bash
# The GPU check on a remote GPU machine, in two halves.
#
#   benchmarks/gpu_device.sh prepare      on this machine, once: what the GPU machine lacks, into
#                                         git-ignored folders copied there with the checkout:
#                                         .whl/     pydantic and its needs as cp312 wheels
#                                                   (the GPU machine has torch, numpy, Pillow,
#                                                   PyYAML, safetensors, rich, matplotlib,
#                                                   scikit-learn, h5py and jinja2, not pydantic)
#                                         .devdata/ the CIFAR-10 JPEG tarball of ../shared/data
#   benchmarks/gpu_device.sh run [opts]   on the GPU machine, in a copy of the checkout with .whl/ and .devdata/:
#                                         installs the wheels when pydantic is missing, runs
#                                         benchmarks/gpu_check.sh (it unpacks CIFAR-10) and
#                                         benchmarks/bench_precision.py --device cuda, bench_feed.py
#                                         (the batch from pageable vs pinned host memory; then once more
#                                         for airbench with --compile: its step compiled, and the
#                                         compile's seconds), and copies the logs and the run's
#                                         config/history/metrics to $OUT (a folder whose files come back).
#                                         opts go to gpu_check.sh (default: --minutes 2.5).
#
# On the GPU machine:  OUT=/path/to/out bash benchmarks/gpu_device.sh run   (its timeouts add up to 590 s)
# A try here on the CPU:  PYTHON=.venv/bin/python OUT=/tmp/o benchmarks/gpu_device.sh run --device cpu --subset 500 --minutes 0.5
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

case "${1:-}" in
  prepare)
    for d in /.whl/ /.devdata/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
    mkdir -p .whl .devdata
    plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
      -d .whl pydantic || exit 1
    core="$(unzip -p .whl/pydantic-*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core==\([0-9.]*\).*/\1/p')"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
      -d .whl "pydantic-core==$core" annotated-types typing-inspection typing-extensions || exit 1
    cp ../shared/data/cifar10-jpg.tar.gz .devdata/ || exit 1
    du -sh .whl .devdata
    ;;
  run)
    shift
    OUT="${OUT:?set OUT (the folder for the logs and the run files)}"
    PYTHON="${PYTHON:-python3}"
    export PYTHONUNBUFFERED=1
    if ! "$PYTHON" -c "import pydantic" 2>/dev/null; then
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
      export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHON
    DATA="${DATA:-$HOME/data/cifar10}"  # gpu_check.sh unpacks .devdata's tarball there when it is missing
    if command -v nvidia-smi >/dev/null; then (nvidia-smi dmon -s u -d 5 > "$OUT/dmon.log" 2>&1 &); fi
    WORK="$(mktemp -d /tmp/gpu-device.XXXXXX)"
    [[ $# -gt 0 ]] || set -- --minutes 2.5
    timeout 300 bash benchmarks/gpu_check.sh "$DATA" --out "$WORK" "$@" > "$OUT/gpu_check.log" 2>&1
    echo "gpu_check rc=$?"
    grep -v '^  File \|^    ' "$OUT/gpu_check.log" | tail -40
    R="$WORK/runs/gpu-check"
    for f in config.yaml history.csv; do [[ -f "$R/$f" ]] && cp "$R/$f" "$OUT/"; done
    [[ -f "$R/eval/test/metrics.json" ]] && cp "$R/eval/test/metrics.json" "$OUT/test_metrics.json"
    dev=cuda; [[ " $* " == *" --device cpu "* ]] && dev=cpu
    timeout 100 "$PYTHON" benchmarks/bench_precision.py --device "$dev" --batch 256 --sizes 32,64,128 --steps 10 \
      > "$OUT/bench_precision.log" 2>&1
    echo "bench_precision rc=$?"
    tail -30 "$OUT/bench_precision.log"
    # the batch from the host: pageable against pinned memory (cnnlab's), steps in a row
    timeout 60 "$PYTHON" benchmarks/bench_feed.py --device "$dev" > "$OUT/bench_feed.log" 2>&1
    echo "bench_feed rc=$?"
    tail -6 "$OUT/bench_feed.log"
    # last, so that a slow compile loses nothing above: does --compile pay on this GPU?
    timeout 130 "$PYTHON" benchmarks/bench_precision.py --device "$dev" --models airbench --sizes 32 --batch 1024 \
      --steps 10 --compile > "$OUT/bench_compile.log" 2>&1
    echo "bench_compile rc=$?"
    tail -8 "$OUT/bench_compile.log"
    ;;
  *) awk 'NR>1 && /^#/{sub(/^# ?/, ""); print; next} NR>1{exit}' "$0"; exit 2;;
esac
