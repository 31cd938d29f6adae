"""LiveProgress against a list of events with a fake clock: no UI, no fit."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from kernelkit import events as ev
from kernelkit.callback import LiveProgress


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drive(model, *, epochs=2, steps=10, spe=1, logs=lambda e, b: {"loss": 1.0 / (b + 1)},
          clock=None, refresh=0.25, dt=0.1, stop_at=None, **kw):
    """Calls the hooks as Keras does, with steps_per_execution=spe."""
    got: list = []
    clock = clock or FakeClock()
    cb = LiveProgress(display="none", sink=got.append, clock=clock, refresh=refresh, **kw)
    cb.set_model(model)
    cb.set_params({"epochs": epochs, "steps": steps, "verbose": 0})
    cb.on_train_begin()
    for epoch in range(epochs):
        cb.on_epoch_begin(epoch)
        begin = 0
        while begin < steps:
            end = begin + spe - 1  # Keras reports k*N+N-1, possibly past the last step
            clock.now += dt
            cb.on_train_batch_end(end, logs(epoch, end))
            if stop_at is not None and (epoch, end) >= stop_at:
                cb.request_stop("user")
            if model.stop_training:
                break
            begin += spe
        cb.on_epoch_end(epoch, {"loss": 0.5, "val_loss": 0.6, "note": "not a number"})
        if model.stop_training:
            break
    cb.on_train_end()
    return cb, got


def test_events_order_and_final_state(tiny_model):
    _cb, got = drive(tiny_model)
    kinds = [type(e).__name__ for e in got]
    assert kinds[0] == "TrainBegin" and kinds[1] == "EpochBegin" and kinds[-1] == "TrainEnd"
    assert kinds.count("EpochEnd") == 2
    end = got[-1]
    assert end.state == "finished" and end.reason == "finished 2 epochs"
    begin = got[0]
    assert begin.epochs == 2 and begin.steps == 10 and begin.strategy == "default"


def test_steps_are_throttled(tiny_model):
    # 10 steps 0.1 s apart with refresh 0.25: a step event at most every 0.25 s
    # (plus the one at each epoch end), never one per step.
    _, got = drive(tiny_model, steps=10, dt=0.1, refresh=0.25)
    steps = [e for e in got if isinstance(e, ev.Step)]
    per_epoch = [s for s in steps if s.epoch == 0]
    assert 3 <= len(per_epoch) <= 5, [s.step for s in per_epoch]
    gaps = np.diff([s.time for s in per_epoch[:-1]])
    assert (gaps >= 0.25 - 1e-9).all()
    assert per_epoch[-1].step == 10  # the epoch's end is always reported


def test_steps_per_execution_clamps_past_last_step(tiny_model):
    # With steps_per_execution=4 and 10 steps Keras reports batch 11 last.
    _, got = drive(tiny_model, steps=10, spe=4, refresh=0.0001, dt=1)
    steps = [e.step for e in got if isinstance(e, ev.Step)]
    assert max(steps) == 10
    assert steps[:3] == [4, 8, 10]


def test_unknown_steps_counts_without_bar(tiny_model):
    got: list = []
    clock = FakeClock()
    cb = LiveProgress(display="none", sink=got.append, clock=clock, refresh=0.0001)
    cb.set_model(tiny_model)
    cb.set_params({"epochs": 2, "steps": None})
    cb.on_train_begin()
    for epoch in range(2):
        cb.on_epoch_begin(epoch)
        for b in range(7):
            clock.now += 1
            cb.on_train_batch_end(b, {"loss": 1.0})
        cb.on_epoch_end(epoch, {"loss": 1.0})
    cb.on_train_end()
    assert got[0].steps is None
    assert [e.steps for e in got if isinstance(e, ev.EpochEnd)] == [7, 7]
    # After one epoch the history knows the step count and places batch points.
    assert len(cb.history.batch["loss"]) > 0


def test_user_stop_mid_epoch(tiny_model):
    _cb, got = drive(tiny_model, epochs=3, stop_at=(1, 3))
    end = got[-1]
    assert end.state == "stopped_by_user"
    assert end.reason == "stopped by user at epoch 2, step 4 of 10"
    assert sum(isinstance(e, ev.EpochEnd) for e in got) == 2


def test_nan_loss_fails_and_stops(tiny_model):
    logs = lambda e, b: {"loss": math.nan if (e, b) >= (0, 4) else 1.0}  # noqa: E731
    _cb, got = drive(tiny_model, epochs=3, logs=logs)
    end = got[-1]
    assert end.state == "failed"
    assert end.reason == (
        "loss became NaN at epoch 1, step 5 of 10; weights restored to the start of the fit"
    )
    assert tiny_model.stop_training


def test_non_scalar_logs_are_skipped(tiny_model):
    logs = lambda e, b: {"loss": 0.5, "embedding": np.ones(3), "name": "x"}  # noqa: E731
    _, got = drive(tiny_model, logs=logs, refresh=0.0001)
    steps = [e for e in got if isinstance(e, ev.Step) and e.logs]
    assert steps and all(set(s.logs) == {"loss"} for s in steps)
    ends = [e for e in got if isinstance(e, ev.EpochEnd)]
    assert set(ends[0].logs) == {"loss", "val_loss"}


def test_second_fit_continues_the_curves(tiny_model):
    cb1, _ = drive(tiny_model, epochs=2)
    cb2, _got = drive(tiny_model, epochs=2)  # initial_epoch 0 again: shifted to continue
    history = cb2.history
    assert history is cb1.history
    assert history.epoch_index == [0, 1, 2, 3]
    xs, _ = history.epoch_series("loss")
    assert xs == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"display": "html"},
         "(display='html') is not allowed; use one of auto, widget, text, none"),
        ({"refresh": 0}, "(refresh=0) is not allowed"),
        ({"refresh": "fast"}, "(refresh='fast') is not allowed"),
        ({"plot": "yes"}, "(plot='yes') is not allowed; use True or False"),
        ({"sink": [1]}, "takes a callable or a list of callables"),
    ],
)
def test_bad_options_name_the_option(kwargs, needle):
    with pytest.raises(ValueError) as info:
        LiveProgress(**kwargs)
    assert needle in str(info.value)


def test_real_fit_early_stopping_reason(tiny_model, tiny_data):
    x, y = tiny_data
    got: list = []
    stopper = keras.callbacks.EarlyStopping(monitor="loss", patience=1, min_delta=100)
    tiny_model.fit(x, y, epochs=6, batch_size=32, verbose=0,
                   callbacks=[LiveProgress(display="none", sink=got.append), stopper])
    end = got[-1]
    assert end.state == "stopped_by_callback"
    assert end.reason.startswith("EarlyStopping: loss did not improve for 1 epoch (best ")


def test_real_fit_steps_per_execution(tiny_data):
    x, y = tiny_data
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", steps_per_execution=3)
    got: list = []
    cb = LiveProgress(display="none", sink=got.append, refresh=1e-6)
    model.fit(x[:100], y[:100], epochs=2, batch_size=10, verbose=0, callbacks=[cb])
    steps = [e.step for e in got if isinstance(e, ev.Step)]
    assert max(steps) == 10 and all(0 < s <= 10 for s in steps)
    assert [e.steps for e in got if isinstance(e, ev.EpochEnd)] == [10, 10]


def test_event_dict_round_trip():
    event = ev.TrainEnd(state="failed", reason="x", epoch=1, step=2, time=3.0)
    assert ev.from_dict(ev.to_dict(event)) == event
    with pytest.raises(ValueError, match="unknown event type"):
        ev.from_dict({"type": "Nope"})
