#!/usr/bin/env bash
# GPU check: train CIFAR-10 on CUDA with --precision auto under torchrun, then predict and
# explain with the trained run; prints throughput and accuracy. Under 5 minutes on one GPU.
#
#   benchmarks/gpu_check.sh [DATA] [options]
#
# DATA      a folder with train/ and test/ class folders (default: ~/data/cifar10). When it
#           has no train/, ../shared/data/cifar10-jpg.tar.gz (or shared/data/... or .devdata/...
#           inside the checkout) is unpacked next to it first.
# options   --minutes M     training budget (--time-limit; default 2.5)
#           --device D      cuda (default) or cpu, to try the script on a machine without a GPU
#           --subset N      train on N images per class (and N/5 test): 500 for a CPU try of the
#                           path a GPU takes (the airbench recipe wants >= 5,000 images; 50 gets vgg_bn)
#           --out DIR       where the run and its files go (default: a new folder in /tmp)
#           --dry-run       print the commands, run nothing
# env       PYTHON          the interpreter with cnnlab installed (default: .venv/bin/python,
#                           else python3)
#
# Output: the commands as they run, then a summary block:
#   train img/s (median epoch), epochs, val and test accuracy, wall seconds of each step.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DATA="" MINUTES=2.5 DEVICE=cuda SUBSET=0 OUT="" DRY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) MINUTES="$2"; shift 2;;
    --device) DEVICE="$2"; shift 2;;
    --subset) SUBSET="$2"; shift 2;;
    --out) OUT="$2"; shift 2;;
    --dry-run) DRY=1; shift;;
    -h|--help) awk 'NR>1 && /^#/{sub(/^# ?/, ""); print; next} NR>1{exit}' "$0"; exit 0;;
    -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2;;
    *) DATA="$1"; shift;;
  esac
done
DATA="${DATA:-$HOME/data/cifar10}"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="$(command -v python3)"; fi
fi
OUT="${OUT:-$(mktemp -d /tmp/gpu-check.XXXXXX)}"
mkdir -p "$OUT"

run() {  # print a command, then run it (unless --dry-run), timing it
  echo "+ $*" >&2
  if [[ $DRY == 1 ]]; then return 0; fi
  local t0=$SECONDS
  "$@"
  echo "  ($((SECONDS - t0)) s)" >&2
}

# 1. the data: unpack CIFAR-10 when the folder is not there
if [[ ! -d "$DATA/train" ]]; then
  TARBALL=""
  for t in "$ROOT/../shared/data/cifar10-jpg.tar.gz" "$ROOT/shared/data/cifar10-jpg.tar.gz" \
           "$ROOT/.devdata/cifar10-jpg.tar.gz"; do  # .devdata: what gpu_device.sh prepare stages
    [[ -f "$t" ]] && { TARBALL="$t"; break; }
  done
  [[ -n "$TARBALL" ]] || { echo "gpu_check: $DATA has no train/ and no cifar10-jpg.tar.gz was found" >&2; exit 2; }
  PARENT="$(dirname "$DATA")"
  run mkdir -p "$PARENT"
  run tar -xzf "$TARBALL" -C "$PARENT"   # writes PARENT/cifar10/{train,test}
  [[ $DRY == 1 || -d "$DATA/train" ]] || DATA="$PARENT/cifar10"
fi

# 2. a subset (a quick try on a CPU): symlinks to N images per class
if [[ "$SUBSET" -gt 0 ]]; then
  SUB="$OUT/data"
  if [[ $DRY == 0 ]]; then
    for split in train test; do
      n=$SUBSET; [[ $split == test ]] && n=$(( (SUBSET + 4) / 5 ))
      for cls in "$DATA/$split"/*/; do
        c="$(basename "$cls")"; mkdir -p "$SUB/$split/$c"
        mapfile -t files < <(find "$cls" -maxdepth 1 -type f | sort | head -n "$n")  # no pipefail on SIGPIPE
        ln -sf "${files[@]}" "$SUB/$split/$c/"
      done
    done
  fi
  echo "+ subset: $SUBSET per class in $SUB" >&2
  DATA="$SUB"
fi

# 3. what the machine has
run "$PYTHON" -m cnnlab doctor
if command -v nvidia-smi >/dev/null; then run nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv; fi

# 4. train under torchrun (one process; the same command scales to --nproc_per_node=N)
T0=$SECONDS
run "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 -m cnnlab train "$DATA" \
  --device "$DEVICE" --precision auto --time-limit "$MINUTES" --out "$OUT/runs" --name gpu-check \
  --cache-dir "$OUT/cache"
TRAIN_S=$((SECONDS - T0))
RUN="$OUT/runs/gpu-check"

# 5. predict a few test images and explain one
T0=$SECONDS
FIRST_CLASS="$(ls "$DATA/test" 2>/dev/null | head -n1 || true)"
run "$PYTHON" -m cnnlab predict "$RUN" "$DATA/test/${FIRST_CLASS:-airplane}" --device "$DEVICE" --out "$OUT/predictions.csv"
PREDICT_S=$((SECONDS - T0))
T0=$SECONDS
run "$PYTHON" -m cnnlab explain "$RUN" --out "$OUT/explainer.html"
EXPLAIN_S=$((SECONDS - T0))
[[ $DRY == 1 ]] && { echo "dry run: nothing was run (output would go to $OUT)"; exit 0; }

# 6. the figures
"$PYTHON" - "$RUN" "$OUT" "$TRAIN_S" "$PREDICT_S" "$EXPLAIN_S" "${FIRST_CLASS:-airplane}" <<'EOF'
import csv, json, statistics, sys
from pathlib import Path
import yaml
run, out, train_s, predict_s, explain_s, first = Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:]
rows = list(csv.DictReader((run / "history.csv").open()))
cfg = yaml.safe_load((run / "config.yaml").read_text())
test = json.loads((run / "eval" / "test" / "metrics.json").read_text()) if (run / "eval" / "test" / "metrics.json").is_file() else {}
preds = list(csv.DictReader((out / "predictions.csv").open()))
right = sum(1 for p in preds if p.get("label") == first)
rates = [float(r["images_per_s"]) for r in rows]
print("gpu_check summary")
print(f"  device        {cfg['device']} {cfg['precision']} channels_last={cfg['channels_last']} batch {cfg['batch_size']} img {cfg['img_size']}")
print(f"  model         {json.dumps(cfg['model']) if isinstance(cfg['model'], dict) else cfg['model']}")
print(f"  epochs        {len(rows)} in a {cfg['time_limit']} min budget")
print(f"  train img/s   {statistics.median(rates):,.0f} (median epoch; max {max(rates):,.0f})")
val = rows[-1].get("val_accuracy") or ""  # empty where the run keeps no validation split (the airbench recipe)
print(f"  val accuracy  {float(val):.4f}" if val else "  val accuracy  none (no validation split: all the training images trained)")
print(f"  test accuracy {test.get('accuracy', float('nan')):.4f}")
print(f"  predict       {right}/{len(preds)} of test/{first} called {first}")
print(f"  explain       {out / 'explainer.html'} ({(out / 'explainer.html').stat().st_size // 1024} KB)")
print(f"  wall s        train {train_s}, predict {predict_s}, explain {explain_s}")
EOF
