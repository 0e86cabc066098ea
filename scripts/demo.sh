#!/usr/bin/env bash
# The whole diluvian workflow on synthetic data, from the CLI, on a CPU:
# synthesize two EM-like volumes, train a small model on one, segment the other
# densely, score the segmentation against its ground truth, and draw a picture.
# Usage: scripts/demo.sh OUTPUT_DIR   (make demo runs it in demo_output/)
# DEMO_TRAIN_MINUTES (default 3) and DEMO_SEED (the training and fill -rs, default 1) change the run.
set -euo pipefail
out=${1:-demo_output}
diluvian=${DILUVIAN:-diluvian}
mkdir -p "$out"
start=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - start )) s] $*"; }

step "1/6 synthesize a training volume (64 x 128 x 128 voxels) and a test volume (32 x 64 x 64), 20 nm"
$diluvian synthesize "$out/train.h5" --shape 64 128 128 --seed 0 --resolution 20 20 20
$diluvian synthesize "$out/test.h5" --shape 32 64 64 --seed 1 --resolution 20 20 20
for name in train test; do
    cat > "$out/$name.toml" <<TOML
[[dataset]]
name = "$name"
hdf5_file = "$name.h5"
image_dataset = "volumes/raw"
label_dataset = "volumes/labels/neuron_ids"
TOML
done

step "2/6 train the small CPU model (config cpu_small) on the training volume for ${DEMO_TRAIN_MINUTES:=3} minutes"
$diluvian train -c cpu_small -v "$out/train.toml" -mo "$out/model" -rs "${DEMO_SEED:=1}" --max-minutes "$DEMO_TRAIN_MINUTES"

step "3/6 fill the test volume densely with the trained model"
$diluvian fill -m "$out/model.pt" -v "$out/test.toml" "$out/segmentation_{volume}" -rs "$DEMO_SEED"

step "4/6 evaluate the segmentation against the test volume's ground truth (CREMI metrics)"
$diluvian evaluate -v "$out/test.toml" -v "$out/segmentation_test.toml" \
    test "test segmentation" --json "$out/scores.json"

step "5/6 draw orthogonal slices of the segmentation"
$diluvian view -v "$out/test.toml" -v "$out/segmentation_test.toml" test \
    --segmentation "test segmentation" --snapshot "$out/segmentation.png"

step "6/6 the same test volume by a seeded watershed tuned on the training volume, beside diluvian"
"${PYTHON:-$(dirname "$(command -v "$diluvian")")/python}" - "$out" <<'PY'
import json, sys
import h5py
from diluvian.baselines import tune_baseline
from diluvian.evaluate import evaluate_volumes

out = sys.argv[1]
def load(name):
    with h5py.File(f"{out}/{name}.h5", "r") as f:
        return f["volumes/raw"][:], f["volumes/labels/neuron_ids"][:]
def scores(gt, seg):
    return evaluate_volumes(gt, seg, border_threshold_nm=25.0, resolution=(20.0,) * 3, progress=False)
(train_raw, train_gt), (test_raw, test_gt) = load("train"), load("test")
tuned = tune_baseline("watershed", train_raw, lambda seg: scores(train_gt, seg).cremi_score)
ws = scores(test_gt, tuned.apply(test_raw)).to_dict()
ours = json.load(open(f"{out}/scores.json"))
ours = ours.get("scores", ours)
print(f"{'':28s} {'VOI split':>9s} {'VOI merge':>9s} {'ARAND':>7s} {'CREMI':>7s}")
for name, s in (("diluvian", ours), (f"watershed {tuned.params}", ws)):
    print(f"{name[:28]:28s} {s['voi_split']:9.3f} {s['voi_merge']:9.3f} {s['adapted_rand_error']:7.3f} "
          f"{s['cremi_score']:7.3f}")
PY

echo
echo "demo finished in $(( $(date +%s) - start )) s; outputs in $out/:"
ls "$out"
