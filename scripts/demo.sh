#!/usr/bin/env bash
# The whole diluvian workflow on synthetic data, from the CLI, on a CPU:
# synthesize two EM-like volumes, train a small model on one, segment the other
# densely, score the segmentation against its ground truth, and draw a picture.
# Usage: scripts/demo.sh OUTPUT_DIR   (make demo runs it in demo_output/)
set -euo pipefail
out=${1:-demo_output}
diluvian=${DILUVIAN:-diluvian}
mkdir -p "$out"
start=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - start )) s] $*"; }

step "1/5 synthesize a training volume (64 x 128 x 128 voxels) and a test volume (32 x 64 x 64), 20 nm"
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

step "2/5 train the small CPU model (config cpu_small) on the training volume for ${DEMO_TRAIN_MINUTES:=3} minutes"
$diluvian train -c cpu_small -v "$out/train.toml" -mo "$out/model" -rs 1 --max-minutes "$DEMO_TRAIN_MINUTES"

step "3/5 fill the test volume densely with the trained model"
$diluvian fill -m "$out/model.pt" -v "$out/test.toml" "$out/segmentation_{volume}" -rs 1

step "4/5 evaluate the segmentation against the test volume's ground truth (CREMI metrics)"
$diluvian evaluate -v "$out/test.toml" -v "$out/segmentation_test.toml" \
    test "test segmentation" --json "$out/scores.json"

step "5/5 draw orthogonal slices of the segmentation"
$diluvian view -v "$out/test.toml" -v "$out/segmentation_test.toml" test \
    --segmentation "test segmentation" --snapshot "$out/segmentation.png"

echo
echo "demo finished in $(( $(date +%s) - start )) s; outputs in $out/:"
ls "$out"
