#!/usr/bin/env bash
# The GPU checks of docs/performance.md section 6, as one command for a lent GPU machine (device tool: one
# call, then give the machine back). Run from the repository root there, with two folders carried beside it
# (both git-ignored through .git/info/exclude, prepared on the development machine):
#   .whl/  jsonargparse, docstring_parser and typeshed_client wheels (the GPU image lacks jsonargparse)
#   .gpu/  cifar10-jpeg.tar.gz, mnist/*.gz (the four IDX files, gzipped to fit the 64 MiB transfer limit),
#          ab/airbench/ (the airbench 0.1.8 sdist's package folder, pure Python)
# Usage: bash benchmarks/gpu_checks.sh [STEP ...]   steps: profile speedrun_mnist speedrun_cifar airbench overhead
#        vgg16 resnet18 throughput graphs zoo (default: all but graphs and zoo, in that order). Results land in $OUT (default ./gpu_out).
set -u
OUT=${OUT:-$PWD/gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 D=/tmp/data R=/tmp/runs
if [ ! -d /tmp/site/jsonargparse ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD/.gpu/ab:$PWD
if [ ! -f $D/MNIST/raw/t10k-labels-idx1-ubyte ]; then
  mkdir -p $D/MNIST/raw && for f in .gpu/mnist/*.gz; do gunzip -c "$f" > $D/MNIST/raw/"$(basename "$f" .gz)"; done
  tar xzf .gpu/cifar10-jpeg.tar.gz -C $D
fi
X="--trainer.enable_progress_bar=false"
pack() { tar czf "$OUT/runs.tgz" --exclude='*.ckpt' -C /tmp runs; }
runner() {  # runner SECONDS EXPERIMENT ARGS...: the runner on GPU 0, cut at SECONDS (it resumes a cut run while
  local seconds=$1; shift   # the machine is held; a cut run is lost with the machine)
  timeout "$seconds" python3 -m mnist_cifar.experiments run "$@" --data_dir $D --gpus 0 $X 2>&1 \
    | grep -E "^(start|end|report)|Error"
}
sweep() { runner "$@" --root $R; pack; }  # sweep SECONDS EXPERIMENT ARGS...: one runner, then pack its runs
run_step() {
  echo "=== $1 $(date +%T)"
  case $1 in
    profile)  # where a step's time goes (issue 30 item 1): step times by CUDA events, then torch.profiler
      for c in "speedrun_cifar" "resnet18_cifar --trainer.precision bf16-mixed"; do
        set -- $c; config=$1; shift
        timeout 120 python3 benchmarks/step_profile.py --out "$OUT/profile" --steps 60 --skip 30 -- \
          --config configs/$config.yaml --data.data_dir $D --data.on_device true "$@" 2>&1 | grep -v -i warn | tail -34
      done ;;
    speedrun_mnist) sweep 120 speedrun_mnist --seeds 5 ;;
    speedrun_cifar) sweep 240 speedrun_cifar --only as_shipped all_50k fused --seeds 5 ;;
    graphs) sweep 300 speedrun_cifar --only compiled compiled_graphs --seeds 3 ;;  # torch.compile vs + CUDA graphs
    airbench) (mkdir -p /tmp/ab && cd /tmp/ab && timeout 100 python3 "$OLDPWD/benchmarks/airbench_side_by_side.py" --data_dir $D --runs 5 2>&1 | tail -3) ;;
    overhead) timeout 240 python3 benchmarks/trainer_overhead.py --data_dir $D --repeats 3 --csv "$OUT/overhead.csv" 2>&1 | grep -A8 "best of" ;;
    vgg16) sweep 420 architectures --only vgg16_cifar --seeds 3 --data.on_device=true --trainer.precision=bf16-mixed ;;
    resnet18) sweep 420 architectures --only resnet18_cifar --seeds 3 --data.on_device=true --trainer.precision=bf16-mixed ;;
    zoo)  # nine runs side by side on the one GPU (each is launch-bound alone): ResNet-20 x3 in fp32 as on the CPU,
          # VGG-16 and ResNet-18 x3 in bf16; the decoded-JPEG cache is built once first, not by nine processes
      python3 -c "from mnist_cifar.data import CIFAR10DataModule as M; m = M(data_dir='$D'); m.prepare_data(); m.setup('fit'); m.setup('test')"
      nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 20 > "$OUT/smi.csv" & smi=$!
      zoo="${ZOO_SECONDS:-470} architectures --seeds 3 --num_threads=1 --data.on_device=true"  # split on purpose
      runner $zoo --root $R --only resnet20_cifar --jobs 3 & a=$!
      runner $zoo --root $R/bf16 --only vgg16_cifar resnet18_cifar --jobs 6 --trainer.precision=bf16-mixed & b=$!
      wait $a $b; kill $smi; pack ;;  # one pack after both: two at once would write runs.tgz together
    throughput) for c in lenet_cifar vgg16_cifar resnet18_cifar; do for p in 32-true bf16-mixed; do
        timeout 90 python3 main.py fit --config configs/$c.yaml --data.data_dir $D --data.on_device true \
          --trainer.max_epochs 1 --trainer.precision $p --trainer.logger.init_args.save_dir $R/throughput \
          --trainer.logger.init_args.name ${c}_$p --test_after_fit false $X > /dev/null 2>&1; done; done; pack ;;
  esac
}
for step in "${@:-profile speedrun_mnist speedrun_cifar airbench overhead vgg16 resnet18 throughput}"; do
  for s in $step; do run_step "$s"; done
done
echo "=== done $(date +%T)"
