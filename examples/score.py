#!/usr/bin/env python3
"""Score Criteo-format rows with a rec-dist checkpoint, in NumPy only.

    python3 examples/score.py CHECKPOINT_DIR rows.tsv [--limit N]

Reads model.safetensors (with the `safetensors` package) and the model description in its
metadata, applies rec-dist's preprocessing (log1p(max(x, 0)) of the counts; categorical values
hashed with FNV-1a + murmur3's finalizer, then 1 + h mod (buckets - 1), 0 for missing), runs the
mlp or dlrm forward pass and prints one probability per row, identical (to float rounding) to
`rec-dist predict`.
"""
import argparse
import json
import os
import sys

import numpy as np
from safetensors import safe_open


def resolve(path):
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return path
    with open(os.path.join(path, "latest")) as f:
        return os.path.join(path, f.read().strip())


def fmix32(h):
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def hash_categorical(value: bytes) -> int:
    if not value:
        return 0
    h = 2166136261
    for byte in value:
        h ^= byte
        h = (h * 16777619) & 0xFFFFFFFF
    h = fmix32(h)
    return 1 if h == 0 else h


def read_rows(path, limit):
    dense, cats = [], []
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                break
            fields = line.rstrip(b"\r\n").split(b"\t")
            assert len(fields) == 40, f"{path}:{i + 1}: expected 40 fields, found {len(fields)}"
            dense.append([float(x) if x else 0.0 for x in fields[1:14]])
            cats.append([hash_categorical(x) for x in fields[14:40]])
    return np.array(dense, dtype=np.float32), np.array(cats, dtype=np.uint64)


def mlp(x, tensors, prefix):
    layers = sorted({int(k.split(".")[1]) for k in tensors if k.startswith(prefix + ".")})
    return [(tensors[f"{prefix}.{l}.weight"], tensors[f"{prefix}.{l}.bias"]) for l in layers]


def run_stack(x, layers, relu_last):
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1 or relu_last:
            x = np.maximum(x, 0)
    return x


def score(checkpoint, rows, limit=None):
    path = os.path.join(resolve(checkpoint), "model.safetensors")
    with safe_open(path, framework="numpy") as f:
        config = json.loads(f.metadata()["model"])
        tensors = {k: f.get_tensor(k).astype(np.float64) for k in f.keys()}
    dense, cats = read_rows(rows, limit)
    x = np.log1p(np.maximum(dense.astype(np.float64), 0))
    if config["kind"] == "mlp":
        logits = run_stack(x[:, : config["mlpDenseFeatures"]], mlp(x, tensors, "mlp"), relu_last=False)
    else:
        buckets = config["hashBuckets"]
        ids = np.where(cats == 0, 0, 1 + cats % (buckets - 1)).astype(np.int64)
        bottom = run_stack(x, mlp(x, tensors, "bottom"), relu_last=True)           # (n, d)
        emb = np.stack([tensors[f"embedding.C{j + 1}"][ids[:, j]] for j in range(ids.shape[1])], axis=1)
        t = np.concatenate([bottom[:, None, :], emb], axis=1)                      # (n, 27, d)
        z = np.einsum("nid,njd->nij", t, t)
        li, lj = zip(*[(i, j) for i in range(1, t.shape[1]) for j in range(i)])
        inter = np.concatenate([bottom, z[:, li, lj]], axis=1)                      # (n, d + 351)
        logits = run_stack(inter, mlp(inter, tensors, "top"), relu_last=False)
    return 1 / (1 + np.exp(-logits[:, 0]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("rows")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    for p in score(args.checkpoint, args.rows, args.limit):
        print(f"{p:.8g}")


if __name__ == "__main__":
    sys.exit(main())
