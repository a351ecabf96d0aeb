#!/usr/bin/env bash
# GPU check: short training + evaluation on Beauty-shaped synthetic data at the paper's configuration
# (sizes 8..1024, 2 LRU blocks, batch 32, 1024-d text + image features), fp32 then --amp bf16; prints
# step time, peak GPU memory and the metrics JSON; on CUDA also times --compile; kills a run
# mid-epoch and resumes it (on the second GPU when there is one); checks that the LRU recurrence
# stays complex64 under bf16 autocast; measures the per-dataset memory table; with 2+ GPUs also
# runs torchrun.
#
#   bash scripts/gpu_check.sh                 # on a CUDA machine, a few minutes
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_USERS=300 GPU_CHECK_ITEMS=200 GPU_CHECK_SIZES=8,16,32 \
#       GPU_CHECK_FEATURE_DIM=32 GPU_CHECK_EPOCHS=1 GPU_CHECK_MEMORY_DATASETS= \
#       bash scripts/gpu_check.sh             # a CPU smoke test of the script itself (tests/test_gpu_check.py)
#
# Each section runs whatever happened before it (a section that needs the data is skipped when the
# data could not be built) and ends with one line: its name, pass or FAIL, and its log. Results go to
# $OUT (or ./gpu_check_out): logs/<section>.log, summary.json (every section's status and log, then
# every run's step times and test metrics; written even when sections fail), the runs' folders,
# memory.jsonl. The exit status is 1 when any section failed, else 0. The run folders and logs of a
# previous check there are replaced.
set -uo pipefail  # no -e: one failing section must not cost the others (each section runs under -e)
cd "$(dirname "$0")/.."
DEVICE=${GPU_CHECK_DEVICE:-cuda}
USERS=${GPU_CHECK_USERS:-22363}     # Beauty: 22,363 users, 12,101 items, mean length 8.88
ITEMS=${GPU_CHECK_ITEMS:-12101}
EPOCHS=${GPU_CHECK_EPOCHS:-2}
SIZES=${GPU_CHECK_SIZES:-8,16,32,64,128,256,512,1024}   # the paper's
FEATURE_DIM=${GPU_CHECK_FEATURE_DIM:-1024}               # per modality, as bge-large and SigLIP-large
MEMORY_DATASETS=${GPU_CHECK_MEMORY_DATASETS-beauty,clothing,sports,toys}   # empty: skip the memory table
RESULTS=${OUT:-gpu_check_out}
LOGS=$RESULTS/logs
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS"
# train.py refuses a folder that already holds a trained run: start each check from fresh folders.
rm -rf "$RESULTS"/run_* "$RESULTS/resume" "$RESULTS/summary.json" "$RESULTS/memory.jsonl" "$LOGS"
mkdir -p "$LOGS"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline

# ---- sections: each runs in a subshell under -e, its output in logs/<name>.log and on the terminal
NAMES=()
STATUSES=()  # pass, fail or skipped
DETAILS=()   # the exit status of a section that ran, the reason of a skipped one

section() {  # section NAME COMMAND [ARG...]
    local name=$1
    shift
    echo "== $name"
    ( set -euo pipefail; "$@" ) 2>&1 | tee "$LOGS/$name.log" | grep --line-buffered -v -E 'it/s|s/it'
    local code=${PIPESTATUS[0]}
    NAMES+=("$name")
    if [ "$code" -eq 0 ]; then
        STATUSES+=(pass); DETAILS+=(0)
        echo "-- $name: pass (log $LOGS/$name.log)"
    else
        STATUSES+=(fail); DETAILS+=("$code")
        echo "-- $name: FAIL, exit status $code (log $LOGS/$name.log)"
    fi
}

skip() {  # skip NAME REASON (the reason holds no double quote or backslash: it goes into JSON as is)
    NAMES+=("$1"); STATUSES+=(skipped); DETAILS+=("$2")
    echo "-- $1: skipped, $2"
}

passed() {  # passed NAME: whether section NAME ran and passed
    local i
    for i in "${!NAMES[@]}"; do
        [ "${NAMES[$i]}" = "$1" ] && [ "${STATUSES[$i]}" = pass ] && return 0
    done
    return 1
}

check_cuda() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "CUDA is not available: run on a GPU machine or set GPU_CHECK_DEVICE=cpu")'
}

build_data() {
    echo "Beauty-shaped synthetic data: $USERS users, $ITEMS items"
    python - "$WORK/data/beauty_synth" "$USERS" "$ITEMS" "$FEATURE_DIM" <<'EOF'
import json, sys
from pathlib import Path
import numpy as np
from datasets.features import feature_cache_path, save_feature_table
import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda)
folder, users, items, dim = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
folder.mkdir(parents=True)
rng = np.random.default_rng(0)
lengths = 5 + rng.geometric(1.0 / (8.88 - 4), size=users) - 1  # 5-core, mean 8.88 as Beauty
with open(folder / 'sequential_data.txt', 'w') as out:
    for user, n in enumerate(lengths, start=1):
        out.write(' '.join(map(str, [user, *rng.integers(1, items + 1, size=int(n))])) + '\n')
item2id = {f'S{i:06d}': str(i) for i in range(1, items + 1)}
(folder / 'datamaps.json').write_text(json.dumps({'item2id': item2id, 'id2item': {v: k for k, v in item2id.items()}}))
for modality in ('text', 'image'):
    table = rng.standard_normal((items, dim), dtype=np.float32)
    save_feature_table(feature_cache_path(folder, modality, 'synthetic'), table / np.linalg.norm(table, axis=1, keepdims=True), 'synthetic')
EOF
}

COMMON=(--dataset_code beauty_synth --data_root "$WORK/data" --language_encoder synthetic
        --img_encoder synthetic --mrl_hidden_sizes "$SIZES" --lru_num_blocks 2 --device "$DEVICE"
        --no-use_tensorboard --lr 1e-3)

train_run() {  # train_run NAME [OPTION...]: a run folder $RESULTS/run_NAME
    local name=$1
    shift
    python train.py "${COMMON[@]}" --num_epochs "$EPOCHS" "$@" --export_root "$RESULTS/run_$name"
}

gpu_count() {
    python -c 'import torch; print(torch.cuda.device_count())'
}

# Killed in its second epoch, then resumed: on the GPU this restores the CUDA generator from a
# checkpoint read to the CPU; with 2+ GPUs the run moves from cuda:0 to cuda:1.
kill_and_resume() {
    local steps_per_epoch=$(( (USERS + 31) / 32 )) resume_device=$DEVICE killed=0
    if [ "$DEVICE" = cuda ]; then
        resume_device=cuda:0
        if [ "$(gpu_count)" -ge 2 ]; then
            resume_device=cuda:1
        fi
    fi
    echo "killed at step $((steps_per_epoch + 1)) on $DEVICE, resumed on $resume_device"
    # In a subshell of its own, whose "Killed" notice then goes to the log with the rest.
    ( FMRLREC_FAULT=kill_at_step=$((steps_per_epoch + 1)) python train.py "${COMMON[@]}" --num_epochs 2 \
        --export_root "$RESULTS/resume"; exit $? ) > "$LOGS/resume_killed_run.log" 2>&1 || killed=$?
    if [ "$killed" -ne 137 ]; then  # 128 + SIGKILL: the planned kill, not a crash
        tail -20 "$LOGS/resume_killed_run.log"
        echo "the run to be resumed did not die at the planned step (exit status $killed)"
        return 1
    fi
    python train.py --resume "$RESULTS/resume" --device "$resume_device"
}

torchrun_two_gpus() {
    python -m torch.distributed.run --standalone --nproc_per_node=2 train.py "${COMMON[@]}" --num_epochs "$EPOCHS" \
        --amp none --export_root "$RESULTS/run_ddp2"
}

check_complex64() {
    python - "$DEVICE" "$SIZES" "$FEATURE_DIM" <<'EOF'
import sys
import torch
import model.lru as lru
from model.fmrlrec import FMRLRec
device = torch.device(sys.argv[1])
seen = []
scan = lru.parallel_scan
sizes, dim = [int(s) for s in sys.argv[2].split(',')], int(sys.argv[3])


def recording_scan(u, lamb, mask, **options):  # the keywords model/lru.py passes (overwrite=...)
    seen.append((u.dtype, lamb.dtype))
    return scan(u, lamb, mask, **options)


lru.parallel_scan = recording_scan
torch.manual_seed(0)
features = torch.nn.functional.normalize(torch.randn(1001, dim), dim=1)
model = FMRLRec(1000, sizes, features, features, num_blocks=2).to(device)
tokens = torch.randint(1, 1001, (32, 50), device=device)
losses = {}
for amp in ('none', 'bf16'):
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == 'bf16'):
        loss, per_size = model.loss(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
    loss.backward()
    losses[amp] = loss.item()
assert seen and all(d == (torch.complex64, torch.complex64) for d in seen), seen
print(f'scan dtypes {sorted(set(map(str, seen)))}; loss fp32 {losses["none"]:.5f}, bf16 {losses["bf16"]:.5f}, '
      f'relative difference {abs(losses["bf16"] - losses["none"]) / losses["none"]:.2e}')
EOF
}

memory_table() {
    python scripts/memory_table.py --device "$DEVICE" --datasets "$MEMORY_DATASETS" | tee "$RESULTS/memory.jsonl"
}

collect_runs() {  # every run folder's step times and test metrics, into $WORK/runs.json
    python - "$RESULTS" "$WORK/runs.json" <<'EOF'
import csv, json, sys
from pathlib import Path
results, target = Path(sys.argv[1]), Path(sys.argv[2])
runs = {}
for run in sorted(results.glob('run_*')):
    try:  # a failed run's folder may lack its files: say so, and go on with the others
        with open(run / 'logs' / 'logs.csv', newline='') as handle:
            rows = list(csv.DictReader(handle))
        runs[run.name] = {
            'seconds_per_step_by_epoch': [float(r['train_seconds_per_step']) for r in rows],
            'epoch_seconds_with_validation': [float(r['seconds']) for r in rows],
            'test_mrl_metrics': json.loads((run / 'test_mrl_metrics.json').read_text()),
        }
    except (OSError, KeyError, ValueError) as error:
        runs[run.name] = {'error': f'{type(error).__name__}: {error}'}
for name, values in runs.items():
    if 'error' in values:
        print(name, 'incomplete:', values['error'])
        continue
    print(name, 'seconds/step by epoch', values['seconds_per_step_by_epoch'])
    metrics = values['test_mrl_metrics']
    print(json.dumps(metrics[max(metrics, key=int)]))  # the largest size
target.write_text(json.dumps(runs, indent=2))
EOF
}

write_summary() {  # summary.json from the sections' records (plain bash: it must not need python)
    local i separator='' failed=''
    for i in "${!NAMES[@]}"; do
        if [ "${STATUSES[$i]}" = fail ]; then
            failed+="$separator\"${NAMES[$i]}\""
            separator=', '
        fi
    done
    {
        echo '{'
        echo "  \"failed\": [$failed],"
        echo '  "sections": {'
        for i in "${!NAMES[@]}"; do
            separator=','
            [ "$i" -eq $(( ${#NAMES[@]} - 1 )) ] && separator=''
            case ${STATUSES[$i]} in
                skipped) echo "    \"${NAMES[$i]}\": {\"status\": \"skipped\", \"reason\": \"${DETAILS[$i]}\"}$separator" ;;
                *) echo "    \"${NAMES[$i]}\": {\"status\": \"${STATUSES[$i]}\", \"exit_status\": ${DETAILS[$i]}, \"log\": \"logs/${NAMES[$i]}.log\"}$separator" ;;
            esac
        done
        echo '  },'
        if passed runs; then
            echo '  "runs":'
            cat "$WORK/runs.json"
        else
            echo '  "runs": null'
        fi
        echo '}'
    } > "$RESULTS/summary.json"
}

# ---- the check ----------------------------------------------------------------------------------
NO_DATA='the data section failed'
if [ "$DEVICE" = cuda ]; then
    section cuda check_cuda
fi
section data build_data
for AMP in none bf16; do
    if passed data; then section "train_$AMP" train_run "$AMP" --amp "$AMP"; else skip "train_$AMP" "$NO_DATA"; fi
done
if [ "$DEVICE" != cuda ]; then
    skip train_compile '--compile is refused on the CPU (docs/distributed.md)'
elif passed data; then
    section train_compile train_run compile --amp none --compile
else
    skip train_compile "$NO_DATA"
fi
if passed data; then section resume kill_and_resume; else skip resume "$NO_DATA"; fi
if [ "$DEVICE" != cuda ]; then
    skip torchrun 'torchrun over NCCL needs 2 GPUs'
elif [ "$(gpu_count 2>/dev/null || echo 0)" -lt 2 ]; then
    skip torchrun 'fewer than 2 GPUs'
elif passed data; then
    section torchrun torchrun_two_gpus
else
    skip torchrun "$NO_DATA"
fi
section complex64 check_complex64
if [ -n "$MEMORY_DATASETS" ]; then
    section memory memory_table
else
    skip memory 'GPU_CHECK_MEMORY_DATASETS is empty'
fi
section runs collect_runs
write_summary

echo "== summary ($RESULTS/summary.json)"
for i in "${!NAMES[@]}"; do
    printf '%-14s %s\n' "${NAMES[$i]}" "${STATUSES[$i]}"
done
for status in "${STATUSES[@]}"; do
    [ "$status" = fail ] && exit 1
done
exit 0
