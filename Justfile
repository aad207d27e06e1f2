# Vigil tasks. `just --list` shows them all.

# The README's main job: synthetic line → quick GANomaly → ONNX → vigild + embedded broker → live dashboard view and summary.
demo *args:
    cargo run --release -p vigil-host -- demo {{args}}

# vigil with Candle's CUDA backend (sm_90), toolkit from PyPI wheels, into target/cuda; see docs/gpu.md.
build-cuda:
    bash bench/build-cuda.sh

# Run every test the way CI does (installs Debian packages the tests need).
test:
    bash .ci/run

# vigild on a real kernel V4L2 driver: vivid in a qemu VM, end to end (installs qemu, busybox; docs/vivid.md). `just test` runs it too.
test-vivid:
    bash .ci/run vivid

# cargo-fuzz: every target in fuzz/ (manifest, spool, frame conversion, reload command, vigild.toml) for SECONDS each; needs nightly + cargo-fuzz.
fuzz seconds="60":
    bash fuzz/run.sh {{seconds}}

# Train GANomaly on Fashion-MNIST class 1 and evaluate it, with a report (the issue-2 check).
fmnist class="1" epochs="2":
    cargo run --release -p vigil-host -- train --detector ganomaly --data fashion-mnist:normal={{class}} --image-size 32 --epochs {{epochs}} --out runs/fm{{class}}
    cargo run --release -p vigil-host -- eval --model runs/fm{{class}} --report runs/fm{{class}}/report

# GANomaly training throughput, Candle vs PyTorch (CPU, 32², batch 64) in one run; see docs/benchmarks.md.
bench-train steps="20" warmup="3":
    bash bench/bench-train.sh {{steps}} {{warmup}}

# Soak (issue 19): vigild at 30 fps into mosquitto for MINUTES, the broker restarted every few
# minutes and vigild SIGKILLed once; checks every scored frame arrives and RSS / fds / spool stay
# flat, and writes runs/soak/report.md (docs/benchmarks.md has a 60-minute run).
soak minutes="10":
    SOAK_MINUTES={{minutes}} cargo test --workspace --release --test soak -- --ignored --nocapture

# What write-ahead delivery costs per frame: the spool's appends, fsyncs and acks as vigild makes them at 30 fps, in DIR (put it on the spool's disk).
bench-spool dir="runs/bench-spool" frames="3000":
    cargo run --release -p vigil-appliance --example bench_spool -- {{dir}} {{frames}}

# Appliance scoring loop: 30 fps for 60 s with a 64² model; deadline misses, p50/p99 per stage, overhead (docs/benchmarks.md).
# SINK=mqtt: through the embedded broker and the write-ahead spool; HTTP=1: live view on, nobody watching; VIEWER=1: and a viewer.
bench-loop fps="30" seconds="60":
    bash bench/bench-loop.sh {{fps}} {{seconds}}

# The same loop on 640×480 frames with a 256² ROI and a patch-mode model (32² tiles, stride 16 or 32).
bench-loop-patch fps="30" seconds="60" stride="16":
    VARIANT=patch STRIDE={{stride}} bash bench/bench-loop.sh {{fps}} {{seconds}}

# The machine's f32 limit: sgemm GFLOP/s on one core and all cores (gemm crate and numpy/OpenBLAS, best of both) and each bench-infer graph's FLOPs; writes runs/bench-peak.json.
bench-peak n="1536" reps="5":
    bash bench/bench-peak.sh {{n}} {{reps}}

# Scoring speed of vigild's engines (tract, ort) and onnxruntime-in-Python at 64², 128², 256², f32/int8, batch 1/8, 1/2 threads, as ratios and % of peak; see docs/benchmarks.md.
bench-infer sizes="64 128 256" iters="30" seconds="2":
    bash bench/bench-infer.sh "{{sizes}}" {{iters}} {{seconds}}

# The decoder without transposed convolutions (--decoder upsample) against DCGAN's (deconv): latency and throughput of GANomaly at each size, both engines, f32 and int8, and each graph's FLOPs (docs/benchmarks.md, "Decoders").
bench-decoder sizes="64 128 256" iters="30" seconds="2":
    bash bench/bench-decoder.sh "{{sizes}}" {{iters}} {{seconds}}

# Image AUROC of every detector over the Fashion-MNIST one-class tasks (env JOBS=N, SCORES=all, REPORT_ONLY=1: see bench/bench-accuracy.sh); docs/benchmarks.md.
bench-accuracy detectors="anogan egbad ganomaly alad fanogan gaae wild seg" classes="0 1 2 3 4 5 6 7 8 9" epochs="2" seeds="1":
    bash bench/bench-accuracy.sh "{{detectors}}" "{{classes}}" "{{epochs}}" "{{seeds}}"

# Every detector on real photographs of surfaces (bricks, gravel, wood from ufoai-textures; defects from defect-synthesis): image/pixel AUROC, AUPRO, train time (env MODE=whole|patch, CROPS, ALL_SCORES, SEEDS, JOBS, REPORT_ONLY: see bench/bench-real.sh); docs/benchmarks.md.
bench-real detectors="ganomaly anogan egbad alad fanogan gaae wild" categories="bricks gravel wood" epochs="20" size="64":
    bash bench/bench-real.sh "{{detectors}}" "{{categories}}" "{{epochs}}" "{{size}}"

# Roll vigild + model + config out over SSH, health-checked, rolled back on failure: `just deploy target=USER@HOST [model=DIR] [config=FILE] [--dry-run|--reload]` (docs/deploy.md).
deploy +args:
    cargo run --release -q -p vigil-deploy -- {{args}}
