#!/usr/bin/env python3
"""Prints the scalars of the TensorBoard event files in a directory (`train --tensorboard DIR`),
read with TensorBoard's own reader, as one JSON object: {tag: [[step, value], ...]}.

    python3 scripts/read_tensorboard.py DIR

Needs the `tensorboard` pip package (scripts/requirements-test.txt). The integration tests use it to
check that the event files hold the values `--metrics-out` writes.
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: read_tensorboard.py DIR (the directory given to `rec-dist train --tensorboard`)")
    # size_guidance 0: keep every scalar (the default keeps a sample of 10,000 per tag).
    accumulator = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    if not tags:
        sys.exit(f"{sys.argv[1]}: no scalars found; is this a directory written by `train --tensorboard`?")
    json.dump({tag: [[e.step, e.value] for e in accumulator.Scalars(tag)] for tag in sorted(tags)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
