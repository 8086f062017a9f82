#!/usr/bin/env python3
"""Score rows with a model exported by `rec-dist export --format onnx`, with ONNX Runtime.

    rec-dist export --checkpoint CHECKPOINT --out MODEL_DIR --format onnx
    python3 examples/score_onnx.py MODEL_DIR rows.tsv [--limit N]                # a Criteo-trained model
    python3 examples/score_onnx.py MODEL_DIR DATASET_DIR --split test [--limit N]  # a prepared-data model

Turns the rows into the model's inputs as MODEL_DIR/model.json's `input` section says, with
examples/score.py's readers (raw Criteo TSV: the integer counts as they are, log1p being in the
graph, and the categorical values hashed with FNV-1a + murmur3's finalizer; a prepared dataset:
its split files, already encoded), feeds them to MODEL_DIR/model.onnx under the names and types
that model.json's `onnx` section lists (`dense` float32 [batch, dense fields], `categorical`
int64 [batch, categorical fields]) and prints the `probability` output, one per row, identical
(to float rounding) to `rec-dist predict`. A serving system does the same preprocessing in its
own language and runs model.onnx in its ONNX runtime.

With --check, first validates model.onnx with onnx.checker (full check, with shape inference).
Needs numpy and onnxruntime (and onnx for --check).
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from score import read_inputs  # noqa: E402  (beside this file)

DTYPES = {"float32": np.float32, "int64": np.int64}


def score(model_dir, rows, split="test", limit=None, check=False):
    with open(os.path.join(model_dir, "model.json")) as f:
        description = json.load(f)
    if "onnx" not in description:
        sys.exit(f"{model_dir}/model.json describes no ONNX model: export with `rec-dist export --format onnx`")
    path = os.path.join(model_dir, description["onnx"]["file"])
    if check:
        import onnx
        onnx.checker.check_model(path, full_check=True)
    dense, categorical = read_inputs(description, rows, split, limit)
    arrays = {"dense": dense, "categorical": categorical}
    feeds = {}
    for spec in description["onnx"]["inputs"]:
        value = arrays[spec["name"]].astype(DTYPES[spec["type"]])
        if value.shape[1] != spec["shape"][1]:
            sys.exit(f"{rows}: {value.shape[1]} {spec['name']} columns, the model takes {spec['shape'][1]}")
        feeds[spec["name"]] = value
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    output = description["onnx"]["outputs"][0]["name"]
    return session.run([output], feeds)[0][:, 0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a directory written by `rec-dist export --format onnx`")
    parser.add_argument("rows", help="Criteo TSV rows, or a prepared dataset directory")
    parser.add_argument("--split", default="test", help="prepared dataset: the split to score")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--check", action="store_true", help="validate model.onnx with onnx.checker first")
    args = parser.parse_args()
    for p in score(args.model, args.rows, args.split, args.limit, args.check):
        print(f"{p:.8g}")


if __name__ == "__main__":
    sys.exit(main())
