"""Compile time is not training time: the compiling state, post-compile rates, estimates.

FitStatus is driven with hand-made events on a made-up timeline (no sleeps);
the callback's validation timing with a fake clock; one real tiny fit checks
that Keras calls the test hooks inside fit as expected.
"""

from __future__ import annotations

import pytest

from kernelkit import events as ev
from kernelkit.callback import LiveProgress
from kernelkit.history import RunHistory
from kernelkit.status import FitStatus
from kernelkit.views.progress import bar_html, static_html


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def feed(events: list[ev.Event]) -> FitStatus:
    state = FitStatus()
    for event in events:
        state.apply(event)
    return state


def two_epochs(validation: tuple[float | None, float | None] = (0.8, 0.3)) -> list[ev.Event]:
    """10 steps of 0.1 s per epoch; the fit's first step takes 2.3 s (compile included).

    Each EpochEnd comes after its validation pass, as Keras calls on_epoch_end.
    """
    v0, v1 = validation
    logs = {"loss": 0.5, "val_loss": 0.6}
    return [
        ev.TrainBegin(epochs=2, steps=10, batch_size=32, model_name="tiny", time=0.0),
        ev.EpochBegin(epoch=0, time=0.0),
        ev.Step(epoch=0, step=1, logs={"loss": 1.0}, time=2.3),
        ev.Step(epoch=0, step=6, logs={"loss": 0.7}, time=2.8),
        ev.Step(epoch=0, step=10, logs={"loss": 0.5}, time=3.2 + (v0 or 0.0)),
        ev.EpochEnd(epoch=0, logs=logs, steps=10, time=3.2 + (v0 or 0.0), validation_time=v0),
        ev.EpochBegin(epoch=1, time=4.0),
        ev.Step(epoch=1, step=1, logs={"loss": 0.5}, time=4.1),
        ev.Step(epoch=1, step=10, logs={"loss": 0.5}, time=5.0 + (v1 or 0.0)),
        ev.EpochEnd(epoch=1, logs=logs, steps=10, time=5.0 + (v1 or 0.0), validation_time=v1),
        ev.TrainEnd(state="finished", reason="finished 2 epochs", epoch=1, step=10, time=5.5),
    ]


# --------------------------------------------------------------- the live view


def test_compiling_from_the_start_until_the_first_step() -> None:
    state = feed([ev.TrainBegin(epochs=2, steps=1001, time=0.0), ev.EpochBegin(epoch=0, time=0.0)])
    assert state.compiling
    assert state.step_text() == "step 0/1001 · compiling…"  # no 0-step ETA
    assert "ETA" not in state.step_text()
    assert ">compiling…</span>" in bar_html(state)

    state.apply(ev.Step(epoch=0, step=1, logs={"loss": 1.0}, time=10.0))
    assert not state.compiling
    assert "compiling" not in state.step_text()
    assert "compiling" not in bar_html(state)
    assert ">training</span>" in bar_html(state)

    # A second fit compiles (or at least starts) again: its own measurements.
    state.apply(ev.TrainBegin(epochs=1, steps=5, time=20.0))
    assert state.compiling and state.first_step_time is None


def test_a_fit_that_fails_while_compiling_is_not_compiling() -> None:
    state = feed(
        [
            ev.TrainBegin(epochs=2, steps=10, time=0.0),
            ev.EpochBegin(epoch=0, time=0.0),
            ev.TrainEnd(state="failed", reason="ResourceExhaustedError: OOM", time=3.0),
        ]
    )
    assert not state.compiling
    assert "compiling" not in bar_html(state)
    assert state.timing_text() == ""


def test_rate_and_eta_leave_the_compile_out() -> None:
    # The first step takes 10 s (compile), then 100 steps in 1 s.
    state = feed(
        [
            ev.TrainBegin(epochs=1, steps=1001, batch_size=32, time=0.0),
            ev.EpochBegin(epoch=0, time=0.0),
            ev.Step(epoch=0, step=1, time=10.0),
        ]
    )
    assert state.rate is None and state.eta is None  # one point: no rate yet, not 0.1/s
    state.apply(ev.Step(epoch=0, step=101, time=11.0))
    assert state.rate == pytest.approx(100.0)  # counting from the epoch start: 9.2
    assert state.eta == pytest.approx(9.0)  # 900 steps left
    text = state.step_text()
    assert "0:11 elapsed" in text  # elapsed is still wall time since the epoch began
    assert "ETA 0:09" in text and "100.0 steps/s" in text and "3,200 samples/s" in text


def test_later_epochs_count_from_their_start() -> None:
    state = feed(two_epochs()[:8])  # up to epoch 1's first Step at 4.1 s
    assert state.rate == pytest.approx(1 / 0.1)  # 1 step in 0.1 s since epoch 1 began
    state.apply(ev.Step(epoch=1, step=5, time=4.5))
    assert state.rate == pytest.approx(10.0)
    assert state.eta == pytest.approx(0.5)


def test_rate_at_an_epoch_end_leaves_validation_out() -> None:
    state = feed(two_epochs()[:6])  # epoch 0 ended at 4.0 after 0.8 s of validation
    assert state.rate == pytest.approx(9 / 0.9)  # steps 2..10 in 2.3..3.2 s
    assert state.step_times == {0: pytest.approx(0.1)}
    assert state.step_time == pytest.approx(0.1)  # the only sample so far


# --------------------------------------------------------------- the final result


def test_static_html_reports_the_compile_estimates() -> None:
    state = feed(two_epochs())
    assert state.first_step_time == pytest.approx(2.3)
    assert state.step_time == pytest.approx(0.1)
    assert state.compile_time == pytest.approx(2.2)
    assert state.validation_times == [pytest.approx(0.8), pytest.approx(0.3)]
    assert state.validation_compile_time == pytest.approx(0.5)
    text = (
        "compile ≈ 2.2 s (first step 2.3 s) · validation compile ≈ 0.50 s (first pass 0.80 s)"
    )
    assert state.timing_text() == text
    assert text in static_html(state, RunHistory())


def test_the_typical_step_comes_from_the_epochs_after_the_compile() -> None:
    # The compile epoch's short post-compile part also carries the epoch's fixed
    # costs (here 0.3 s/step); the full epochs after it (0.1, 0.12, 0.1) are typical.
    events: list[ev.Event] = [
        ev.TrainBegin(epochs=4, steps=10, time=0.0),
        ev.EpochBegin(epoch=0, time=0.0),
        ev.Step(epoch=0, step=8, time=5.0),  # async dispatch: the first event is step 8
        ev.EpochEnd(epoch=0, steps=10, time=5.6),
    ]
    t = 5.6
    for epoch, per_step in ((1, 0.1), (2, 0.12), (3, 0.1)):
        events.append(ev.EpochBegin(epoch=epoch, time=t))
        t += 10 * per_step
        events.append(ev.EpochEnd(epoch=epoch, steps=10, time=t))
    state = feed(events)
    assert state.step_times[0] == pytest.approx(0.3)
    assert state.step_time == pytest.approx(0.1)
    assert state.compile_time == pytest.approx(5.0 - 8 * 0.1)
    assert state.timing_text() == "compile ≈ 4.2 s (first 8 steps 5.0 s)"


def test_one_validated_epoch_gives_an_upper_bound() -> None:
    events = two_epochs(validation=(0.8, None))
    state = feed(events)
    assert state.validation_compile_time is None
    assert state.timing_text().endswith(" · first validation 0.80 s (compile included)")
    assert "compile ≈ 2.2 s" in state.timing_text()


def test_without_post_compile_steps_the_first_step_is_reported_as_is() -> None:
    # steps_per_execution=10 and 10 steps: the first event covers the whole epoch.
    state = feed(
        [
            ev.TrainBegin(epochs=1, steps=10, time=0.0),
            ev.EpochBegin(epoch=0, time=0.0),
            ev.Step(epoch=0, step=10, time=3.0),
            ev.Step(epoch=0, step=10, time=3.0),
            ev.EpochEnd(epoch=0, steps=10, time=3.0),
            ev.TrainEnd(state="finished", time=3.0),
        ]
    )
    assert state.compile_time is None
    assert state.timing_text() == "first 10 steps 3.0 s (compile included)"


def test_summary_keeps_its_format_and_holds_no_times() -> None:
    timed = feed(two_epochs())
    untimed = feed(two_epochs(validation=(None, None)))
    expected = "kernelkit tiny: finished (2 epochs) - loss 0.5 · val_loss 0.6"
    assert timed.summary() == untimed.summary() == expected


def test_old_epoch_end_dicts_still_load() -> None:
    old = {"type": "EpochEnd", "epoch": 3, "logs": {"loss": 0.5}, "steps": 7, "time": 1.0}
    event = ev.from_dict(old)
    assert isinstance(event, ev.EpochEnd) and event.validation_time is None
    new = ev.EpochEnd(epoch=3, logs={"loss": 0.5}, steps=7, time=1.0, validation_time=0.25)
    assert ev.from_dict(ev.to_dict(new)) == new
    state = feed([ev.TrainBegin(epochs=4, steps=7), ev.EpochBegin(epoch=3), event])
    assert state.validation_times == []


# --------------------------------------------------------------- the callback


def test_validation_is_timed_by_the_test_hooks(tiny_model) -> None:
    got: list = []
    clock = FakeClock()
    cb = LiveProgress(display="none", sink=got.append, clock=clock)
    cb.set_model(tiny_model)
    cb.set_params({"epochs": 3, "steps": 4, "verbose": 0})
    cb.on_train_begin()
    for epoch, validated in enumerate((True, False, True)):
        cb.on_epoch_begin(epoch)
        for batch in range(4):
            clock.now += 0.1
            cb.on_train_batch_end(batch, {"loss": 1.0})
        if validated:
            cb.on_test_begin()
            clock.now += 0.75 if epoch == 0 else 0.25
            cb.on_test_end({"loss": 1.0})
        clock.now += 0.01  # other callbacks' on_epoch_end
        cb.on_epoch_end(epoch, {"loss": 1.0})
    cb.on_train_end()
    ends = [e for e in got if isinstance(e, ev.EpochEnd)]
    assert [e.validation_time for e in ends] == [pytest.approx(0.75), None, pytest.approx(0.25)]

    # A standalone evaluate after the fit adds no event and changes nothing.
    count = len(got)
    cb.on_test_begin()
    clock.now += 5
    cb.on_test_end()
    assert len(got) == count and cb._validation_time is None


def test_no_test_batch_hook_so_validation_steps_cost_nothing() -> None:
    # Overriding on_test_batch_end would make Keras call us for every validation
    # step (and turn off its async test dispatch).
    assert "on_test_batch_end" not in LiveProgress.__dict__
    assert "on_test_batch_begin" not in LiveProgress.__dict__
    assert {"on_test_begin", "on_test_end"} <= set(LiveProgress.__dict__)


def test_a_real_fit_reports_validation_and_compile_times(tiny_model, tiny_data) -> None:
    x, y = tiny_data
    got: list = []
    live = LiveProgress(display="none", sink=got.append)
    tiny_model.fit(x, y, epochs=2, validation_split=0.25, verbose=0, callbacks=[live])
    ends = [e for e in got if isinstance(e, ev.EpochEnd)]
    assert len(ends) == 2
    assert all(e.validation_time is not None and e.validation_time > 0 for e in ends)
    assert all("val_loss" in e.logs for e in ends)

    state = feed(got)
    assert state.state == "finished" and not state.compiling
    assert state.step_time is not None and 0 < state.step_time < state.first_step_time
    # The first step traced and compiled the train step; later ones did not.
    assert 0 < state.compile_time < state.first_step_time
    assert state.validation_times[0] > state.validation_times[1]  # the test step compiled
    assert 0 < state.validation_compile_time < state.validation_times[0]
    assert "compile ≈ " in state.timing_text()
    assert "validation compile ≈ " in state.timing_text()
    assert state.summary().startswith("kernelkit tiny: finished (2 epochs) - loss ")

    # A standalone evaluate after the fit neither breaks nor emits anything.
    count = len(got)
    result = tiny_model.evaluate(x, y, verbose=0, callbacks=[live], return_dict=True)
    assert "loss" in result and len(got) == count
    # Nor does it leak into the next fit's first epoch.
    got.clear()
    tiny_model.fit(x, y, epochs=1, verbose=0, callbacks=[live])
    assert [e.validation_time for e in got if isinstance(e, ev.EpochEnd)] == [None]


def test_a_standalone_evaluate_before_any_fit_is_harmless(tiny_model, tiny_data) -> None:
    x, y = tiny_data
    got: list = []
    live = LiveProgress(display="none", sink=got.append)
    result = tiny_model.evaluate(x, y, verbose=0, callbacks=[live], return_dict=True)
    assert "loss" in result and got == [] and live._validation_time is None
    tiny_model.fit(x, y, epochs=1, validation_split=0.25, verbose=0, callbacks=[live])
    ends = [e for e in got if isinstance(e, ev.EpochEnd)]
    assert len(ends) == 1 and ends[0].validation_time > 0
