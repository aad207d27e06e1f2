"""onnxruntime timing for `just bench-infer`: `ort_infer.py MODEL PRECISION THREADS ITERS`.

Same protocol as appliance/examples/bench_infer.rs: median batch-1 latency and batch-8
throughput (median batch time), one JSON line.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

model, precision, threads, iters = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
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
    for _ in range(iters // 10 + 3):
        sess.run(None, {"image": x})
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        sess.run(None, {"image": x})
        t.append(time.perf_counter() - t0)
    t.sort()
    return t[len(t) // 2]


t1 = timed(1)
t8 = timed(8)
print(json.dumps({"runtime": "onnxruntime", "precision": precision, "threads": threads,
                  "b1_ms": round(t1 * 1e3, 4), "b8_img_s": round(8 / t8, 1)}))
