# Vigil tasks. `just --list` shows them all.

# Run every test the way CI does (installs Debian packages the tests need).
test:
    bash .ci/run

# Train GANomaly on Fashion-MNIST class 1 and evaluate it, with a report (the issue-2 check).
fmnist class="1" epochs="2":
    cargo run --release -p vigil-host -- train --detector ganomaly --data fashion-mnist:normal={{class}} --image-size 32 --epochs {{epochs}} --out runs/fm{{class}}
    cargo run --release -p vigil-host -- eval --model runs/fm{{class}} --report runs/fm{{class}}/report

# GANomaly training throughput, Candle vs PyTorch (CPU, 32², batch 64) in one run; see docs/benchmarks.md.
bench-train steps="20" warmup="3":
    bash bench/bench-train.sh {{steps}} {{warmup}}
