#!/bin/bash
# The Criteo-sample comparison of docs/quality.md: logreg, mlp, wide-deep and dlrm trained on
# train.tsv (7,200 rows), evaluated after every epoch on dev.tsv (409 rows) and, in a second
# identical run (training is deterministic), on test.tsv (391 rows). For each model and seed the
# epoch with the lowest dev logloss is selected and its test metrics reported; 3 seeds.
#
#   scripts/quality-criteo.sh [DATA_DIR] [OUT_DIR]
#
# DATA_DIR defaults to ../shared/data/criteo-kaggle-sample beside the checkout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${1:-$here/../shared/data/criteo-kaggle-sample}"
out="${2:-$here/runs/quality-criteo}"
bin="${REC_DIST_BIN:-$here/.build/release/rec-dist}"
[ -f "$data/train.tsv" ] || { echo "no $data/train.tsv: pass the Criteo sample's directory" >&2; exit 2; }
[ -x "$bin" ] || (cd "$here" && ./launch.sh build)
mkdir -p "$out"
export OPENBLAS_NUM_THREADS=1
# name | flags (logreg's learning rate and the dropout rate were chosen on dev: see docs/quality.md)
cases=(
    "logreg|--model logreg --lr 0.01"
    "mlp|--model mlp"
    "wide-deep|--model wide-deep"
    "dlrm|--model dlrm"
    "wide-deep+dropout|--model wide-deep --dropout 0.3"
    "dlrm+dropout|--model dlrm --dropout 0.3"
)
steps_per_epoch=113   # ceil(7200 / 64)
for c in "${cases[@]}"; do
    name="${c%%|*}"; flags="${c#*|}"
    for seed in 1 2 3; do
        for split in dev test; do
            log="$out/$name-$seed-$split.jsonl"; rm -f "$log"
            # shellcheck disable=SC2086
            "$bin" train --data "$data/train.tsv" --eval "$data/$split.tsv" $flags --epochs 10 --batch-size 64 \
                --eval-every $steps_per_epoch --seed "$seed" --metrics-out "$log" --log-level warning >/dev/null
        done
    done
    echo "trained $name" >&2
done
python3 - "$out" "${cases[@]%%|*}" <<'PY'
import json, statistics as st, sys
out, names = sys.argv[1], sys.argv[2:]
print("| model | epochs chosen on dev (seeds 1, 2, 3) | dev AUC | dev logloss | test AUC (mean ± sd) | test logloss |")
print("|---|---|---|---|---|---|")
for m in names:
    rows = []
    for s in (1, 2, 3):
        dev = [json.loads(l) for l in open(f"{out}/{m}-{s}-dev.jsonl")]
        test = [json.loads(l) for l in open(f"{out}/{m}-{s}-test.jsonl")]
        i = min(range(len(dev)), key=lambda i: dev[i]["logloss"])
        assert dev[i]["step"] == test[i]["step"]
        rows.append((dev[i]["epoch"], dev[i]["auc"], dev[i]["logloss"], test[i]["auc"], test[i]["logloss"]))
    mean = lambda k: st.mean(r[k] for r in rows)
    print(f"| {m} | {', '.join(str(r[0]) for r in rows)} | {mean(1):.4f} | {mean(2):.4f} | "
          f"{mean(3):.4f} ± {st.stdev(r[3] for r in rows):.4f} | {mean(4):.4f} |")
PY
