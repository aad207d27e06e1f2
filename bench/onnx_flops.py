"""FLOPs of an exported scorer graph for `just bench-peak`: `onnx_flops.py MODEL.onnx [BATCH]`.

Counts 2·MACs of every Conv, ConvTranspose, Gemm and MatMul of the graph as written (the other
ops — activations, batch norm, reductions — are a few FLOPs per element and left out). The
activation shapes come from one run of the graph in onnxruntime with every graph optimisation
off and profiling on (the profile names each node with its input and output shapes), the
weight shapes from the file's initializers (read with a few lines of protobuf decoding), so
the count needs no shape inference of its own and no `onnx` package. Prints one JSON line.
"""
import json
import os
import sys
import tempfile
from math import prod

import numpy as np
import onnxruntime as ort

model = sys.argv[1]
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1

with tempfile.TemporaryDirectory() as tmp:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tmp, "p")
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [batch] + [int(d) for d in inp.shape[1:]]
    sess.run(None, {inp.name: np.zeros(shape, np.float32)})
    events = json.load(open(sess.end_profiling()))


def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return v, i


def fields(b):
    """(field number, wire type, value) of one protobuf message: enough of the format to
    read ONNX's node and initializer records without the `onnx` package."""
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError(f"{model}: unsupported protobuf wire type {wt}")
        yield num, wt, v


def weight_dims(path):
    """Node name → dims of its second input (the weight) when that is an initializer."""
    graph = next(v for n, _, v in fields(open(path, "rb").read()) if n == 7)
    inits, nodes = {}, []
    for n, _, v in fields(graph):
        if n == 5:  # initializer: TensorProto (1: dims, 8: name)
            dims, name = [], ""
            for fn, wt, fv in fields(v):
                if fn == 1 and wt == 0:
                    dims.append(fv)
                elif fn == 1 and wt == 2:  # packed dims
                    j = 0
                    while j < len(fv):
                        d, j = varint(fv, j)
                        dims.append(d)
                elif fn == 8:
                    name = fv.decode()
            inits[name] = dims
        elif n == 1:  # node: NodeProto (1: input, 3: name)
            ins = [fv.decode() for fn, _, fv in fields(v) if fn == 1]
            name = next((fv.decode() for fn, _, fv in fields(v) if fn == 3), "")
            nodes.append((name, ins))
    return {name: inits[ins[1]] for name, ins in nodes if len(ins) > 1 and ins[1] in inits}


weights = weight_dims(model)


def shapes(entries):
    # [{"float": [1, 3, 64, 64]}, ...] → [[1, 3, 64, 64], ...]
    return [next(iter(e.values())) for e in entries]


flops, by_op, seen = 0, {}, set()
for ev in events:
    a = ev.get("args", {})
    op = a.get("op_name")
    if ev.get("cat") != "Node" or op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        continue
    if not ev["name"].endswith("_kernel_time") or ev["name"] in seen:
        continue
    seen.add(ev["name"])
    ins, outs = shapes(a["input_type_shape"]), shapes(a["output_type_shape"])
    node = ev["name"][: -len("_kernel_time")]
    # Pre-packed weights are left out of the profile's input shapes: take them from the file.
    w = weights.get(node) or (ins[1] if len(ins) > 1 else None)
    if w is None:
        sys.exit(f"{model}: no weight shape for {op} node {node}")
    x, y = ins[0], outs[0]
    if op == "Conv":
        # Y[N, Cout, Ho, Wo], W[Cout, Cin/g, kh, kw]: each output takes Cin/g·kh·kw MACs.
        macs = prod(y) * prod(w[1:])
    elif op == "ConvTranspose":
        # X[N, Cin, H, W], W[Cin, Cout/g, kh, kw]: each input pixel scatters Cout/g·kh·kw.
        macs = prod(x) * prod(w[1:])
    else:
        # Y[..., M, N] from A[..., M, K] (Gemm's transA stores A as [K, M]: K = |A| / M).
        m_rows = y[-2] if len(y) >= 2 else 1
        k = prod(x) // (prod(y[:-1]) if op == "MatMul" else m_rows)
        macs = prod(y) * k
    flops += 2 * macs
    by_op[op] = by_op.get(op, 0) + 2 * macs

print(json.dumps({"model": model, "batch": batch, "input": shape, "flops": flops,
                  "by_op": by_op}))
