"""Runs a Vigil scorer graph in onnxruntime: `ort_run.py MODEL INPUT.f32 N C H W OUT_PREFIX`.

INPUT.f32 holds N·C·H·W little-endian f32; writes OUT_PREFIX.score.f32 ([N]) and
OUT_PREFIX.map.f32 ([N,1,H,W]). One thread, all graph optimisations, the CPU provider.
"""
import sys

import numpy as np
import onnxruntime as ort

model, inp, n, c, h, w, out = sys.argv[1:8]
n, c, h, w = int(n), int(c), int(h), int(w)
x = np.fromfile(inp, dtype="<f4").reshape(n, c, h, w)
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
score, amap = sess.run(["score", "anomaly_map"], {"image": x})
assert score.shape == (n,), score.shape
assert amap.shape == (n, 1, h, w), amap.shape
score.astype("<f4").tofile(out + ".score.f32")
amap.astype("<f4").tofile(out + ".map.f32")
