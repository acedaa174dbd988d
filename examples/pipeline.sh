#!/usr/bin/env bash
# The whole realsr pipeline, from a capture folder to a scored model, as one script.
#
#   examples/pipeline.sh CAPTURE_DIR OUT [SCALE] [TRAIN_MINUTES]
#
# CAPTURE_DIR: one folder per scene (see README, "Capture folders"); OUT: created. Environment:
#   REALSR      the command to run (default: realsr; e.g. "python -m realsr_tools")
#   TEST_DATA   held-out pairs to score on (an align output or an HR/+LR/ folder); default: OUT/aligned, which
#               scores on the training scenes and so only shows that the steps ran
#   CROP_SIZE   LR patch side (default: the AIM 2020 size, 192 at x4; small captures need less)
# Every stage resumes when the script is run again with the same OUT.
set -euo pipefail
captures=${1:?usage: pipeline.sh CAPTURE_DIR OUT [SCALE] [TRAIN_MINUTES]}
out=${2:?usage: pipeline.sh CAPTURE_DIR OUT [SCALE] [TRAIN_MINUTES]}
scale=${3:-4}
minutes=${4:-12}
read -r -a realsr <<< "${REALSR:-realsr}"

"${realsr[@]}" inspect "$captures"
"${realsr[@]}" -q align "$captures" --out "$out/aligned" --scales "$scale" --preview
"${realsr[@]}" -q crop "$out/aligned" --out "$out/patches" --scale "$scale" ${CROP_SIZE:+--size "$CROP_SIZE"}
"${realsr[@]}" -q wash "$out/patches" --out "$out/washed" --min-psnr 29
"${realsr[@]}" -q report "$out/washed"                       # open $out/washed/report/index.html
"${realsr[@]}" -q lmdb "$out/washed" --out "$out/lmdb"        # for BasicSR: see basicsr_train_lmdb.yml
# A run that saved last.pt continues; one that stopped before its first checkpoint starts over.
if [ -f "$out/run/last.pt" ]; then again=--resume; else again=--overwrite; fi
"${realsr[@]}" -q train "$out/washed" --out "$out/run" --scale "$scale" --max-minutes "$minutes" "$again"
test_data=${TEST_DATA:-$out/aligned}
"${realsr[@]}" -q score --model "$out/run/best.pt" --data "$test_data" --scale "$scale" --out "$out/scores"
"${realsr[@]}" -q score --bicubic --data "$test_data" --scale "$scale" --out "$out/bicubic_scores"
echo "model: $out/scores/summary.json; bicubic: $out/bicubic_scores/summary.json"
