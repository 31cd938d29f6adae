"""What can this kernel train on? ``devices()`` answers once, cheaply.

Detection reads facts through a *probe* and turns them into a frozen
:class:`DeviceReport`. The real probe (:class:`SystemProbe`) reads the
environment, ``sys.modules``, the PCI bus (for TPU chips, as JAX's
``hardware_utils`` does), ``nvidia-smi`` (only when an NVIDIA device node
exists) and the Keras backend's own device list. Tests and tutorials pass a
:class:`FakeProbe` instead, which can claim eight TPU cores or two GPUs.

Nothing here connects to a TPU or starts a strategy: that is ``strategy.py``'s
job. Detection never initialises TensorFlow's runtime either, so
``tf.config.set_logical_device_configuration`` still works after
``devices()``. Under ``KERAS_BACKEND=jax`` it does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import glob
import html
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import _env
from .display import auto_plan_text

__all__ = [
    "GPU",
    "TPU",
    "BackendDevices",
    "DeviceReport",
    "FakeProbe",
    "Probe",
    "SystemProbe",
    "detect",
    "devices",
]

_BACKEND_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}

# Google's PCI vendor id and the TPU device ids, as in jax/_src/hardware_utils.py.
_GOOGLE_PCI_VENDOR = "0x1ae0"
_TPU_PCI_IDS = {
    "0x0027": "v3",  # v2 and v3 share this id
    "0x005e": "v4",
    "0x0062": "v5p",
    "0x0063": "v5e",
    "0x006f": "v6e",
    "0x0076": "tpu7x",
}
_NVIDIA_DEVICE_NODES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")


# --------------------------------------------------------------------------------------
# Report values
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPU:
    """One GPU.

    Attributes:
        name: the product name, e.g. "Tesla T4".
        memory_mib: total memory in MiB, when known.

    """

    name: str
    memory_mib: int | None = None

    def __str__(self) -> str:
        if self.memory_mib is None:
            return self.name
        return f"{self.name}, {self.memory_mib / 1024:.1f} GiB"


@dataclass(frozen=True)
class TPU:
    """A TPU that this kernel could connect to.

    Attributes:
        found_by: how it was found, e.g. "Colab TPU VM (COLAB_TPU_1VM=1)".
        address: what ``TPUClusterResolver(tpu=...)`` needs: "local" on a TPU VM
            (Colab and Kaggle today), "grpc://host:port" for a legacy Colab TPU,
            or None when TensorFlow reads TPU_NAME itself.
        type: the accelerator type when known, e.g. "v2-8" or "v5e-1".
        cores: TPU cores, when known (the number in the type name).

    """

    found_by: str
    address: str | None = "local"
    type: str | None = None
    cores: int | None = None

    @property
    def summary(self) -> str:
        """Type and cores, e.g. "v2-8, 8 cores" (or how it was found, when unknown)."""
        cores = f"{self.cores} core{'s' if self.cores != 1 else ''}" if self.cores else None
        parts = [self.type, cores]
        return ", ".join(part for part in parts if part) or self.found_by

    def __str__(self) -> str:
        summary = self.summary
        return summary if summary == self.found_by else f"{summary} ({self.found_by})"


@dataclass(frozen=True)
class BackendDevices:
    """The devices the Keras backend itself sees.

    Attributes:
        names: logical devices, e.g. ("CPU:0", "GPU:0", "GPU:1").
        started: True when the list is final (TensorFlow has run its first op,
            or JAX listed them). Before that, TensorFlow's list is predicted from
            its physical devices and any logical configuration already set.
        error: why the list is empty, e.g. the backend is not installed.
        gpu_names: GPU product names as the backend reports them, used when
            nvidia-smi is not available.
        kinds: each device's kind as the backend reports it (JAX's
            ``device_kind``, e.g. "TPU v5 lite"), in the order of ``names``.

    """

    names: tuple[str, ...] = ("CPU:0",)
    started: bool = False
    error: str | None = None
    gpu_names: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceReport:
    """What this kernel can train on (returned by :func:`devices`).

    Attributes:
        backend: the Keras backend: "tensorflow", "jax" or "torch".
        versions: (package, version) pairs: python, keras and the backend.
        runtime: "Colab", "Kaggle", "VS Code", "Jupyter" or "Python".
        tpu: the TPU found, or None.
        gpus: GPUs on the machine (from nvidia-smi, else from the backend).
        cpus: CPU cores this process may use.
        devices: the Keras backend's logical devices, e.g. ("CPU:0", "GPU:0").
        devices_started: whether the backend's device list is final (see
            :class:`BackendDevices`).
        workers: tasks (chief and workers) in TF_CONFIG's cluster, 0 without TF_CONFIG.
        parameter_servers: "ps" tasks in TF_CONFIG's cluster.
        notes: one-line remarks, e.g. GPUs the backend cannot see.
        seconds: how long detection took (not part of equality or the text).
        device_kinds: the kind of each backend device as the backend names it
            (JAX's ``device_kind``: "TPU v5 lite", "NVIDIA H100 80GB HBM3", "cpu").

    """

    backend: str
    versions: tuple[tuple[str, str], ...]
    runtime: str
    tpu: TPU | None
    gpus: tuple[GPU, ...]
    cpus: int
    devices: tuple[str, ...]
    devices_started: bool = False
    workers: int = 0
    parameter_servers: int = 0
    notes: tuple[str, ...] = ()
    seconds: float = field(default=0.0, compare=False)
    device_kinds: tuple[str, ...] = ()

    # -- derived facts -------------------------------------------------------------

    def label(self) -> str:
        """A short device label for status lines: "TPU v2-8, 8 cores", "2 x NVIDIA H100", "CPU"."""
        if self.tpu is not None:
            return f"TPU {self.tpu.summary}"
        accelerators = self.accelerators()
        if accelerators.startswith(tuple("0123456789")) and "TPU" in accelerators:
            return accelerators
        if self.gpus:
            names = sorted({gpu.name for gpu in self.gpus})
            count = len(self.gpus)
            return f"{count} x {names[0]}" if count > 1 and len(names) == 1 else ", ".join(names)
        return f"CPU ({self.cpus} cores)"

    def version(self, package: str) -> str | None:
        """The version of ``package`` ("keras", "tensorflow", ...), or None."""
        return dict(self.versions).get(package)

    def device_names(self, kind: str) -> tuple[str, ...]:
        """The backend's devices of one kind ("CPU", "GPU" or "TPU")."""
        prefix = kind.upper() + ":"
        return tuple(name for name in self.devices if name.startswith(prefix))

    def accelerators(self) -> str:
        """The backend's devices by kind, as it names them: "8 x TPU v5 lite", or "" for none.

        CPU devices are left out; this is what ``%kmodel --devices`` shows as the
        chip kind and count (JAX's ``device_kind``).
        """
        counts: dict[str, int] = {}
        # Not strict: TensorFlow names no kinds, so device_kinds is () there (and this is "").
        for name, kind in zip(self.devices, self.device_kinds, strict=False):
            if not name.startswith("CPU:"):
                counts[kind] = counts.get(kind, 0) + 1
        return ", ".join(f"{count} x {kind}" for kind, count in counts.items())

    @property
    def backend_gpus(self) -> int:
        """GPUs the Keras backend can use (may be fewer than ``gpus``)."""
        return len(self.device_names("GPU"))

    # -- display -------------------------------------------------------------------

    def rows(self) -> list[tuple[str, str]]:
        """The report as (label, value) rows, shared by the text and HTML views."""
        backend = _BACKEND_NAMES.get(self.backend, self.backend)
        backend_version = self.version(self.backend)
        keras_line = f"{self.version('keras') or 'not installed'}, backend {self.backend}"
        if backend_version:
            keras_line += f" ({backend} {backend_version})"
        if self.gpus:
            gpus = "; ".join(f"{i}: {gpu}" for i, gpu in enumerate(self.gpus))
            if self.backend_gpus != len(self.gpus):
                gpus += f" ({backend} sees {self.backend_gpus})"
        else:
            gpus = "none"
        rows = [
            ("Keras", keras_line),
            ("Python", self.version("python") or "?"),
            ("runtime", self.runtime),
            ("TPU", str(self.tpu) if self.tpu else "none"),
            ("GPUs", gpus),
            ("CPUs", str(self.cpus)),
            ("devices", ", ".join(self.devices) if self.devices else "none"),
        ]
        if self.accelerators():
            rows.insert(-1, ("chips", f"{self.accelerators()} ({backend} sees them)"))
        if self.workers:
            rows.append(("TF_CONFIG", f"{self.workers} worker(s), {self.parameter_servers} ps"))
        # What strategy("auto") would pick: strategy's words, installed by the package
        # (kernelkit.display), since strategy reads devices and devices never imports it.
        auto = auto_plan_text(self)
        if auto is not None:
            rows.append(("auto", auto))
        rows.extend(("note", note) for note in self.notes)
        return rows

    def __repr__(self) -> str:
        width = max(len(label) for label, _ in self.rows())
        lines = ["kernelkit devices"]
        lines += [f"  {label:<{width}}  {value}" for label, value in self.rows()]
        return "\n".join(lines)

    __str__ = __repr__

    def _repr_html_(self) -> str:
        cells = "".join(
            "<tr><th style='text-align:left;padding-right:1em'>"
            f"{html.escape(label)}</th><td style='text-align:left'>{html.escape(value)}</td></tr>"
            for label, value in self.rows()
        )
        return (
            f"<div class='kernelkit-devices'><b>kernelkit devices</b><table>{cells}</table></div>"
        )




# --------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------


class Probe(Protocol):
    """Where detection reads its facts from; every method must be cheap."""

    def environ(self) -> Mapping[str, str]:
        """Environment variables."""
        ...

    def modules(self) -> Collection[str]:
        """Names of imported modules."""
        ...

    def backend(self) -> str:
        """The Keras backend name."""
        ...

    def versions(self, backend: str) -> dict[str, str]:
        """Versions of python, keras and the backend."""
        ...

    def cpu_count(self) -> int:
        """CPU cores this process may use."""
        ...

    def tpu_chips(self) -> tuple[int, str | None]:
        """TPU chips attached to this machine and their generation, e.g. (4, "v3")."""
        ...

    def nvidia_gpus(self) -> list[GPU]:
        """NVIDIA GPUs from nvidia-smi ([] when there is no NVIDIA device)."""
        ...

    def backend_devices(self, backend: str) -> BackendDevices:
        """The devices the Keras backend sees."""
        ...


def _short(name: str) -> str:
    # "/device:CPU:0" and "/job:localhost/replica:0/task:0/device:GPU:1" -> "CPU:0", "GPU:1"
    return name.rsplit("device:", 1)[-1]


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


class SystemProbe:
    """Reads the real machine (the default probe)."""

    def environ(self) -> Mapping[str, str]:
        """The live ``os.environ``."""
        return os.environ

    def modules(self) -> Collection[str]:
        """The live ``sys.modules``."""
        return sys.modules

    def backend(self) -> str:
        """The Keras backend, without importing Keras."""
        return _env.keras_backend()

    def versions(self, backend: str) -> dict[str, str]:
        """Versions from package metadata (no imports)."""
        found = {"python": platform.python_version()}
        wanted: dict[str, tuple[str, ...]] = {
            "keras": ("keras",),
            "tensorflow": ("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-macos"),
            "jax": ("jax",),
            "torch": ("torch",),
        }
        for package in ("keras", backend):
            module = sys.modules.get(package)
            version = getattr(module, "__version__", None) or _package_version(
                *wanted.get(package, (package,))
            )
            if version:
                found[package] = str(version)
        return found

    def cpu_count(self) -> int:
        """Usable cores (the affinity mask, so containers report their share)."""
        try:
            return len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return os.cpu_count() or 1

    def tpu_chips(self) -> tuple[int, str | None]:
        """Counts Google TPU chips on the PCI bus, then /dev/accel* nodes."""
        chips, version = 0, None
        for vendor_path in glob.glob("/sys/bus/pci/devices/*/vendor"):
            try:
                with open(vendor_path) as f:
                    if f.read().strip() != _GOOGLE_PCI_VENDOR:
                        continue
                with open(os.path.join(os.path.dirname(vendor_path), "device")) as f:
                    device = f.read().strip()
            except OSError:
                continue
            if device in _TPU_PCI_IDS:
                chips += 1
                version = _TPU_PCI_IDS[device]
        if not chips:
            chips = len(glob.glob("/dev/accel[0-9]*"))
        return chips, version

    def nvidia_gpus(self) -> list[GPU]:
        """Asks nvidia-smi, but only when an NVIDIA device node exists."""
        if not any(os.path.exists(node) for node in _NVIDIA_DEVICE_NODES):
            return []
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return []
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return parse_nvidia_smi(out)

    def backend_devices(self, backend: str) -> BackendDevices:
        """Lists the backend's devices; imports only that backend."""
        try:
            if backend == "tensorflow":
                return _tensorflow_devices()
            if backend == "jax":
                return _jax_devices()
            if backend == "torch":
                return _torch_devices()
        except ImportError as error:
            return BackendDevices(
                names=(), error=f"Keras's backend is {backend}, but it cannot be imported: {error}"
            )
        return BackendDevices(names=(), error=f"unknown Keras backend {backend!r}")


def parse_nvidia_smi(out: str) -> list[GPU]:
    """Parses ``nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits``."""
    gpus = []
    for line in out.splitlines():
        if not line.strip():
            continue
        name, _, memory = line.rpartition(",")
        memory = memory.strip()
        gpus.append(
            GPU(name.strip() or memory, int(memory) if memory.isdigit() else None)
            if name
            else GPU(memory)
        )
    return gpus


def _tensorflow_devices() -> BackendDevices:
    import tensorflow as tf

    try:
        # Private, but the only way to ask without starting the runtime; listing
        # logical devices would start it and lock set_logical_device_configuration.
        from tensorflow.python.eager import context

        started = context.context()._context_handle is not None
    except Exception:
        started = False
    gpu_names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except Exception:
            details = {}
        gpu_names.append(str(details.get("device_name", "GPU")))
    if started:
        names = tuple(_short(d.name) for d in tf.config.list_logical_devices())
    else:
        predicted = []
        for kind in ("CPU", "GPU", "TPU"):
            index = 0
            for device in tf.config.list_physical_devices(kind):
                logical = tf.config.get_logical_device_configuration(device)
                for _ in range(len(logical) if logical else 1):
                    predicted.append(f"{kind}:{index}")
                    index += 1
        names = tuple(predicted)
    return BackendDevices(names=names, started=started, gpu_names=tuple(gpu_names))


def _jax_devices() -> BackendDevices:
    import jax

    devices = jax.devices()
    names = tuple(f"{d.platform.upper()}:{d.id}" for d in devices)
    gpu_names = tuple(str(d.device_kind) for d in devices if d.platform == "gpu")
    kinds = tuple(str(d.device_kind) for d in devices)
    return BackendDevices(names=names, started=True, gpu_names=gpu_names, kinds=kinds)


def _torch_devices() -> BackendDevices:
    import torch

    count = torch.cuda.device_count()
    gpu_names = tuple(torch.cuda.get_device_name(i) for i in range(count))
    names = ("CPU:0", *(f"GPU:{i}" for i in range(count)))
    return BackendDevices(names=names, started=True, gpu_names=gpu_names)


class FakeProbe:
    """A probe that reports a machine you describe: for tests and tutorials.

    Args:
        environ: environment variables; None reads the live ``os.environ`` (so
            ``monkeypatch.setenv`` works).
        modules: imported module names; None reads the live ``sys.modules``.
        backend: the Keras backend to claim.
        versions: package versions; None uses the installed ones.
        cpus: CPU cores.
        gpus: a count, or GPU names, or ``GPU`` values, or (name, MiB) pairs.
        tpu_chips: TPU chips on the (fake) PCI bus.
        tpu_version: their generation, e.g. "v3".
        devices: the backend's logical devices; None derives "CPU:0" plus one
            "GPU:i" per GPU.
        started: whether the backend's device list is final.
        device_kind: the kind the backend names its non-CPU devices, e.g.
            "TPU v5 lite" (JAX's ``device_kind``); CPU devices are "cpu".

    Example:
        >>> from kernelkit.devices import FakeProbe, detect
        >>> report = detect(FakeProbe(environ={"COLAB_TPU_1VM": "1",
        ...     "TPU_ACCELERATOR_TYPE": "v2-8"}, modules={"google.colab"}))
        >>> report.tpu.address, report.tpu.cores
        ('local', 8)

    """

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        modules: Collection[str] | None = None,
        backend: str = "tensorflow",
        versions: Mapping[str, str] | None = None,
        cpus: int = 2,
        gpus: int | Iterable[Any] = (),
        tpu_chips: int = 0,
        tpu_version: str | None = None,
        devices: Sequence[str] | None = None,
        started: bool = False,
        device_kind: str | None = None,
    ) -> None:
        self._environ = environ
        self._modules = modules
        self._backend = backend
        self._versions = dict(versions) if versions is not None else None
        self._cpus = cpus
        if isinstance(gpus, int):
            gpus = [GPU("Fake GPU", 16384)] * gpus
        self._gpus = [_as_gpu(gpu) for gpu in gpus]
        self._tpu = (tpu_chips, tpu_version)
        if devices is None:
            devices = ("CPU:0", *(f"GPU:{i}" for i in range(len(self._gpus))))
        # Only JAX names a kind per device (TensorFlow's list has none).
        kinds = (
            tuple(
                "cpu" if name.startswith("CPU:") else (device_kind or name.split(":")[0])
                for name in devices
            )
            if backend == "jax" or device_kind is not None
            else ()
        )
        self._devices = BackendDevices(names=tuple(devices), started=started, kinds=kinds)

    def environ(self) -> Mapping[str, str]:
        """The given environment, or the live one."""
        return os.environ if self._environ is None else self._environ

    def modules(self) -> Collection[str]:
        """The given module names, or the live ``sys.modules``."""
        return sys.modules if self._modules is None else self._modules

    def backend(self) -> str:
        """The claimed backend."""
        return self._backend

    def versions(self, backend: str) -> dict[str, str]:
        """The given versions, or the installed ones."""
        if self._versions is None:
            return SystemProbe().versions(backend)
        return dict(self._versions)

    def cpu_count(self) -> int:
        """The claimed core count."""
        return self._cpus

    def tpu_chips(self) -> tuple[int, str | None]:
        """The claimed TPU chips."""
        return self._tpu

    def nvidia_gpus(self) -> list[GPU]:
        """The claimed GPUs."""
        return list(self._gpus)

    def backend_devices(self, backend: str) -> BackendDevices:
        """The claimed backend devices."""
        return self._devices


def _as_gpu(value: Any) -> GPU:
    if isinstance(value, GPU):
        return value
    if isinstance(value, str):
        return GPU(value)
    name, memory = value
    return GPU(str(name), memory)


# --------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------

_TYPE_CORES = re.compile(r"-(\d+)$")


def _find_tpu(environ: Mapping[str, str], runtime: str, probe: Probe) -> TPU | None:
    """Colab/Kaggle TPU VMs first, then legacy Colab (COLAB_TPU_ADDR), then TPU_NAME."""
    accelerator = environ.get("TPU_ACCELERATOR_TYPE", "").strip() or None
    evidence = []
    if _env._flag(environ, "COLAB_TPU_1VM"):
        evidence.append(f"COLAB_TPU_1VM={environ['COLAB_TPU_1VM']}")
    if _env._flag(environ, "ISTPUVM"):
        evidence.append(f"ISTPUVM={environ['ISTPUVM']}")
    if accelerator:
        evidence.append(f"TPU_ACCELERATOR_TYPE={accelerator}")
    chips, version = probe.tpu_chips()
    if chips:
        evidence.append(f"{chips} TPU chip{'s' if chips != 1 else ''} attached")
    if evidence:
        # TPU VM: the chips are attached to this machine; TensorFlow needs
        # TPUClusterResolver(tpu="local") (googlecolab/colabtools#5194).
        cores = None
        if accelerator and (match := _TYPE_CORES.search(accelerator)):
            cores = int(match.group(1))
        elif chips:
            cores = chips * (2 if version == "v3" else 1)
        where = f"{runtime} TPU VM" if runtime in ("Colab", "Kaggle") else "TPU VM"
        return TPU(
            found_by=f"{where}: {', '.join(evidence)}",
            address="local",
            type=accelerator or version,
            cores=cores,
        )
    address = environ.get("COLAB_TPU_ADDR", "").strip()
    if address:
        # Older Colab runtimes: a TPU node reached over gRPC, 8 cores (v2-8).
        return TPU(
            found_by=f"legacy Colab TPU: COLAB_TPU_ADDR={address}",
            address=address if address.startswith("grpc://") else f"grpc://{address}",
            type="v2-8",
            cores=8,
        )
    name = environ.get("TPU_NAME", "").strip()
    if name:
        # TPUClusterResolver(tpu=None) reads TPU_NAME itself.
        return TPU(found_by=f"TPU_NAME={name}", address=None)
    return None


def _cluster(environ: Mapping[str, str]) -> tuple[int, int]:
    config = _env.tf_config(environ)
    if not config:
        return 0, 0
    cluster = config.get("cluster") or {}
    if not isinstance(cluster, dict):
        return 0, 0

    def count(kind: str) -> int:
        tasks = cluster.get(kind) or []
        return len(tasks) if isinstance(tasks, (list, tuple, dict)) else 0

    return count("chief") + count("worker"), count("ps")


#: What ``detect`` asks a probe (the ``Probe`` protocol's methods).
_PROBE_METHODS = (
    "environ",
    "modules",
    "backend",
    "versions",
    "cpu_count",
    "tpu_chips",
    "nvidia_gpus",
    "backend_devices",
)


def detect(probe: Probe | None = None) -> DeviceReport:
    """Detects devices through ``probe`` (default: the real machine). Never cached.

    Args:
        probe: where facts come from; a :class:`FakeProbe` fakes any machine.

    Returns:
        A new :class:`DeviceReport`.

    Raises:
        TypeError: ``probe`` lacks a probe's methods.

    Example:
        >>> from kernelkit.devices import FakeProbe, detect
        >>> detect(FakeProbe(environ={}, modules=(), gpus=2)).backend_gpus
        2

    """
    start = time.perf_counter()
    probe = probe or SystemProbe()
    missing = [name for name in _PROBE_METHODS if not callable(getattr(probe, name, None))]
    if missing:
        raise TypeError(
            f"probe={probe!r} ({type(probe).__name__}) is not a device probe "
            f"(it has no {', '.join(missing)}): pass kernelkit.devices.FakeProbe(...) or leave "
            "probe out to read this machine"
        )
    environ = probe.environ()
    modules = probe.modules()
    backend = probe.backend()
    runtime = _env.runtime(environ, modules)
    tpu = _find_tpu(environ, runtime, probe)
    gpus = probe.nvidia_gpus()
    found = probe.backend_devices(backend)
    if not gpus:
        gpus = [GPU(name) for name in found.gpu_names]
    workers, parameter_servers = _cluster(environ)
    report = DeviceReport(
        backend=backend,
        versions=tuple(sorted(probe.versions(backend).items())),
        runtime=runtime,
        tpu=tpu,
        gpus=tuple(gpus),
        cpus=probe.cpu_count(),
        devices=found.names,
        devices_started=found.started,
        device_kinds=found.kinds,
        workers=workers,
        parameter_servers=parameter_servers,
    )
    notes = list(_notes(report, found))
    return dataclasses.replace(report, notes=tuple(notes), seconds=time.perf_counter() - start)


def _notes(report: DeviceReport, found: BackendDevices) -> Iterable[str]:
    backend = _BACKEND_NAMES.get(report.backend, report.backend)
    if found.error:
        yield found.error
    if report.gpus and report.backend_gpus < len(report.gpus) and not found.error:
        hint = {
            "tensorflow": "install a CUDA build: pip install 'tensorflow[and-cuda]'",
            "jax": "install a CUDA build: pip install 'jax[cuda13]'",
        }.get(report.backend, "check that the backend is built with CUDA")
        yield (
            f"{len(report.gpus)} GPU(s) on this machine but {backend} sees "
            f"{report.backend_gpus}: {hint}, and check CUDA_VISIBLE_DEVICES"
        )
    if report.tpu and report.backend == "torch":
        yield "Keras's torch backend cannot use the TPU here: set KERAS_BACKEND=tensorflow or jax"
    if report.tpu and report.backend == "jax" and not report.device_names("TPU"):
        yield "a TPU is attached but JAX sees none: pip install 'jax[tpu]'"
    if report.workers > 1 or report.parameter_servers:
        yield (
            f"TF_CONFIG names {report.workers} workers: Keras 3 cannot fit under "
            "MultiWorkerMirroredStrategy (keras-team/keras#20585)"
        )


_REPORT: DeviceReport | None = None


def devices(refresh: bool = False, probe: Probe | None = None) -> DeviceReport:
    """Reports what this kernel can train on: backend, runtime, TPU, GPUs, CPUs.

    Detection runs once per process and is cached; it is cheap (no TPU
    connection, no network) and does not start TensorFlow's runtime, so
    logical devices can still be configured afterwards.

    Args:
        refresh: detect again instead of returning the cached report.
        probe: detect through this probe instead (the result is not cached),
            e.g. ``FakeProbe(gpus=2)``.

    Returns:
        A frozen :class:`DeviceReport` with text and HTML views.

    Example:
        >>> import kernelkit
        >>> kernelkit.devices()  # doctest: +SKIP
        kernelkit devices
          Keras    3.15.1, backend tensorflow (TensorFlow 2.21.0)
          ...

    """
    global _REPORT
    if probe is not None:
        return detect(probe)
    if _REPORT is None or refresh:
        _REPORT = detect()
    return _REPORT


_env.make_callable(__name__, devices)
