"""onnxruntime-in-Python timing for `just bench-infer`:
`ort_infer.py MODEL PRECISION THREADS ITERS [SECONDS]`.

Same protocol as appliance/examples/bench_infer.rs: median batch-1 latency and batch-8 time
(ms) and throughput, ITERS runs per batch size after a warm-up, or fewer when SECONDS (default
3) have passed, with at least 3 timed runs; also the medians of the calling thread's CPU time
per run (with one thread, what an idle core would take). One JSON line.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

model, precision, threads, iters = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
budget = float(sys.argv[5]) if len(sys.argv) > 5 else 3.0
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
shape = sess.get_inputs()[0].shape
c, h, w = shape[1], shape[2], shape[3]
frame = c * h * w
x8 = ((np.arange(8 * frame) * 7919 % 2001) / 1000.0 - 1.0).astype(np.float32).reshape(8, c, h, w)


def timed(batch):
    x = np.ascontiguousarray(x8[:batch])
    start = time.perf_counter()
    for _ in range(iters // 10 + 2):
        sess.run(None, {"image": x})
        if time.perf_counter() - start > budget / 3:
            break
    t, c = [], []
    start = time.perf_counter()
    while len(t) < iters and (len(t) < 3 or time.perf_counter() - start < budget):
        t0, c0 = time.perf_counter(), time.thread_time()
        sess.run(None, {"image": x})
        t.append(time.perf_counter() - t0)
        c.append(time.thread_time() - c0)
    t.sort()
    c.sort()
    return t[len(t) // 2], c[len(c) // 2]


t1, c1 = timed(1)
t8, c8 = timed(8)
print(json.dumps({"runtime": "onnxruntime", "precision": precision, "threads": threads, "size": h,
                  "b1_ms": round(t1 * 1e3, 4), "b8_ms": round(t8 * 1e3, 4),
                  "b8_img_s": round(8 / t8, 1), "b1_cpu_ms": round(c1 * 1e3, 4),
                  "b8_cpu_ms": round(c8 * 1e3, 4)}))
