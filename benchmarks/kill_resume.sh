#!/bin/bash
# kill -9 a smoke training run in the middle of epoch 3, then --resume it
# usage: PYTHON=.venv/bin/python benchmarks/kill_resume.sh [WORK_DIR]   (results: docs/reliability.md §5)
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD NO_ALBUMENTATIONS_UPDATE=1 TF_CPP_MIN_LOG_LEVEL=2
PY=${PYTHON:-.venv/bin/python}
T=${1:-/tmp/kill_resume}
mkdir -p $T; rm -rf $T/run
SETS="--set data.synthetic.cache_dir=$T/syn --set data.cache_dir=$T/cache --set train.steps_per_epoch=4 --set train.epochs=5"
$PY tools/train.py --config smoke.yaml $SETS --run-dir $T/run --quiet > $T/first.out 2> $T/first.err &
PID=$!
while [ "$(cat $T/run/results.csv 2>/dev/null | grep -c .)" -lt 3 ]; do sleep 0.2; done   # header + 2 epochs
sleep 1.5
kill -9 $PID; wait $PID; echo "killed: exit $?"
echo "rows after kill:"; cut -d, -f1,2 $T/run/results.csv
ls $T/run/checkpoints/last
$PY tools/train.py --resume --run-dir $T/run --quiet > $T/second.out 2> $T/second.err; echo "resume exit $?"
grep -i "warning\|resum" $T/second.err | head
echo "rows after resume:"; cut -d, -f1,2 $T/run/results.csv
