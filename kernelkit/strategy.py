"""Pick and drive the backend's own distribution: kernelkit never distributes work itself.

On TensorFlow the answer is a ``tf.distribute`` strategy; on JAX a
``keras.distribution`` distribution (or None for the default). The work is
split in two:

* :func:`plan` decides from a :class:`~kernelkit.devices.DeviceReport` alone,
  builds nothing and imports nothing, so it is cheap and tests can feed it any
  fake machine;
* :func:`resolve` builds what the plan names (connecting a TPU once per
  process) and falls back, with a note, when a TPU does not answer.

:func:`prepare_fit` adjusts a fit for the strategy's known Keras problems before
training starts; :func:`scope` and :func:`describe` are backend-neutral helpers
for the session.
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

from .data import num_samples as _num_samples
from .data import split_samples
from .devices import DeviceReport, devices

__all__ = [
    "SPECS",
    "Plan",
    "Resolved",
    "StrategyNote",
    "describe",
    "plan",
    "prepare_fit",
    "resolve",
    "scope",
    "strategy",
]

#: The accepted ``spec`` values.
SPECS = ("auto", "cpu", "gpu", "mirrored", "tpu")

#: steps_per_execution given to a model under a TPU when it was compiled with 1.
TPU_STEPS_PER_EXECUTION = 32

_MULTI_WORKER = (
    "Keras 3 cannot fit under MultiWorkerMirroredStrategy across {workers} workers "
    "(keras-team/keras#20585): unset TF_CONFIG, or train on several workers with "
    "kernelkit's multi-worker route (%%kmodel --workers N, Keras's JAX distribution)"
)
_HOW_TPU = (
    "on Colab choose Runtime > Change runtime type > TPU; on Kaggle, Settings > "
    "Accelerator > TPU VM; elsewhere set TPU_NAME"
)
_HOW_GPU = (
    "on Colab choose Runtime > Change runtime type > GPU; on Kaggle, Settings > Accelerator > GPU"
)


class StrategyNote(UserWarning):
    """A one-line remark from :func:`strategy` (e.g. a TPU that did not answer)."""


class _MissingHardware(ValueError):
    """The spec asks for hardware the report does not list."""


@dataclass(frozen=True)
class Plan:
    """What a spec means on one machine, decided without building anything.

    Attributes:
        spec: the spec asked for.
        kind: "default", "one_device", "mirrored", "tpu", "multi_worker" or
            "data_parallel".
        devices: the backend devices it spans, e.g. ("GPU:0", "GPU:1").
        text: one line for people, e.g. "MirroredStrategy over GPU:0, GPU:1".
        notes: one-line remarks.
        backend: the Keras backend the plan is for.
        tpu_address: for kind "tpu", the ``TPUClusterResolver(tpu=...)`` argument.

    """

    spec: str
    kind: str
    devices: tuple[str, ...] = ()
    text: str = "default strategy"
    notes: tuple[str, ...] = ()
    backend: str = "tensorflow"
    tpu_address: str | None = None


@dataclass(frozen=True)
class Resolved:
    """A built strategy and what to tell the user about it.

    Attributes:
        strategy: a ``tf.distribute.Strategy``, a ``keras.distribution.Distribution``,
            or None (JAX/torch default: nothing to distribute).
        text: as :func:`describe` puts it, e.g. "MirroredStrategy (2 replicas)".
        replicas: replicas (devices) that each step is split over.
        notes: one-line remarks (fallbacks, ignored settings).
        plan: the plan it was built from.

    """

    strategy: Any
    text: str
    replicas: int
    notes: tuple[str, ...]
    plan: Plan


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _check_spec(spec: str) -> str:
    if not isinstance(spec, str) or spec.strip().lower() not in SPECS:
        raise ValueError(f"Unknown strategy {spec!r}: use one of {', '.join(SPECS)}.")
    return spec.strip().lower()


# --------------------------------------------------------------------------------------
# plan: spec + report -> Plan (pure)
# --------------------------------------------------------------------------------------


def plan(spec: str, report: DeviceReport) -> Plan:
    """Decides what ``spec`` means on the machine ``report`` describes.

    ``auto`` picks a TPU when one is found, else MirroredStrategy over two or
    more GPUs, else the default strategy; TF_CONFIG naming one task gives
    MultiWorkerMirroredStrategy. On JAX, ``auto`` is DataParallel over the
    backend's devices when there are several.

    Args:
        spec: one of :data:`SPECS`.
        report: from :func:`kernelkit.devices`.

    Returns:
        A :class:`Plan`.

    Raises:
        ValueError: unknown spec; the hardware the spec asks for is missing; or
            TF_CONFIG names several workers (Keras 3 cannot fit there).

    Example:
        >>> from kernelkit.devices import FakeProbe, detect
        >>> plan("auto", detect(FakeProbe(environ={}, modules=(), gpus=2))).text
        'MirroredStrategy over GPU:0, GPU:1'

    """
    spec = _check_spec(spec)
    if report.backend == "jax":
        return _plan_jax(spec, report)
    if report.backend != "tensorflow":
        return _plan_other(spec, report)
    return _plan_tensorflow(spec, report)


def _gpu_hint(report: DeviceReport) -> str:
    if report.gpus and not report.backend_gpus:
        return f" ({len(report.gpus)} GPU(s) here, but the {report.backend} build cannot use them)"
    return ""


def _plan_tensorflow(spec: str, report: DeviceReport) -> Plan:
    gpus = report.device_names("GPU")
    cpus = report.device_names("CPU")
    notes: list[str] = []
    if report.workers > 1 or report.parameter_servers:
        if spec == "auto":
            # Never build it: its constructor waits for every peer, and the fit
            # that follows fails anyway.
            raise ValueError(f"TF_CONFIG is set: {_MULTI_WORKER.format(workers=report.workers)}.")
        notes.append(f"TF_CONFIG is ignored by strategy {spec!r}")

    def mirrored(names: tuple[str, ...]) -> Plan:
        return Plan(
            spec, "mirrored", names, "MirroredStrategy over " + ", ".join(names), tuple(notes)
        )

    def default(text: str = "default strategy") -> Plan:
        return Plan(spec, "default", (), text, tuple(notes))

    def tpu() -> Plan:
        assert report.tpu is not None
        if report.version("tensorflow") is None:
            # Colab's and Kaggle's TPU runtimes ship no TensorFlow since 2025.
            raise ValueError(
                "TPUStrategy needs TensorFlow, which this runtime does not have: set "
                "KERAS_BACKEND=jax before Keras is imported (kernelkit then trains on the TPU "
                "through keras.distribution), or pip install 'kernelkit[tensorflow]'."
            )
        return Plan(
            spec,
            "tpu",
            (),
            f"TPUStrategy ({report.tpu.summary})",
            tuple(notes),
            tpu_address=report.tpu.address,
        )

    if spec == "auto":
        if report.tpu is not None:
            return tpu()
        if report.workers == 1:
            return Plan(
                spec,
                "multi_worker",
                (),
                "MultiWorkerMirroredStrategy (TF_CONFIG, 1 worker)",
                tuple(notes),
            )
        if len(gpus) >= 2:
            return mirrored(gpus)
        return default(f"default strategy ({gpus[0]})" if gpus else "default strategy")
    if spec == "tpu":
        if report.tpu is None:
            raise _MissingHardware(f"No TPU found for strategy 'tpu': {_HOW_TPU}.")
        return tpu()
    if spec == "gpu":
        if not gpus:
            raise _MissingHardware(
                f"No GPU visible to TensorFlow for strategy 'gpu'{_gpu_hint(report)}: {_HOW_GPU}."
            )
        return mirrored(gpus) if len(gpus) >= 2 else default(f"default strategy ({gpus[0]})")
    if spec == "mirrored":
        if gpus:
            return mirrored(gpus)
        if len(cpus) >= 2:
            return mirrored(cpus)
        raise _MissingHardware(
            "MirroredStrategy needs two or more devices, found "
            f"{', '.join(report.devices) or 'none'}{_gpu_hint(report)}: get GPUs ({_HOW_GPU}), "
            "or split the CPU with tf.config.set_logical_device_configuration before any "
            "TensorFlow op."
        )
    # spec == "cpu"
    if gpus or report.device_names("TPU"):
        return Plan(spec, "one_device", ("CPU:0",), "OneDeviceStrategy (CPU:0)", tuple(notes))
    return default()


def _plan_jax(spec: str, report: DeviceReport) -> Plan:
    names = report.devices
    notes: list[str] = []
    if report.workers:
        notes.append("TF_CONFIG is ignored under the JAX backend")

    def spread(devices: tuple[str, ...], what: str) -> Plan:
        if len(devices) >= 2:
            return Plan(
                spec,
                "data_parallel",
                devices,
                f"DataParallel over {_plural(len(devices), what)}",
                tuple(notes),
                "jax",
            )
        return Plan(spec, "default", devices, "default (one device)", tuple(notes), "jax")

    if spec == "auto":
        kind = names[0].split(":")[0] if names else "CPU"
        return spread(names, f"{kind} device")
    if spec == "tpu":
        tpus = report.device_names("TPU")
        if not tpus:
            extra = (
                " (a TPU is attached, but JAX sees none: pip install 'jax[tpu]')"
                if report.tpu
                else ""
            )
            raise _MissingHardware(f"No TPU visible to JAX for strategy 'tpu'{extra}: {_HOW_TPU}.")
        return spread(tpus, "TPU device")
    if spec == "gpu":
        gpus = report.device_names("GPU")
        if not gpus:
            raise _MissingHardware(
                f"No GPU visible to JAX for strategy 'gpu'{_gpu_hint(report)}: {_HOW_GPU}."
            )
        return spread(gpus, "GPU")
    if spec == "mirrored":
        if len(names) < 2:
            raise _MissingHardware(
                f"Data parallelism needs two or more devices, found {', '.join(names) or 'none'}: "
                f"get GPUs ({_HOW_GPU}), or split the CPU with "
                "XLA_FLAGS=--xla_force_host_platform_device_count=2 before JAX starts."
            )
        kind = names[0].split(":")[0]
        return spread(names, f"{kind} device")
    # spec == "cpu"
    if names and all(name.startswith("CPU:") for name in names):
        return Plan(spec, "default", names[:1], "default (CPU)", tuple(notes), "jax")
    return Plan(spec, "one_device", ("CPU:0",), "DataParallel over CPU:0", tuple(notes), "jax")


def _plan_other(spec: str, report: DeviceReport) -> Plan:
    if spec in ("auto", "cpu") and (spec == "auto" or not report.backend_gpus):
        notes = ()
        if report.backend_gpus > 1 or report.tpu:
            notes = (
                f"Keras's {report.backend} backend trains on one device here; "
                "set KERAS_BACKEND=tensorflow or jax to use them all",
            )
        return Plan(spec, "default", (), "default", notes, report.backend)
    raise ValueError(
        f"Strategy {spec!r} needs Keras's tensorflow or jax backend (this kernel uses "
        f"{report.backend}): set KERAS_BACKEND before importing Keras."
    )


# --------------------------------------------------------------------------------------
# resolve: Plan -> a built strategy
# --------------------------------------------------------------------------------------

_BUILT: dict[tuple[Any, ...], Any] = {}


def resolve(spec: str = "auto", report: DeviceReport | None = None) -> Resolved:
    """Builds the strategy ``spec`` names on this machine.

    A TPU is connected and initialised once per process (a second
    ``initialize_tpu_system`` would wipe it); other strategies are cached too, so
    a model built in one cell can be fitted in the same strategy in another.

    Args:
        spec: one of :data:`SPECS`.
        report: the machine; default :func:`kernelkit.devices`.

    Returns:
        A :class:`Resolved` (strategy, text, replicas, notes).

    Raises:
        ValueError: as :func:`plan`; or an explicit ``tpu`` whose TPU does not answer.

    Example:
        >>> resolved = resolve("auto")  # doctest: +SKIP
        >>> resolved.text, resolved.replicas  # doctest: +SKIP
        ('default', 1)

    """
    report = report if report is not None else devices()
    chosen = plan(spec, report)
    notes = list(chosen.notes)
    if chosen.kind == "tpu":
        try:
            built = _connect_tpu(chosen.tpu_address)
        except Exception as error:
            reason = _first_line(error)
            if chosen.spec == "tpu":
                raise ValueError(
                    f"TPU found ({report.tpu.found_by if report.tpu else '?'}) but TensorFlow "
                    f"could not start it: {reason}. Restart the runtime and call "
                    "kernelkit.strategy('tpu') before any other TensorFlow code."
                ) from error
            notes.append(f"TPU found but not started ({reason}); using the default strategy")
            chosen = plan(spec, replace(report, tpu=None))
            notes.extend(note for note in chosen.notes if note not in notes)
            built = _build(chosen)
    else:
        built = _build(chosen)
    text, replicas = describe(built)
    return Resolved(built, text, replicas, tuple(notes), chosen)


def _first_line(error: BaseException) -> str:
    # TensorFlow's messages run on for lines (op attributes); the first sentence says it.
    lines = str(error).strip().splitlines()
    sentence = lines[0].split(". ")[0].rstrip(".")[:160] if lines else ""
    return f"{type(error).__name__}: {sentence}".rstrip(": ")


def _connect_tpu(address: str | None) -> Any:
    if ("tpu", address) in _BUILT:
        return _BUILT["tpu", address]
    import tensorflow as tf

    # TPUClusterResolver() raises ValueError at once when nothing names a TPU;
    # tpu="local" (Colab/Kaggle TPU VMs) constructs, then initialisation raises
    # NotFoundError where no TPU is attached. Both reach the caller.
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
    tf.config.experimental_connect_to_cluster(resolver)  # a no-op for "local"
    tf.tpu.experimental.initialize_tpu_system(resolver)
    built = tf.distribute.TPUStrategy(resolver)
    _BUILT["tpu", address] = built
    return built


def _build(chosen: Plan) -> Any:
    if chosen.backend == "jax":
        return _build_jax(chosen)
    if chosen.backend != "tensorflow":
        return None
    import tensorflow as tf

    if chosen.kind == "default":
        return tf.distribute.get_strategy()
    key = ("tensorflow", chosen.kind, chosen.devices)
    if key in _BUILT:
        return _BUILT[key]
    if chosen.kind == "mirrored":
        built = tf.distribute.MirroredStrategy(devices=[f"/device:{n}" for n in chosen.devices])
    elif chosen.kind == "one_device":
        built = tf.distribute.OneDeviceStrategy(f"/device:{chosen.devices[0]}")
    elif chosen.kind == "multi_worker":
        built = tf.distribute.MultiWorkerMirroredStrategy()
    else:  # pragma: no cover - plan() only names the kinds above
        raise ValueError(f"cannot build a {chosen.kind!r} strategy")
    _BUILT[key] = built
    return built


def _build_jax(chosen: Plan) -> Any:
    if chosen.kind == "default":
        return None
    key = ("jax", chosen.kind, chosen.devices)
    if key in _BUILT:
        return _BUILT[key]
    import keras

    names = [name.lower() for name in chosen.devices]  # Keras's "cpu:0" spelling
    built = keras.distribution.DataParallel(devices=names)
    _BUILT[key] = built
    return built


def strategy(spec: str = "auto", report: DeviceReport | None = None) -> Any:
    """Picks the distribution for this machine: TPU, several GPUs, or the default.

    ``auto``: a TPU when one is found (Colab and Kaggle TPU VMs, legacy Colab,
    TPU_NAME), connected once per process -> ``TPUStrategy``; two or more GPUs
    -> ``MirroredStrategy``; else ``tf.distribute.get_strategy()``. Under
    ``KERAS_BACKEND=jax`` it is ``keras.distribution.DataParallel`` over
    several devices, else None. Remarks (such as a TPU that did not answer)
    are issued as :class:`StrategyNote` warnings.

    Args:
        spec: "auto", "cpu", "gpu", "mirrored" or "tpu".
        report: the machine; default :func:`kernelkit.devices` (re-detected once
            when it lacks the hardware asked for, in case devices were
            configured since).

    Returns:
        The strategy; enter it with :func:`scope` (or ``strategy.scope()``).

    Raises:
        ValueError: one line naming the problem and the fix: unknown spec,
            missing hardware, or TF_CONFIG naming several workers.

    Example:
        >>> import kernelkit, keras
        >>> with kernelkit.strategy("auto").scope():  # doctest: +SKIP
        ...     model = keras.Sequential([keras.layers.Dense(1)])

    """
    try:
        resolved = resolve(spec, report)
    except _MissingHardware:
        if report is not None:
            raise
        resolved = resolve(spec, devices(refresh=True))
    for note in resolved.notes:
        warnings.warn(note, StrategyNote, stacklevel=2)
    return resolved.strategy


# --------------------------------------------------------------------------------------
# Helpers for the session: scope, describe, prepare_fit
# --------------------------------------------------------------------------------------


def scope(strategy: Any) -> AbstractContextManager[Any]:
    """Enters a strategy, whatever the backend.

    ``tf.distribute`` strategies and ``keras.distribution`` distributions both
    have ``scope()`` (the latter restores the previous distribution on exit);
    None (the JAX/torch default) gives an empty context.

    Example:
        >>> with scope(None):
        ...     pass

    """
    if strategy is None:
        return contextlib.nullcontext()
    return strategy.scope()


def _kind(strategy: Any) -> str:
    if strategy is None:
        return "default"
    names = {cls.__name__ for cls in type(strategy).__mro__}
    module = type(strategy).__module__
    if module.startswith("keras"):
        return "data_parallel" if "DataParallel" in names else "distribution"
    if "_DefaultDistributionStrategy" in names:
        return "default"
    if names & {"TPUStrategy", "TPUStrategyV2", "TPUStrategyV1"}:
        return "tpu"
    if names & {"CollectiveAllReduceStrategy", "MultiWorkerMirroredStrategy"}:
        return "multi_worker"
    if "MirroredStrategy" in names:
        return "mirrored"
    if "OneDeviceStrategy" in names:
        return "one_device"
    return "other"


def _workers(strategy: Any) -> int:
    try:
        cluster = strategy.cluster_resolver.cluster_spec().as_dict()
        return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))
    except Exception:
        return int(getattr(strategy.extended, "_num_workers", 1) or 1)


def _mesh_size(distribution: Any) -> int:
    try:
        return int(distribution.device_mesh.devices.size)
    except Exception:
        return 1


def describe(strategy: Any) -> tuple[str, int]:
    """Says what a strategy is, for progress views and events.

    Args:
        strategy: a tf.distribute strategy, a keras.distribution distribution or None.

    Returns:
        (text, replicas), e.g. ("MirroredStrategy (2 replicas)", 2) or ("default", 1).

    Example:
        >>> describe(None)
        ('default', 1)

    """
    kind = _kind(strategy)
    if kind == "default":
        return "default", 1
    if kind in ("data_parallel", "distribution"):
        size = _mesh_size(strategy)
        return f"{type(strategy).__name__} ({_plural(size, 'device')})", size
    replicas = int(getattr(strategy, "num_replicas_in_sync", 1) or 1)
    if kind == "multi_worker":
        workers = _workers(strategy)
        return (
            f"MultiWorkerMirroredStrategy ({_plural(workers, 'worker')}, "
            f"{_plural(replicas, 'replica')})",
            replicas,
        )
    if kind == "one_device":
        device = getattr(strategy.extended, "worker_devices", ("?",))[0]
        return f"OneDeviceStrategy ({device.rsplit('device:', 1)[-1]})", 1
    name = "TPUStrategy" if kind == "tpu" else type(strategy).__name__
    return f"{name} ({_plural(replicas, 'replica')})", replicas


def batch_sizes(samples: int, batch_size: int) -> tuple[int, ...]:
    """The distinct batch sizes Keras feeds for ``samples`` rows: full ones, then the short last.

    Example:
        >>> batch_sizes(68, 16)
        (16, 4)
        >>> batch_sizes(16, 100)
        (16,)

    """
    sizes = []
    if samples >= batch_size:
        sizes.append(batch_size)
    if samples % batch_size:
        sizes.append(samples % batch_size)
    return tuple(sizes)


def in_force() -> Any:
    """The distribution the user already set, if any (before kernelkit chose one).

    On JAX that is the global ``keras.distribution.distribution()`` (the Keras
    FAQ's TPU recipe sets it with ``set_distribution``); on TensorFlow a
    non-default ``tf.distribute`` strategy whose scope is entered (or that was set
    with ``tf.distribute.experimental_set_strategy``). Nothing is imported.

    Returns:
        The distribution or strategy, or None.

    Example:
        >>> in_force() is None  # doctest: +SKIP
        True

    """
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    backend = keras.backend.backend()
    if backend == "jax":
        return keras.distribution.distribution()
    tf = sys.modules.get("tensorflow")
    if backend == "tensorflow" and tf is not None and tf.distribute.has_strategy():
        found = tf.distribute.get_strategy()
        return None if _kind(found) == "default" else found
    return None


def same(a: Any, b: Any) -> bool:
    """Whether two strategies/distributions train the same way (kind and devices)."""
    if a is b:
        return True
    if _kind(a) != _kind(b) or describe(a) != describe(b):
        return False
    return _device_ids(a) == _device_ids(b)


def _device_ids(strategy: Any) -> tuple[str, ...]:
    mesh = getattr(strategy, "device_mesh", None)
    if mesh is not None:
        return tuple(str(d) for d in mesh.devices.flat)
    return tuple(getattr(getattr(strategy, "extended", None), "worker_devices", ()))


def _platform(strategy: Any) -> str | None:
    """The device platform a JAX fit runs on ("tpu", "gpu", "cpu"), read without importing jax."""
    mesh = getattr(strategy, "device_mesh", None)
    if mesh is not None:
        return str(getattr(mesh.devices.flat[0], "platform", "") or "") or None
    jax = sys.modules.get("jax")
    try:
        return str(jax.devices()[0].platform) if jax is not None else None
    except Exception:
        return None


_HINTED: set[int] = set()  # models already told about steps_per_execution


def _current_distribution() -> Any:
    # Under JAX, fit follows the global keras.distribution; read it only if Keras
    # is already imported (prepare_fit must not import a backend).
    keras = sys.modules.get("keras")
    try:
        return keras.distribution.distribution() if keras is not None else None
    except Exception:
        return None


def _set_steps_per_execution(model: Any, steps: int) -> None:
    # steps_per_execution is a compile setting that the train/test/predict
    # functions read when they are traced: set it and drop the traced ones, so the
    # next fit rebuilds them (cheaper than a recompile, and keeps optimizer state).
    model.steps_per_execution = steps
    for name in ("train_function", "test_function", "predict_function"):
        if hasattr(model, name):
            setattr(model, name, None)


def prepare_fit(
    model: Any,
    strategy: Any,
    fit_kwargs: Mapping[str, Any] | None = None,
    *,
    platform: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Adjusts a fit for its strategy before training starts.

    * MirroredStrategy: ``steps_per_execution`` > 1 fails inside fit
      (keras-team/keras#19246), so it is set to 1, with a note.
    * TPUStrategy: a model compiled with the default ``steps_per_execution=1``
      gets 32 (fewer host round trips); compile with another value to keep yours.
    * The global batch is checked against the replicas: where an uneven split
      fails mid-fit (MirroredStrategy, a JAX distribution, which also cannot
      take a short last batch) a ValueError; under a TPU a note.
    * A model built outside the strategy's scope: a ValueError (Keras fails
      with a bare AssertionError inside fit otherwise).
    * MultiWorkerMirroredStrategy across several workers: a ValueError, because
      Keras 3's fit fails there (keras-team/keras#20585).
    * JAX on a TPU with ``steps_per_execution=1``: a note, once per model, that
      the Keras FAQ recommends a larger value there (compile settings are the
      user's, so nothing is changed).

    Nothing is changed when it raises.

    Args:
        model: the compiled Keras model.
        strategy: the strategy the fit runs in (None: the model's own, or none).
        fit_kwargs: the keyword arguments for ``model.fit`` (``x``, ``y``,
            ``batch_size``, ``validation_data``...).
        platform: the JAX device platform ("tpu", "gpu", "cpu"); default: read
            from the distribution's devices (tests pass "tpu").

    Returns:
        (fit kwargs to use, one-line notes).

    Raises:
        ValueError: the fit cannot work in this strategy (see above).

    Example:
        >>> kwargs, notes = prepare_fit(model, strat, {"x": x, "y": y})  # doctest: +SKIP
        >>> model.fit(**kwargs)  # doctest: +SKIP

    """
    kwargs = dict(fit_kwargs or {})
    notes: list[str] = []
    # The TF backend records the strategy a model was created in (None outside
    # any scope) and fit always trains in that one.
    tf_model = hasattr(model, "_distribute_strategy")
    own = getattr(model, "_distribute_strategy", None)
    if strategy is None:
        strategy = own if tf_model else _current_distribution()
    elif tf_model and _kind(strategy) not in ("default", "data_parallel", "distribution"):
        if own is None:
            raise ValueError(
                f"The model was built outside {describe(strategy)[0]}'s scope: build and "
                "compile it inside `with kernelkit.scope(strategy):` (or strategy.scope())."
            )
        if own is not strategy:
            notes.append(
                "the model was built in another strategy's scope; Keras trains it with "
                f"{describe(own)[0]}"
            )
            strategy = own
    kind = _kind(strategy)
    text, replicas = describe(strategy)

    if kind == "multi_worker" and _workers(strategy) > 1:
        raise ValueError(_MULTI_WORKER.format(workers=_workers(strategy)) + ".")

    x = kwargs.get("x")
    samples = _num_samples(x)
    batch = kwargs.get("batch_size")
    if batch is None and samples is not None:
        per_epoch = kwargs.get("steps_per_epoch")
        # Keras's ArrayDataAdapter: batch_size from steps_per_epoch when given, else 32.
        batch = math.ceil(samples / per_epoch) if per_epoch else 32
    if replicas > 1 and batch:
        _check_batches(kind, text, replicas, batch, samples, kwargs, notes)

    steps = int(getattr(model, "steps_per_execution", 1) or 1)
    if kind in ("mirrored", "multi_worker") and steps > 1:
        _set_steps_per_execution(model, 1)
        notes.append(
            f"{text}: steps_per_execution {steps} -> 1, since it fails inside fit "
            "otherwise (keras-team/keras#19246)"
        )
    elif steps == 1 and kind != "tpu" and not tf_model and id(model) not in _HINTED:
        if (platform or _platform(strategy)) == "tpu":
            _HINTED.add(id(model))
            notes.append(
                "TPU: each step is one host round trip; compile with steps_per_execution=32 "
                "(or more) to run many steps per call, as the Keras FAQ recommends"
            )
    elif kind == "tpu" and steps == 1:
        per_epoch = kwargs.get("steps_per_epoch")
        if per_epoch is None and samples and batch:
            per_epoch = math.ceil(samples / batch)
        chosen = min(TPU_STEPS_PER_EXECUTION, per_epoch) if per_epoch else TPU_STEPS_PER_EXECUTION
        if chosen > 1:
            _set_steps_per_execution(model, chosen)
            notes.append(
                f"{text}: steps_per_execution 1 -> {chosen} (fewer host round trips); "
                "compile with another value to choose yours"
            )
    return kwargs, notes


def _check_batches(
    kind: str,
    text: str,
    replicas: int,
    batch: int,
    samples: int | None,
    kwargs: Mapping[str, Any],
    notes: list[str],
    purpose: str = "training",
) -> None:
    # Measured with Keras 3.15 (tests/test_distribution_jax.py keeps it true): under a
    # JAX distribution every batch Keras feeds, the short last one included, must split
    # over the devices, or fit fails with jax's IndivisibleError (a partial last batch
    # of 8 rows over 8 devices trains). Under MirroredStrategy a full batch that does not
    # split fails inside fit (InvalidArgumentError from AddN), while a short last batch
    # works. Under a TPU (not measured here) it only warrants a note.
    every_batch = kind in ("data_parallel", "distribution")
    validation_batch = kwargs.get("validation_batch_size") or batch
    split = kwargs.get("validation_split") or 0.0
    if kwargs.get("validation_data") is not None or samples is None:
        split = 0.0
    validation = kwargs.get("validation_data")
    val_count = (
        _num_samples(validation[0])
        if isinstance(validation, (tuple, list)) and validation
        else None
    )

    def first_odd(total: int | None) -> tuple[str, int | None, int, int] | None:
        if total is not None and split:
            train, held_out = split_samples(total, split)
            parts = [(purpose, train, batch), ("validation", held_out, validation_batch)]
        else:
            parts = [(purpose, total, batch)]
            if validation is not None:
                parts.append(("validation", val_count, validation_batch))
        for what, count, size in parts:
            if count is None:
                sizes: tuple[int, ...] = (size,)  # a dataset or generator: its batch size
            elif every_batch:
                sizes = batch_sizes(count, size)
            else:
                sizes = (size,) if count >= size else ()
            for b in sizes:
                if b % replicas:
                    return what, count, size, b
        return None

    found = first_odd(samples)
    if found is None:
        return
    what, count, size, odd = found
    name = "validation_batch_size" if what == "validation" else "batch_size"
    near = max(replicas, round(size / replicas) * replicas)
    if count is None or odd == size:
        message = (
            f"{name} {size} does not split evenly over {text}: use a multiple of {replicas}, "
            f"e.g. {near}."
        )
    else:
        where = f"{count} {what} samples in batches of {size}"
        if split:
            where += f" (validation_split={split} of {samples})"
        fix = f"use a {name} that is a multiple of {replicas}, e.g. {near}"
        if count % replicas:
            # Search down from the data given for a count whose every batch splits, with
            # the same arithmetic (few steps: one in `replicas` counts works).
            total = samples if split else count
            assert total is not None
            fits = next(
                (n for n in range(total - 1, max(total - 64 * replicas, 0), -1)
                 if (first_odd(n) is None if split else n % replicas == 0)),
                None,
            )
            fix = (
                f"use {fits} samples (x[:{fits}])"
                if fits and (split or what != "validation")
                else f"give {what} a multiple of {replicas} samples"
            )
            if fits and not split and what == "validation":
                fix = f"validate on {fits} samples"
        message = (
            f"The last batch of {where} would have {odd} samples, which Keras cannot split "
            f"over {text}: {fix}."
        )
    if kind == "tpu":
        notes.append(message.rstrip("."))  # notes are clauses, errors sentences
        return
    raise ValueError(message)


def check_batches(
    strategy: Any,
    x: Any = None,
    batch_size: int | None = None,
    *,
    purpose: str = "training",
    **fit_kwargs: Any,
) -> None:
    """Refuses, before Keras starts, a fit/evaluate/predict whose batches cannot split.

    The arithmetic is Keras's own (:func:`split_samples`, :func:`batch_sizes`),
    so it refuses exactly what would fail mid-fit. Nothing happens for
    strategies of one replica.

    Args:
        strategy: the distribution the call runs in (None: the one in force).
        x: the input (arrays are counted; datasets and generators are not).
        batch_size: as given to Keras (None: Keras's default of 32 for arrays).
        purpose: how the message names the data ("training", "evaluation"...).
        **fit_kwargs: ``validation_split``, ``validation_data``,
            ``validation_batch_size``, ``steps_per_epoch``/``steps``.

    Raises:
        ValueError: one line with the numbers and the fix.

    Example:
        >>> check_batches(None, x, batch_size=16)  # doctest: +SKIP

    """
    if strategy is None:
        strategy = _current_distribution()
    text, replicas = describe(strategy)
    if replicas <= 1:
        return
    samples = _num_samples(x)
    batch = batch_size
    if batch is None and samples is not None:
        steps = fit_kwargs.get("steps_per_epoch") or fit_kwargs.get("steps")
        # Keras's ArrayDataAdapter: batch_size from steps when given, else 32.
        batch = math.ceil(samples / steps) if steps else 32
    if batch:
        _check_batches(
            _kind(strategy), text, replicas, batch, samples, fit_kwargs, [], purpose=purpose
        )


from ._env import make_callable  # noqa: E402 - after strategy() is defined

make_callable(__name__, strategy)


@contextlib.contextmanager
def in_distribution(strategy: Any) -> Iterator[None]:
    """Puts a JAX model's distribution back in force for one call.

    Keras's JAX trainer reads the *global* ``keras.distribution.distribution()``
    when ``fit``/``evaluate``/``predict`` run, not the one the model was built
    under, so a model made in a ``%%kmodel`` cell would train undistributed in a
    later cell. TensorFlow needs nothing: its models keep their strategy.
    """
    import keras

    if (
        strategy is None
        or keras.backend.backend() != "jax"
        or not type(strategy).__module__.startswith("keras")
        or keras.distribution.distribution() is strategy
    ):
        yield
        return
    with strategy.scope():
        yield


def scope_for(model: Any) -> AbstractContextManager[None]:
    """The distribution ``model`` was registered with, in force (JAX); else nothing.

    For a model operation outside ``fit`` that makes variables (a new optimizer): on JAX
    they must lie on the model's devices, or the next fit fails with "incompatible devices
    for jitted computation".
    """
    from . import _fitting

    found = _fitting.registered(model)
    return in_distribution(found[1]) if found is not None else contextlib.nullcontext()


def _auto_text(report: DeviceReport) -> str:
    # What strategy("auto") would pick, planned without building anything.
    try:
        return plan("auto", report).text
    except ValueError as error:
        return f"none ({error})"

