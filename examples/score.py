#!/usr/bin/env python3
"""Score rows with a model exported by `rec-dist export`, in NumPy only.

    rec-dist export --checkpoint CHECKPOINT --out MODEL_DIR
    python3 examples/score.py MODEL_DIR rows.tsv [--limit N]             # a Criteo-trained model
    python3 examples/score.py MODEL_DIR DATASET_DIR --split test [--limit N]   # a prepared-data model

Reads MODEL_DIR/model.json (the model description) and MODEL_DIR/model.safetensors (the weights,
with the `safetensors` package), turns the rows into the model's inputs as the description says
(raw Criteo TSV: log1p(max(x, 0)) of the counts, categorical values hashed with FNV-1a + murmur3's
finalizer; a prepared dataset: its split files, already encoded), runs the description's graph of
ops and prints one probability per row, identical (to float rounding) to `rec-dist predict`.

The ops are generic (dense_transform, linear, embedding, dot_interaction, sigmoid, concat, sum,
multiply, dot, reduce_sum, slice, take, tensor_add), so mlp, dlrm, logreg, wide-deep, ncf and
two-tower all run through the same code, and a new model needs no change here as long as its
description uses them.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np


# ---- inputs -------------------------------------------------------------------------------------

def fmix32(h):
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def hash_categorical(value: bytes) -> int:
    """rec-dist's 32-bit hash of a raw categorical value: FNV-1a, then murmur3's finalizer."""
    if not value:
        return 0
    h = 2166136261
    for byte in value:
        h ^= byte
        h = (h * 16777619) & 0xFFFFFFFF
    h = fmix32(h)
    return 1 if h == 0 else h


def read_criteo_tsv(path, limit):
    """label, I1..I13 (integers, empty = 0), C1..C26 (strings, hashed)."""
    labels, dense, cats = [], [], []
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                break
            fields = line.rstrip(b"\r\n").split(b"\t")
            if len(fields) != 40:
                sys.exit(f"{path}:{i + 1}: expected 40 tab-separated fields, found {len(fields)}")
            labels.append(float(fields[0]))
            dense.append([float(x) if x else 0.0 for x in fields[1:14]])
            cats.append([hash_categorical(x) for x in fields[14:40]])
    return (np.array(labels, dtype=np.float32), np.array(dense, dtype=np.float32).reshape(-1, 13),
            np.array(cats, dtype=np.uint64).reshape(-1, 26))


def read_prepared_split(dataset, split, limit):
    """A split file of a prepared dataset (`RECDPREP`): row groups of labels, dense, categorical."""
    with open(os.path.join(dataset, "manifest.json")) as f:
        manifest = json.load(f)
    entry = next((s for s in manifest["splits"] if s["name"] == split), None)
    if entry is None:
        sys.exit(f"{dataset}: no split named {split!r} (the splits are {[s['name'] for s in manifest['splits']]})")
    data = np.fromfile(os.path.join(dataset, entry["file"]), dtype=np.uint8)
    if bytes(data[:8]) != b"RECDPREP":
        sys.exit(f"{dataset}/{entry['file']}: not a rec-dist prepared split")
    rows, = struct.unpack_from("<Q", data, 16)
    d, c, per_group = struct.unpack_from("<III", data, 24)
    n = rows if limit is None else min(rows, limit)
    labels, dense, cats = [], [], []
    offset, done = 4096, 0
    while done < n:
        r = min(per_group, rows - done)
        group = data[offset:offset + r * 4 * (1 + d + c)]
        labels.append(group[:4 * r].view(np.float32))
        dense.append(group[4 * r:4 * r * (1 + d)].view(np.float32).reshape(r, d))
        cats.append(group[4 * r * (1 + d):].view(np.uint32).reshape(r, c))
        offset += per_group * 4 * (1 + d + c)
        done += r
    return (np.concatenate(labels)[:n], np.concatenate(dense)[:n].reshape(n, d),
            np.concatenate(cats)[:n].astype(np.uint64).reshape(n, c))


# ---- the graph ----------------------------------------------------------------------------------

ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "linear": lambda x: x,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
}


def op_dense_transform(op, values, tensors):
    x = values[op["inputs"][0]].astype(np.float64)[:, : op["columns"]]
    if op["transform"] == "log1p":
        return np.log1p(np.maximum(x, 0))
    if op["transform"] == "identity":
        return x
    raise ValueError(f"unknown dense transform {op['transform']!r}")


def op_linear(op, values, tensors):
    x = values[op["inputs"][0]]
    return ACTIVATIONS[op["activation"]](x @ tensors[op["weight"]] + tensors[op["bias"]])


def op_embedding(op, values, tensors):
    ids = values[op["inputs"][0]]
    columns = op.get("columns", list(range(len(op["tables"]))))
    out = []
    for column, name, rows in zip(columns, op["tables"], op["rows"]):
        v = ids[:, column]
        if op["indexing"] == "hashed":
            row = np.where(v == 0, 0, 1 + v % (rows - 1))
        else:
            row = v
        out.append(tensors[name][row.astype(np.int64)])
    return np.stack(out, axis=1)  # (n, fields, dim)


def op_dot_interaction(op, values, tensors):
    parts = [values[name] for name in op["inputs"]]
    t = np.concatenate([p[:, None, :] if p.ndim == 2 else p for p in parts], axis=1)  # (n, slots, dim)
    z = np.einsum("nid,njd->nij", t, t)
    li, lj = zip(*[(i, j) for i in range(1, t.shape[1]) for j in range(i)])
    pairs = z[:, li, lj]
    return np.concatenate([t[:, 0, :], pairs], axis=1) if op["passthrough"] else pairs


def op_sigmoid(op, values, tensors):
    return ACTIVATIONS["sigmoid"](values[op["inputs"][0]])


def op_concat(op, values, tensors):
    return np.concatenate([values[n].reshape(values[n].shape[0], -1) for n in op["inputs"]], axis=1)


def op_reduce_sum(op, values, tensors):
    x = values[op["inputs"][0]]
    return x.reshape(x.shape[0], -1).sum(axis=1, keepdims=True)


def op_slice(op, values, tensors):
    x = values[op["inputs"][0]]
    index = [slice(None)] * x.ndim
    index[op["axis"]] = slice(op["start"], op["stop"])
    return x[tuple(index)]


def op_take(op, values, tensors):
    return np.take(values[op["inputs"][0]], op["index"], axis=op["axis"])


def op_tensor_add(op, values, tensors):
    return values[op["inputs"][0]] + tensors[op["tensor"]]


def op_sum(op, values, tensors):
    return sum(values[n] for n in op["inputs"])


def op_multiply(op, values, tensors):
    out = values[op["inputs"][0]]
    for n in op["inputs"][1:]:
        out = out * values[n]
    return out


def op_dot(op, values, tensors):
    a, b = (values[n] for n in op["inputs"])
    return np.sum(a * b, axis=-1, keepdims=True)


OPS = {name[3:]: f for name, f in globals().items() if name.startswith("op_")}


def run_graph(description, tensors, dense, categorical):
    values = {"dense": dense, "categorical": categorical}
    for op in description["graph"]:
        if op["op"] not in OPS:
            sys.exit(f"model.json uses op {op['op']!r}, which this score.py does not know; update examples/score.py")
        values[op["output"]] = OPS[op["op"]](op, values, tensors)
    return values[description["output"]][:, 0]


def load(model_dir):
    with open(os.path.join(model_dir, "model.json")) as f:
        description = json.load(f)
    if description.get("format") != "rec-dist model":
        sys.exit(f"{model_dir}/model.json is not a rec-dist model description (write one with `rec-dist export`)")
    if "onnx" in description:
        sys.exit(f"{model_dir} is an ONNX export: score it with examples/score_onnx.py (or export without --format onnx)")
    from safetensors import safe_open  # here, so that score_onnx.py can import this file without it
    with safe_open(os.path.join(model_dir, description["weights"]), framework="numpy") as f:
        tensors = {k: f.get_tensor(k).astype(np.float64) for k in f.keys()}
    return description, tensors


def read_inputs(description, rows, split="test", limit=None):
    """The model's inputs for `rows`, as the description's `input` section says: (dense, categorical)."""
    kind = description["input"]["kind"]
    if kind == "criteo-tsv":
        if os.path.isdir(rows):
            sys.exit(f"{rows} is a directory; this model reads Criteo TSV files")
        _, dense, categorical = read_criteo_tsv(rows, limit)
    elif kind == "prepared":
        if not os.path.isdir(rows):
            sys.exit(f"{rows} is not a prepared dataset directory; this model reads the rows of one (--split)")
        with open(os.path.join(rows, "manifest.json")) as f:
            if json.load(f)["schema_hash"] != description["input"]["schema_hash"]:
                sys.exit(f"{rows} has another schema than the dataset the model was trained on ({description['input']['dataset']})")
        _, dense, categorical = read_prepared_split(rows, split, limit)
    else:
        sys.exit(f"unknown input kind {kind!r}")
    return dense, categorical


def score(model_dir, rows, split="test", limit=None):
    description, tensors = load(model_dir)
    dense, categorical = read_inputs(description, rows, split, limit)
    return run_graph(description, tensors, dense, categorical)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a directory written by `rec-dist export`")
    parser.add_argument("rows", help="Criteo TSV rows, or a prepared dataset directory")
    parser.add_argument("--split", default="test", help="prepared dataset: the split to score")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    for p in score(args.model, args.rows, args.split, args.limit):
        print(f"{p:.8g}")


if __name__ == "__main__":
    sys.exit(main())
