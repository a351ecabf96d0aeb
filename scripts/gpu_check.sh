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
# Results go to $OUT (or ./gpu_check_out): summary.json, the runs' folders, memory.jsonl. The run
# folders of a previous check there are replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${GPU_CHECK_DEVICE:-cuda}
USERS=${GPU_CHECK_USERS:-22363}     # Beauty: 22,363 users, 12,101 items, mean length 8.88
ITEMS=${GPU_CHECK_ITEMS:-12101}
EPOCHS=${GPU_CHECK_EPOCHS:-2}
SIZES=${GPU_CHECK_SIZES:-8,16,32,64,128,256,512,1024}   # the paper's
FEATURE_DIM=${GPU_CHECK_FEATURE_DIM:-1024}               # per modality, as bge-large and SigLIP-large
MEMORY_DATASETS=${GPU_CHECK_MEMORY_DATASETS-beauty,clothing,sports,toys}   # empty: skip the memory table
RESULTS=${OUT:-gpu_check_out}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS"
# train.py refuses a folder that already holds a trained run: start each check from fresh folders.
rm -rf "$RESULTS"/run_* "$RESULTS/resume" "$RESULTS/summary.json" "$RESULTS/memory.jsonl"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline

if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "CUDA is not available: run on a GPU machine or set GPU_CHECK_DEVICE=cpu")'
fi
echo "== building Beauty-shaped synthetic data ($USERS users, $ITEMS items)"
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

COMMON=(--dataset_code beauty_synth --data_root "$WORK/data" --language_encoder synthetic
        --img_encoder synthetic --mrl_hidden_sizes "$SIZES" --lru_num_blocks 2 --device "$DEVICE"
        --no-use_tensorboard --lr 1e-3)
for AMP in none bf16; do
    echo "== train.py, amp $AMP"
    python train.py "${COMMON[@]}" --num_epochs "$EPOCHS" --amp "$AMP" --export_root "$RESULTS/run_$AMP" 2>&1 \
        | grep -v 'it/s' | tail -20
done
if [ "$DEVICE" = cuda ]; then  # --compile is refused on the CPU (docs/distributed.md)
    echo "== train.py, amp none, --compile"
    python train.py "${COMMON[@]}" --num_epochs "$EPOCHS" --compile --export_root "$RESULTS/run_compile" 2>&1 \
        | grep -v 'it/s' | tail -20
fi

# Killed in its second epoch, then resumed: on the GPU this restores the CUDA generator from a
# checkpoint read to the CPU; with 2+ GPUs the run moves from cuda:0 to cuda:1.
STEPS_PER_EPOCH=$(( (USERS + 31) / 32 ))
RESUME_DEVICE=$DEVICE
if [ "$DEVICE" = cuda ]; then
    RESUME_DEVICE=cuda:0
    if [ "$(python -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
        RESUME_DEVICE=cuda:1
    fi
fi
echo "== resume: killed at step $((STEPS_PER_EPOCH + 1)) on $DEVICE, resumed on $RESUME_DEVICE"
set +e
FMRLREC_FAULT=kill_at_step=$((STEPS_PER_EPOCH + 1)) python train.py "${COMMON[@]}" --num_epochs 2 \
    --export_root "$RESULTS/resume" > "$WORK/killed.log" 2>&1
killed=$?
set -e
if [ "$killed" -ne 137 ]; then  # 128 + SIGKILL: the planned kill, not a crash
    tail -20 "$WORK/killed.log"
    echo "the run to be resumed did not die at the planned step (exit status $killed)" >&2
    exit 1
fi
python train.py --resume "$RESULTS/resume" --device "$RESUME_DEVICE" 2>&1 | grep -E '^(resum|peak GPU|wrote)'

if [ "$DEVICE" = cuda ] && [ "$(python -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
    echo "== torchrun, 2 GPUs, amp none"
    python -m torch.distributed.run --standalone --nproc_per_node=2 train.py "${COMMON[@]}" --num_epochs "$EPOCHS" \
        --amp none --export_root "$RESULTS/run_ddp2" 2>&1 | grep -v 'it/s' | tail -12
fi

echo "== bf16 autocast keeps the LRU recurrence in complex64"
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

if [ -n "$MEMORY_DATASETS" ]; then
    echo "== peak memory per dataset shape (paper configuration)"
    python scripts/memory_table.py --device "$DEVICE" --datasets "$MEMORY_DATASETS" | tee "$RESULTS/memory.jsonl"
fi

python - "$RESULTS" <<'EOF'
import csv, json, sys
from pathlib import Path
results = Path(sys.argv[1])
summary = {}
for run in sorted(results.glob('run_*')):
    with open(run / 'logs' / 'logs.csv', newline='') as handle:
        rows = list(csv.DictReader(handle))
    summary[run.name] = {
        'seconds_per_step_by_epoch': [float(r['train_seconds_per_step']) for r in rows],
        'epoch_seconds_with_validation': [float(r['seconds']) for r in rows],
        'test_mrl_metrics': json.loads((run / 'test_mrl_metrics.json').read_text()),
    }
(results / 'summary.json').write_text(json.dumps(summary, indent=2))
for name, values in summary.items():
    print(name, 'seconds/step by epoch', values['seconds_per_step_by_epoch'])
    metrics = values['test_mrl_metrics']
    print(json.dumps(metrics[max(metrics, key=int)]))  # the largest size
EOF
