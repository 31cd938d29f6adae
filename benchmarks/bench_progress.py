"""What LiveProgress costs, measured in one run in a real kernel whose client reads iopub.

Prints ratios against baselines measured in the same run:
- the callback's self-time (time inside its own hooks) as a share of fit wall time;
- fit wall time with LiveProgress over verbose=0, the median of interleaved pairs;
- iopub messages per second and bytes per 10,000 steps during LiveProgress fits;
- the size of a saved notebook of one 20-epoch run (nbclient, default widget-state saving);
- the memory the history and view keep over 1,000,000 steps.

Usage: python benchmarks/bench_progress.py [--pairs N]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import sys
import tempfile
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

KERNEL_SETUP = r"""
import time, json, numpy as np, keras, kernelkit
from kernelkit.callback import LiveProgress
keras.utils.set_random_seed(0)
x = np.random.rand(20000, 32).astype("float32"); y = x.sum(axis=1, keepdims=True)
def make():
    m = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"),
                          keras.layers.Dense(1)])
    m.compile("adam", "mse")
    return m

HOOKS = ("on_train_begin", "on_epoch_begin", "on_train_batch_end", "on_epoch_end", "on_train_end")
class Timed(LiveProgress):
    self_time = 0.0
for _name in HOOKS:
    def _wrap(name):
        base = getattr(LiveProgress, name)
        def hook(self, *a, **k):
            t = time.perf_counter()
            try:
                return base(self, *a, **k)
            finally:
                Timed.self_time += time.perf_counter() - t
        return hook
    setattr(Timed, _name, _wrap(_name))

def run(kind, epochs=5):
    m = make()
    m.fit(x[:256], y[:256], epochs=1, batch_size=32, verbose=0)  # trace outside the timing
    cbs = [Timed()] if kind == "live" else []
    Timed.self_time = 0.0
    t = time.perf_counter()
    m.fit(x, y, epochs=epochs, batch_size=32, validation_split=0.1, verbose=0, callbacks=cbs)
    wall = time.perf_counter() - t
    steps = int(m.optimizer.iterations.numpy()) - 8
    return {"kind": kind, "wall": wall, "self": Timed.self_time, "steps": steps}
"""


def start_kernel(**kwargs):
    """A fresh python3 kernel and its client (``kwargs`` go to the launch, e.g. ``env``)."""
    from jupyter_client.manager import start_new_kernel

    return start_new_kernel(kernel_name="python3", startup_timeout=120, **kwargs)


def execute(kc, code, timeout=600):
    """Runs code; returns (stdout text, iopub messages with their byte sizes, seconds)."""
    msg_id = kc.execute(code)
    out, msgs = [], []
    t0 = time.monotonic()
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=timeout)
        except queue.Empty as err:
            raise TimeoutError(code[:60]) from err
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        size = len(json.dumps(msg["content"], default=str)) + sum(
            len(b) for b in msg.get("buffers", []) or [])
        msgs.append((msg["msg_type"], size, time.monotonic() - t0))
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        if msg["msg_type"] == "error":
            raise RuntimeError("\n".join(msg["content"]["traceback"]))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out), msgs, time.monotonic() - t0


def bench_kernel(pairs: int) -> dict:
    km, kc = start_kernel()
    try:
        execute(kc, KERNEL_SETUP)
        walls = {"quiet": [], "live": []}
        selfs, ratios, traffic = [], [], []
        for i in range(pairs):
            order = ("quiet", "live") if i % 2 == 0 else ("live", "quiet")
            result = {}
            for kind in order:
                text, msgs, _ = execute(kc, f"print(json.dumps(run({kind!r})))")
                result[kind] = json.loads(text.strip().splitlines()[-1])
                if kind == "live":
                    busy = [m for m in msgs if m[0] not in ("status", "execute_input", "stream")]
                    traffic.append((len(busy), sum(m[1] for m in busy), result[kind]))
            walls["quiet"].append(result["quiet"]["wall"])
            walls["live"].append(result["live"]["wall"])
            ratios.append(result["live"]["wall"] / result["quiet"]["wall"])
            selfs.append(result["live"]["self"] / result["live"]["wall"])
        n_msgs = sum(t[0] for t in traffic)
        n_bytes = sum(t[1] for t in traffic)
        seconds = sum(t[2]["wall"] for t in traffic)
        steps = sum(t[2]["steps"] for t in traffic)
        return {
            "pairs": pairs,
            "step_ms": 1000 * statistics.median(walls["quiet"]) / (traffic[0][2]["steps"]),
            "median_wall_ratio": statistics.median(ratios),
            "wall_ratios": ratios,
            "self_time_share": statistics.median(selfs),
            "iopub_msgs_per_s": n_msgs / seconds,
            "iopub_bytes_per_10k_steps": n_bytes / steps * 10000,
        }
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def bench_saved_notebook() -> dict:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3", "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import numpy as np, keras, kernelkit\n"
            "x = np.random.rand(4000, 32).astype('float32'); y = x.sum(axis=1, keepdims=True)\n"
            "m = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation='relu'),"
            " keras.layers.Dense(1)])\nm.compile('adam', 'mse', metrics=['mae'])"),
        nbformat.v4.new_code_cell(
            "h = kernelkit.fit(m, x, y, epochs=20, batch_size=32, validation_split=0.1)"),
    ]
    NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.ipynb")
        nbformat.write(nb, path)
        size = os.path.getsize(path)
    return {"saved_notebook_kb": size / 1024}


def bench_million_steps() -> dict:
    """Drives the callback's hooks for 1,000,000 steps (no fit) and measures kept memory."""
    import keras

    from kernelkit.callback import LiveProgress

    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    clock = Clock()
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    got = [0]
    cb = LiveProgress(display="none", sink=lambda e: got.__setitem__(0, got[0] + 1),
                      clock=clock, refresh=1e-9)
    cb.set_model(model)
    steps = 10_000
    cb.set_params({"epochs": 100, "steps": steps})
    tracemalloc.start()
    cb.on_train_begin()
    t = time.perf_counter()
    for epoch in range(100):
        cb.on_epoch_begin(epoch)
        for b in range(steps):
            clock.now += 0.001
            cb.on_train_batch_end(b, {"loss": 1.0 / (b + 1), "mae": 0.5})
        cb.on_epoch_end(epoch, {"loss": 0.1, "val_loss": 0.2})
    cb.on_train_end()
    per_step_us = (time.perf_counter() - t) / (100 * steps) * 1e6
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    points = sum(len(s) for s in cb.history.batch.values())
    return {"million_steps_kept_kb": current / 1024, "million_steps_peak_kb": peak / 1024,
            "batch_points_kept": points, "hook_us_per_step_every_step_emitting": per_step_us}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=8)
    args = parser.parse_args()
    results = {}
    results.update(bench_million_steps())
    results.update(bench_kernel(args.pairs))
    results.update(bench_saved_notebook())
    print(json.dumps(results, indent=2))
    print(f"LiveProgress self-time share of fit: {100 * results['self_time_share']:.2f}% "
          "(target <= 0.5%)")
    print(f"fit wall time with LiveProgress / verbose=0 (median of {args.pairs} interleaved "
          f"pairs): {results['median_wall_ratio']:.3f} (target <= 1.03; small dense model at "
          f"{results['step_ms']:.2f} ms/step)")
    print(f"iopub during fit: {results['iopub_msgs_per_s']:.1f} msg/s (target <= 10), "
          f"{results['iopub_bytes_per_10k_steps'] / 1e6:.3f} MB per 10,000 steps (target <= 1)")
    print(f"saved notebook of a 20-epoch run: {results['saved_notebook_kb']:.0f} KB "
          "(target <= 300 KB)")
    print(f"1,000,000 steps: {results['batch_points_kept']} batch points kept, "
          f"{results['million_steps_kept_kb']:.0f} KB held (bounded)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
