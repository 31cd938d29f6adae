"""kernelkit.devices: detection through fake probes and on this machine."""

from __future__ import annotations

import os
import sys
import time
import types

import pytest

from kernelkit.devices import (
    GPU,
    DeviceReport,
    FakeProbe,
    SystemProbe,
    detect,
    devices,
    parse_nvidia_smi,
)

VERSIONS = {"python": "3.11.13", "keras": "3.10.0", "tensorflow": "2.19.0"}


def fake(environ=None, modules=(), **kwargs) -> DeviceReport:
    return detect(FakeProbe(environ=environ or {}, modules=modules, versions=VERSIONS, **kwargs))


# -- TPUs -------------------------------------------------------------------------------


def test_colab_tpu_vm():
    report = fake(
        {"COLAB_TPU_1VM": "1", "TPU_ACCELERATOR_TYPE": "v2-8", "COLAB_GPU": ""},
        {"google.colab", "ipykernel"},
        cpus=96,
    )
    assert report.runtime == "Colab"
    assert report.tpu.address == "local"  # TPU VMs need TPUClusterResolver(tpu="local")
    assert (report.tpu.type, report.tpu.cores) == ("v2-8", 8)
    assert report.tpu.found_by == "Colab TPU VM: COLAB_TPU_1VM=1, TPU_ACCELERATOR_TYPE=v2-8"
    assert "auto     TPUStrategy (v2-8, 8 cores)" in repr(report)


def test_kaggle_tpu_vm():
    report = fake(
        {"KAGGLE_KERNEL_RUN_TYPE": "Interactive", "ISTPUVM": "1", "TPU_ACCELERATOR_TYPE": "v3-8"},
        {"ipykernel"},
    )
    assert report.runtime == "Kaggle"
    assert report.tpu.address == "local"
    assert report.tpu.found_by.startswith("Kaggle TPU VM: ISTPUVM=1")
    assert report.tpu.cores == 8


def test_tpu_vm_found_on_the_pci_bus_alone():
    report = fake(tpu_chips=4, tpu_version="v4")
    assert report.tpu.address == "local"
    assert (report.tpu.type, report.tpu.cores) == ("v4", 4)
    assert "4 TPU chips attached" in report.tpu.found_by


def test_legacy_colab_tpu():
    report = fake({"COLAB_TPU_ADDR": "10.0.0.2:8470"}, {"google.colab"})
    assert report.tpu.address == "grpc://10.0.0.2:8470"
    assert report.tpu.found_by == "legacy Colab TPU: COLAB_TPU_ADDR=10.0.0.2:8470"
    assert report.tpu.cores == 8


def test_tpu_name():
    report = fake({"TPU_NAME": "my-tpu"})
    # TPUClusterResolver(tpu=None) reads TPU_NAME itself.
    assert report.tpu.address is None
    assert report.tpu.found_by == "TPU_NAME=my-tpu"


def test_colab_gpu_runtime_is_not_a_tpu():
    # Colab exports COLAB_TPU_1VM='' on runtimes without a TPU.
    report = fake(
        {"COLAB_TPU_1VM": "", "COLAB_GPU": "1"}, {"google.colab"}, gpus=[("Tesla T4", 15360)]
    )
    assert report.tpu is None
    assert report.runtime == "Colab"


def test_tpu_vm_takes_precedence_over_legacy_variables():
    report = fake(
        {"COLAB_TPU_1VM": "1", "COLAB_TPU_ADDR": "10.0.0.2:8470", "TPU_NAME": "x"}, {"google.colab"}
    )
    assert report.tpu.address == "local"


def test_tpu_from_monkeypatched_environment(monkeypatch):
    for name in ("TPU_ACCELERATOR_TYPE", "ISTPUVM", "COLAB_TPU_ADDR", "TPU_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLAB_TPU_1VM", "1")
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    report = detect(FakeProbe(versions=VERSIONS))  # environ/modules: the live ones
    assert report.runtime == "Colab"
    assert report.tpu.found_by == "Colab TPU VM: COLAB_TPU_1VM=1"


# -- GPUs and CPUs ----------------------------------------------------------------------


def test_two_gpus():
    report = fake(gpus=[("NVIDIA A100-SXM4-40GB", 40960)] * 2)
    assert report.backend_gpus == 2
    assert report.devices == ("CPU:0", "GPU:0", "GPU:1")
    assert (
        "GPUs     0: NVIDIA A100-SXM4-40GB, 40.0 GiB; 1: NVIDIA A100-SXM4-40GB, 40.0 GiB"
        in repr(report)
    )
    assert "auto     MirroredStrategy over GPU:0, GPU:1" in repr(report)


def test_one_gpu():
    report = fake({"COLAB_GPU": "1"}, {"google.colab"}, gpus=[("Tesla T4", 15360)])
    assert report.backend_gpus == 1
    assert report.gpus == (GPU("Tesla T4", 15360),)
    assert "auto     default strategy (GPU:0)" in repr(report)


def test_cpu_only():
    report = fake(cpus=4)
    assert (report.tpu, report.gpus, report.cpus, report.devices) == (None, (), 4, ("CPU:0",))
    assert report.notes == ()
    assert "auto     default strategy" in repr(report)


def test_gpus_the_backend_cannot_see_get_a_note():
    report = fake(gpus=[("Tesla T4", 15360)], devices=("CPU:0",))
    assert report.backend_gpus == 0
    assert "(TensorFlow sees 0)" in repr(report)
    assert "tensorflow[and-cuda]" in report.notes[0]


def test_backend_gpu_names_are_used_without_nvidia_smi():
    class NoSmi(FakeProbe):
        def backend_devices(self, backend):
            from kernelkit.devices import BackendDevices

            return BackendDevices(("CPU:0", "GPU:0"), gpu_names=("AMD Instinct MI210",))

    report = detect(NoSmi(environ={}, modules=(), versions=VERSIONS))
    assert report.gpus == (GPU("AMD Instinct MI210"),)


def test_parse_nvidia_smi():
    out = "NVIDIA H100 80GB HBM3, 81559\nTesla T4, 15360\n\n"
    assert parse_nvidia_smi(out) == [GPU("NVIDIA H100 80GB HBM3", 81559), GPU("Tesla T4", 15360)]
    assert parse_nvidia_smi("Odd GPU, [N/A]") == [GPU("Odd GPU", None)]


def test_tf_config_is_reported():
    config = '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}'
    report = fake({"TF_CONFIG": config})
    assert report.workers == 2
    assert "keras-team/keras#20585" in report.notes[0]
    assert report.rows()[-2][1].startswith("none (TF_CONFIG is set")  # auto refuses


# -- reprs ------------------------------------------------------------------------------


COLAB_TPU_TEXT = """\
kernelkit devices
  Keras    3.10.0, backend tensorflow (TensorFlow 2.19.0)
  Python   3.11.13
  runtime  Colab
  TPU      v2-8, 8 cores (Colab TPU VM: COLAB_TPU_1VM=1, TPU_ACCELERATOR_TYPE=v2-8)
  GPUs     none
  CPUs     96
  devices  CPU:0
  auto     TPUStrategy (v2-8, 8 cores)"""


def test_text_repr_is_deterministic():
    report = fake({"COLAB_TPU_1VM": "1", "TPU_ACCELERATOR_TYPE": "v2-8"}, {"google.colab"}, cpus=96)
    assert repr(report) == COLAB_TPU_TEXT
    assert str(report) == COLAB_TPU_TEXT


def test_html_repr():
    report = fake({"TPU_NAME": "<script>"}, gpus=[("Tesla T4", 15360)])
    page = report._repr_html_()
    assert page.startswith("<div class='kernelkit-devices'>") and "<table>" in page
    assert "<th style='text-align:left;padding-right:1em'>GPUs</th>" in page
    assert "0: Tesla T4, 15.0 GiB" in page
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_report_is_frozen_and_seconds_do_not_matter_for_equality():
    first = fake(cpus=3)
    second = fake(cpus=3)
    assert first == second
    with pytest.raises(AttributeError):
        first.cpus = 4  # type: ignore[misc]


# -- this machine -----------------------------------------------------------------------


def test_devices_on_this_machine(capsys):
    first = devices(refresh=True)  # may import the backend (seconds for TensorFlow)
    report = devices(refresh=True)  # detection alone
    start = time.perf_counter()
    cached = devices()
    cached_elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(
            f"\n[devices] first call {first.seconds:.3f} s (may include importing the backend), "
            f"detection {report.seconds * 1e3:.1f} ms, cached call {cached_elapsed * 1e6:.0f} us"
        )
    assert cached is report
    assert report == first
    assert report.backend == os.environ.get("KERAS_BACKEND", report.backend)
    assert report.cpus == len(os.sched_getaffinity(0))
    assert "CPU:0" in report.devices
    assert report.version("keras") and report.version("python")
    if not any(os.path.exists(node) for node in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")):
        assert report.gpus == ()
    if not SystemProbe().tpu_chips()[0] and not os.environ.get("TPU_NAME"):
        assert report.tpu is None
    text = repr(report)
    assert text.startswith("kernelkit devices\n  Keras ")
    assert f"CPUs     {report.cpus}" in text
    assert "<table>" in report._repr_html_()


def test_probe_argument_is_not_cached():
    real = devices()
    faked = devices(probe=FakeProbe(environ={}, modules=(), gpus=2))
    assert faked.backend_gpus == 2
    assert devices() is real


def test_public_name_is_callable_even_after_importing_the_module():
    import kernelkit.devices  # binds the submodule on the package

    assert isinstance(kernelkit.devices(), DeviceReport)
