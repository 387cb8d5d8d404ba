#!/usr/bin/env bash
# Every GPU measurement the open issues ask for, in one run of under 10 minutes on one GPU (an H100 or H200), each
# writing its JSON into $OUT (default benchmarks/results/gpu/):
#
#   latent_autoencoder_256_bf16.json  issue 24: samples/s of our Trainer against diffusers' AutoencoderKL of the same
#                                     configuration in a plain loop, at 256x256 with f = 8 (Stable Diffusion's VAE:
#                                     128 256 512 512 channels, 2 ResNet blocks per level) in bf16, and the Trainer's
#                                     MFU
#   backbones_cifar_cuda.json         issue 16: ViT against conv VQ-VAEs on CIFAR-10 at equal time (6 epochs of the
#                                     conv model), 3 seeds, trained and timed on the GPU
#   gpu_section.json                  the library's GPU section: Trainer samples/s in fp32 and bf16, Trainer/loop
#                                     ratio, MFU and peak memory of the default models
#
#   bash benchmarks/gpu.sh                 # on the GPU machine; CIFAR-10 from $DATA (default ../shared/data)
#   bash benchmarks/gpu.sh --smoke         # on a CPU, in seconds: every step runs, on tiny settings
#
# Each step runs even if an earlier one failed; the script's exit status is that of the first failure.
set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
[[ "${1:-}" == "--smoke" ]] && SMOKE=1
OUT=${OUT:-benchmarks/results/gpu}
DATA=${DATA:-../shared/data}
mkdir -p "$OUT"
status=0

step() {  # step NAME COMMAND...: run COMMAND, its JSON (stdout) into $OUT/NAME.json, its log into $OUT/NAME.log
    local name=$1
    shift
    echo "[$(date +%H:%M:%S)] $name: $*" >&2
    local start=$SECONDS
    if "$@" > "$OUT/$name.json.partial" 2> "$OUT/$name.log"; then
        mv "$OUT/$name.json.partial" "$OUT/$name.json"
        echo "[$(date +%H:%M:%S)] $name: done in $((SECONDS - start)) s" >&2
    else
        local code=$?
        rm -f "$OUT/$name.json.partial"
        echo "[$(date +%H:%M:%S)] $name: FAILED (exit $code); the last lines of $OUT/$name.log:" >&2
        tail -n 20 "$OUT/$name.log" >&2
        [[ $status == 0 ]] && status=$code
    fi
}

if [[ $SMOKE == 1 ]]; then
    step latent_autoencoder_256_bf16 python benchmarks/latent_autoencoder.py --smoke --sections speed --device cpu
    step backbones_cifar_cuda python benchmarks/backbones_cifar.py --smoke --models conv,vit --device cpu
    step gpu_section python benchmarks/gpu.py --smoke
else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >&2 || true
    step latent_autoencoder_256_bf16 python benchmarks/latent_autoencoder.py --device cuda --sections speed --bf16 \
        --speed_image_size 256 --speed_block_out_channels 128 256 512 512 --layers_per_block 2 \
        --speed_batch_size 16 --speed_steps 20 --speed_warmup 5 --speed_repeats 4
    step backbones_cifar_cuda python benchmarks/backbones_cifar.py --device cuda --dataset_name "$DATA/cifar10" \
        --models conv,vit --reference_steps 2344 --seeds 0,1,2 --threads 4 \
        --figures_dir "$OUT/backbones_cifar_cuda"
    step gpu_section python benchmarks/gpu.py
fi
exit $status
