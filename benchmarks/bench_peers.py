"""kernelkit's live progress next to its peers, measured side by side in one run.

Every figure comes from real kernels that a client drives and whose iopub it
reads (jupyter_client), on the issue's fit: 20,000 samples x 64 features,
Dense 64 -> 10, batch 32, 3 epochs, validation_split 0.1. Methods:

  quiet          model.fit(verbose=0)                       (the baseline)
  keras1/keras2  model.fit(verbose=1 / 2)                   (Keras's ProgbarLogger)
  tqdm           tqdm.keras.TqdmCallback()                  (ipywidgets bars)
  livelossplot   livelossplot.PlotLossesKeras()             (matplotlib, per epoch)
  hfbar          a replica of Hugging Face's NotebookProgressCallback (display handle)
  liveprogress   model.fit(verbose=0, callbacks=[LiveProgress()])
  kernelkit      kernelkit.fit(...)                         (LiveProgress, restore_on_nan on)
  kernelkit_norestore  kernelkit.fit with LiveProgress(restore_on_nan=False)
  kernelkit_ledger     kernelkit.fit of a registered model (run ledger + ghost curve)
  kernelkit_watch      kernelkit.fit with ActivationWatch (--watch) on 32 probe inputs

Each round is a fresh kernel: every method fits once on a tiny slice (imports and
first-use costs out of the timing), then each fits once for real, in an order
rotated from round to round, so every ratio to ``quiet`` is a pair from one
kernel. Figures are medians over rounds with their spread (min-max).

Columns:
  self-time     time inside the callback's own hooks (wall), as a share of fit wall
  step us       of which per-step hooks, per step
  CPU share     the method's CPU (hooks' thread CPU + kernelkit's render thread + the
                kernel's IOPub thread) as a share of the fit's process CPU
  / verbose=0   fit wall time over the same kernel's verbose=0 fit (median of pairs), and
                the same for the process's CPU time (steadier than wall on a loaded machine)
  iopub         messages and bytes the fit cell sent
  saved nb      a notebook of the fit cell saved by nbclient (widget state stored)

Usage: python benchmarks/bench_peers.py [--rounds 10] [--backend tensorflow|jax]
       [--methods quiet,kernelkit,...] [--no-notebooks]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_progress import execute, start_kernel  # noqa: E402

TF_METHODS = ("quiet", "empty", "keras1", "keras2", "tqdm", "livelossplot", "hfbar", "liveprogress",
              "kernelkit", "kernelkit_norestore", "kernelkit_ledger",
              "kernelkit_watch")  # fmt: skip
JAX_METHODS = ("quiet", "liveprogress", "kernelkit", "kernelkit_ledger", "kernelkit_watch")
LABELS = {
    "quiet": "Keras verbose=0",
    "empty": "an empty batch hook (the meter's floor)",
    "keras1": "Keras verbose=1",
    "keras2": "Keras verbose=2",
    "tqdm": "tqdm TqdmCallback",
    "livelossplot": "livelossplot PlotLossesKeras",
    "hfbar": "HF-style display-handle bar",
    "liveprogress": "kernelkit LiveProgress (model.fit)",
    "kernelkit": "kernelkit.fit",
    "kernelkit_norestore": "kernelkit.fit, restore_on_nan=False",
    "kernelkit_ledger": "kernelkit.fit, registered (ledger + ghost)",
    "kernelkit_watch": "kernelkit.fit + ActivationWatch (--watch)",
}
_LEDGER = tempfile.mkdtemp(prefix="kernelkit-bench-ledger-")
SETUP = f"import sys; sys.path.insert(0, {HERE!r}); import _peers_kernel as pk"


def kernel_env(backend: str) -> dict:
    # The registered-model runs write to a ledger: a throwaway folder, not the checkout.
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               KERNELKIT_LEDGER=_LEDGER)
    return env


def result_of(kc, expression: str) -> dict:
    text, _, _ = execute(kc, f"print(__import__('json').dumps({expression}))")
    return json.loads(text.strip().splitlines()[-1])


def one_round(index: int, methods: tuple[str, ...], backend: str) -> list[dict]:
    km, kc = start_kernel(env=kernel_env(backend))
    try:
        execute(kc, SETUP)
        for kind in methods:  # imports, tracing, first widgets: out of the timing
            execute(kc, f"pk.run({kind!r}, n=640, epochs=1)")
        shift = index % len(methods)
        order = methods[shift:] + methods[:shift]
        results = []
        for kind in order:
            _, msgs, _ = execute(kc, f"r = pk.run({kind!r})")
            traffic = [m for m in msgs if m[0] not in ("status", "execute_input")]
            result = result_of(kc, "r")
            result.update(msgs=len(traffic), bytes=sum(m[1] for m in traffic), round=index)
            results.append(result)
        return results
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def saved_notebook_kb(kind: str, backend: str, epochs: int) -> float:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}  # fmt: skip
    nb.cells = [nbformat.v4.new_code_cell(SETUP),
                nbformat.v4.new_code_cell(f"r = pk.run({kind!r}, epochs={epochs})")]  # fmt: skip
    env = kernel_env(backend)
    old = dict(os.environ)
    os.environ.update(env)  # nbclient's kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3").execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.ipynb")
        nbformat.write(nb, path)
        return os.path.getsize(path) / 1024


def spread(values: list[float], scale: float = 1.0, fmt: str = "{:.3f}") -> str:
    values = [v * scale for v in values]
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def summarize(results: list[dict], methods: tuple[str, ...], saved: dict[str, float]) -> dict:
    by_round: dict[int, dict[str, dict]] = {}
    for r in results:
        by_round.setdefault(r["round"], {})[r["kind"]] = r
    rows = {}
    for rr in by_round.values():
        for r in rr.values():  # the IOPub thread's CPU beyond what a quiet fit costs it
            r["iopub_extra"] = max(r["iopub_cpu"] - rr["quiet"]["iopub_cpu"], 0.0)
    for kind in methods:
        runs = [rr[kind] for rr in by_round.values() if kind in rr]
        ratios = [rr[kind]["wall"] / rr["quiet"]["wall"] for rr in by_round.values()]
        to_v1 = [rr[kind]["wall"] / rr["keras1"]["wall"] for rr in by_round.values()
                 if "keras1" in rr]  # fmt: skip
        rows[kind] = {
            "self": [r["hooks_wall"] / r["wall"] for r in runs],
            "step_us": [1e6 * r["step_wall"] / max(r["steps"], 1) for r in runs],
            "cpu_share": [(r["hooks_cpu"] + r["render_cpu"] + r["iopub_extra"]) / r["cpu"]
                          for r in runs],
            "hooks_cpu_share": [r["hooks_cpu"] / r["cpu"] for r in runs],
            "render_cpu_share": [r["render_cpu"] / r["cpu"] for r in runs],
            "iopub_cpu_share": [r["iopub_extra"] / r["cpu"] for r in runs],
            "keep_ms": [1e3 * r["keep_wall"] / r["keep_calls"] for r in runs if r["keep_calls"]],
            "keep_share": [r["keep_wall"] / r["wall"] for r in runs],
            "ratio": ratios,
            "cpu_ratio": [rr[kind]["cpu"] / rr["quiet"]["cpu"] for rr in by_round.values()],
            "to_verbose1": to_v1,
            "msgs": [r["msgs"] for r in runs],
            "msgs_per_s": [r["msgs"] / r["wall"] for r in runs],
            "bytes_per_10k": [r["bytes"] / r["steps"] * 1e4 for r in runs],
            "bytes": [r["bytes"] for r in runs],
            "step_ms": [1e3 * r["wall"] / r["steps"] for r in runs],
            "load": [r["load"] for r in runs],
            "saved_kb": saved.get(kind),
            "by_hook": {name: [1e3 * r["by_hook"].get(name, 0.0) for r in runs]
                        for name in sorted({n for r in runs for n in r["by_hook"]})},
            "step_total_ms": [1e3 * r["step_wall"] for r in runs],
            "input_batches": [r.get("input_batches", 0) for r in runs],
            "input_share": [r.get("input_wait", 0.0) / r["wall"] for r in runs],
            "to_kernelkit": [rr[kind]["wall"] / rr["kernelkit"]["wall"]
                             for rr in by_round.values() if "kernelkit" in rr],
        }
    return rows


def print_table(rows: dict, backend: str, rounds: int) -> None:
    print(f"\n## {backend}: {rounds} rounds (fresh kernels), medians (min-max)\n")
    print("| method | self-time / fit | per-step hooks | CPU share | fit / verbose=0 "
          "| fit CPU / verbose=0 | iopub msgs | iopub KB | saved nb |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, row in rows.items():
        saved = f"{row['saved_kb']:.0f} KB" if row["saved_kb"] is not None else "-"
        if kind == "quiet":
            self_time = step = cpu = "-"
        else:
            self_time = spread(row["self"], 100, "{:.2f}%")
            step = spread(row["step_us"], 1, "{:.1f} us")
            cpu = spread(row["cpu_share"], 100, "{:.2f}%")
        print(f"| {LABELS[kind]} | {self_time} | {step} | {cpu} | {spread(row['ratio'])} "
              f"| {spread(row['cpu_ratio'])} "
              f"| {statistics.median(row['msgs']):.0f} "
              f"| {statistics.median(row['bytes']) / 1024:.0f} | {saved} |")  # fmt: skip
    quiet = rows["quiet"]
    print(f"\nstep time (verbose=0): {spread(quiet['step_ms'], 1, '{:.2f} ms')}; "
          f"1-min load average during the fits: {spread(quiet['load'], 1, '{:.2f}')} "
          f"on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--methods", default=None)
    parser.add_argument("--no-notebooks", action="store_true")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    args = parser.parse_args()
    methods = tuple(args.methods.split(",")) if args.methods else (
        TF_METHODS if args.backend == "tensorflow" else JAX_METHODS)
    if "quiet" not in methods:
        methods = ("quiet", *methods)
    import keras

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, keras {keras.__version__}, backend {args.backend}")
    t0 = time.monotonic()
    results = []
    for index in range(args.rounds):
        results += one_round(index, methods, args.backend)
        print(f"round {index + 1}/{args.rounds} done ({time.monotonic() - t0:.0f} s)", flush=True)
    saved = {}
    if not args.no_notebooks:
        for kind in methods:
            saved[kind] = saved_notebook_kb(kind, args.backend, 3)
        if "kernelkit" in methods:
            saved["kernelkit (20 epochs)"] = saved_notebook_kb("kernelkit", args.backend, 20)
    rows = summarize(results, methods, saved)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "saved": saved}, f)
    print_table(rows, args.backend, args.rounds)
    clock_us = input_clock_us(args.backend) if "kernelkit" in methods else None
    report_kernelkit(rows, saved, clock_us)
    if args.backend == "tensorflow":
        report_logs_conversion()


def input_clock_us(backend: str) -> float:
    """The input clock's cost per batch, measured in a fresh kernel of ``backend``."""
    km, kc = start_kernel(env=kernel_env(backend))
    try:
        execute(kc, SETUP)
        return float(result_of(kc, "pk.input_clock_us()"))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def report_logs_conversion() -> None:
    km, kc = start_kernel(env=kernel_env("tensorflow"))
    try:
        execute(kc, SETUP)
        found = result_of(kc, "pk.logs_conversion()")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    print("\nKeras's per-step logs conversion (pythonify_logs) on TensorFlow, one epoch:")
    for name, label in (("none", "no callback, verbose=0"), ("epoch_only", "an epoch-only "
                        "callback"), ("batch_hook", "a callback with a batch hook")):  # fmt: skip
        f = found[name]
        print(f"  {label}: {f['calls_per_step']:.2f} calls per step, {f['us_per_call']:.1f} us "
              f"each, {100 * f['share']:.2f}% of fit wall")


def report_kernelkit(rows: dict, saved: dict, clock_us: float | None = None) -> None:
    kk = rows.get("kernelkit")
    if kk is None:
        return
    print()
    print(f"kernelkit.fit self-time: {spread(kk['self'], 100, '{:.3f}%')} of fit wall "
          "(target <= 0.2%)")
    parts = ", ".join(f"{name} {statistics.median(ms):.2f}" for name, ms in kk["by_hook"].items())
    print(f"  where (ms, medians): per-step hooks {statistics.median(kk['step_total_ms']):.2f}, "
          f"{parts}")
    print(f"kernelkit CPU: hooks {spread(kk['hooks_cpu_share'], 100, '{:.3f}%')} + render "
          f"thread {spread(kk['render_cpu_share'], 100, '{:.3f}%')} + IOPub thread "
          f"{spread(kk['iopub_cpu_share'], 100, '{:.3f}%')} = "
          f"{spread(kk['cpu_share'], 100, '{:.3f}%')} of fit CPU (target <= 0.5%)")
    print(f"kernelkit.fit / verbose=0: {spread(kk['ratio'])} (target <= 1.03); fit CPU "
          f"{spread(kk['cpu_ratio'])}")
    if kk["to_verbose1"]:
        print(f"kernelkit.fit / verbose=1: {spread(kk['to_verbose1'])} (target <= 1.0)")
    if "liveprogress" in rows:
        print(f"LiveProgress in model.fit / verbose=0: {spread(rows['liveprogress']['ratio'])}")
    if kk["keep_ms"]:
        print(f"restore_on_nan: {spread(kk['keep_ms'], 1, '{:.2f} ms')} per state copy "
              f"(fit start + each epoch end), {spread(kk['keep_share'], 100, '{:.3f}%')} of fit "
              "wall")
    if "kernelkit_norestore" in rows:
        norestore = rows["kernelkit_norestore"]["ratio"]
        pairs = [a / b for a, b in zip(kk["ratio"], norestore, strict=True)]
        print(f"kernelkit.fit wall, restore_on_nan=True / False: {spread(pairs)}")
    report_diagnostics(rows, clock_us)
    print(f"iopub during kernelkit.fit: {spread(kk['msgs_per_s'], 1, '{:.1f}')} msg/s (target "
          f"<= 10), {spread(kk['bytes_per_10k'], 1e-6, '{:.3f}')} MB per 10,000 steps "
          "(target <= 1)")
    if "kernelkit (20 epochs)" in saved:
        print(f"saved notebook of a 20-epoch kernelkit.fit: {saved['kernelkit (20 epochs)']:.0f} "
              "KB (target <= 100 KB)")


def report_diagnostics(rows: dict, clock_us: float | None) -> None:
    """The diagnostics' own cost: the input clock, the run ledger and the activation watch."""
    kk = rows["kernelkit"]
    if clock_us is not None and any(kk["input_batches"]):
        batches = statistics.median(kk["input_batches"])
        # One clock pair per batch, one batch per step: its cost over the step time.
        steps_share = [
            clock_us * 1e-3 / ms
            for b, ms in zip(kk["input_batches"], kk["step_ms"], strict=True)
            if b
        ]
        print(f"input clock: {clock_us:.2f} us per batch pulled ({batches:.0f} batches), "
              f"{spread(steps_share, 100, '{:.3f}%')} of fit wall; the steps waited "
              f"{spread(kk['input_share'], 100, '{:.1f}%')} of fit wall for input")
    elif clock_us is not None:
        print("input clock: not used on this backend (TensorFlow pulls batches in its graph)")
    for kind, what in (("kernelkit_ledger", "run ledger + ghost (registered model)"),
                       ("kernelkit_watch", "ActivationWatch on 32 probe inputs")):  # fmt: skip
        if kind in rows and rows[kind]["to_kernelkit"]:
            print(f"{what}: kernelkit.fit wall with / without {spread(rows[kind]['to_kernelkit'])}"
                  f", fit / verbose=0 {spread(rows[kind]['ratio'])}")


if __name__ == "__main__":
    main()
