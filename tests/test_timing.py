"""Where a fit's time goes: a deliberately slow callback and a non-async-safe hook, both flagged."""

from __future__ import annotations

import time

import keras
import pytest

from kernelkit.timing import Breakdown, CallbackTimer, async_blockers, thread_safe_backend


class Slow(keras.callbacks.Callback):
    """Spends about 3 ms of CPU in every training step."""

    def on_train_batch_end(self, batch, logs=None):
        began = time.perf_counter()
        while time.perf_counter() - began < 0.003:
            pass


class EpochOnly(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.seen = epoch


class Safe(Slow):
    async_safe = True


def test_a_slow_callback_is_timed_and_named_with_the_fix(tiny_model, tiny_data):
    x, y = tiny_data
    slow, quiet = Slow(), EpochOnly()
    timer = CallbackTimer([slow, quiet])
    began = time.perf_counter()
    with timer.timing():
        tiny_model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[slow, quiet])
    wall = time.perf_counter() - began
    slow_time, quiet_time = timer.times
    assert slow_time.calls == 16 and slow_time.seconds >= 16 * 0.003
    assert quiet_time.calls == 2 and not quiet_time.batch_hooks
    # Unwrapped afterwards: the class's own hooks again.
    assert "on_train_batch_end" not in vars(slow) and "on_epoch_end" not in vars(quiet)
    line = Breakdown(wall=wall, callbacks=timer.sorted()).line()
    assert line.startswith("time: steps ")
    assert "Slow takes" in line and "of the step time" in line and "use epoch hooks" in line
    assert "EpochOnly" not in line


def test_default_hooks_stay_default_so_keras_keeps_its_async_choice():
    quiet = EpochOnly()
    with CallbackTimer([quiet]).timing():
        assert getattr(quiet.on_train_batch_end, "_is_default", False)
        assert async_blockers([quiet]) == []


def test_a_batch_hook_without_async_safe_is_named_on_thread_safe_backends():
    names = async_blockers([Slow(), Safe(), EpochOnly()])
    assert thread_safe_backend() == (keras.backend.backend() in ('jax', 'torch'))
    if thread_safe_backend():  # JAX, torch: Keras would wait for every step
        assert names == ["Slow"]
        line = Breakdown(wall=1.0, blockers=names).line()
        assert "Slow turned off Keras's async dispatch" in line
        assert "async_safe = True" in line
    else:  # TensorFlow has no async dispatch to turn off
        assert names == []


def test_the_line_counts_compile_and_validation_apart():
    line = Breakdown(wall=10.0, compile=2.0, validation=1.5).line()
    assert line == "time: compile 2.00 s · steps 6.50 s · validation 1.50 s"


@pytest.mark.parametrize("seconds,text", [(0.0042, "4.2 ms"), (3.21, "3.21 s"), (42.0, "42 s")])
def test_seconds_read_well(seconds, text):
    from kernelkit.timing import _seconds

    assert _seconds(seconds) == text


def test_the_final_result_of_a_routed_fit_carries_the_timing_line(tiny_model, tiny_data):
    """Through kernelkit.fit, as a user sees it: the slow callback is named in the result."""
    import kernelkit
    from kernelkit.status import FitStatus
    from kernelkit.views.progress import timing_html

    x, y = tiny_data
    events = []
    live = kernelkit.LiveProgress(display="none", sink=events.append)
    kernelkit.fit(tiny_model, x, y, epochs=2, batch_size=32, callbacks=[Slow(), live], verbose=0)
    assert [t.name for t in live.timer.times] == ["Slow"] and live.timer.times[0].calls == 16
    assert live.blockers == (["Slow"] if thread_safe_backend() else [])
    # The view's state reads the same timer (make_view hands it over) and the fit's events.
    state = FitStatus()
    state.timer, state.blockers = live.timer, live.blockers
    for event in events:
        state.apply(event)
    html = timing_html(state)
    assert "kk-breakdown" in html and "time: " in html and "Slow takes" in html


class SlowData(keras.utils.PyDataset):
    """Eight batches that each take 0.1 s of CPU to load: an input-bound pipeline."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        import numpy as np

        began = time.perf_counter()
        while time.perf_counter() - began < 0.1:
            pass
        return np.ones((8, 4), "float32"), np.ones((8, 1), "float32")


def test_a_slow_input_pipeline_is_measured_and_named_with_the_fix():
    """JAX pulls batches in Python: the wait is timed. TensorFlow pulls inside its graph."""
    import kernelkit
    from kernelkit.status import FitStatus
    from kernelkit.views.progress import timing_html

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    events = []
    live = kernelkit.LiveProgress(display="none", sink=events.append)
    kernelkit.fit(model, SlowData(), epochs=2, callbacks=[live], verbose=0)
    state = FitStatus()
    state.input_timer = live.input_timer
    for event in events:
        state.apply(event)
    line = state.breakdown().line()
    if keras.backend.backend() == "tensorflow":
        assert not live.input_timer.measured and "(input" not in line
        return
    waited = live.input_timer
    assert waited.batches == 16 and waited.seconds >= 16 * 0.1
    assert f"(input {waited.seconds:.2f} s)" in line
    assert "waiting for input takes" in line and "PyDataset with workers=4" in line
    assert "waiting for input" in timing_html(state)
    # The fit's own iterator is Keras's again: the next fit is not timed by this one.
    assert live.input_timer._attached is None


def test_in_memory_arrays_are_not_called_input_bound(tiny_model, tiny_data):
    import kernelkit

    x, y = tiny_data
    live = kernelkit.LiveProgress(display="none")
    kernelkit.fit(tiny_model, x, y, epochs=2, batch_size=32, callbacks=[live], verbose=0)
    measured = live.input_timer.measured
    assert measured == (keras.backend.backend() != "tensorflow")
    breakdown = Breakdown(wall=5.0, input=live.input_timer.seconds if measured else None)
    assert not breakdown.input_bound() and "waiting for input" not in breakdown.line()


def test_the_input_wait_reads_inside_the_steps():
    assert Breakdown(wall=10.0, compile=2.0, input=0.5).line() == (
        "time: compile 2.00 s · steps 8.00 s (input 0.50 s)")
    # A big share but under a second in all: not named.
    assert not Breakdown(wall=1.0, input=0.9).input_bound()
    assert Breakdown(wall=4.0, input=2.0).input_bound()
