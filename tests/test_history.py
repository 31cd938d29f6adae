from kernelkit import events as ev
from kernelkit.history import RunHistory, Series, Throttle, scalar_logs


def test_throttle_with_fake_clock():
    now = [0.0]
    t = Throttle(0.5, lambda: now[0])
    seen = []
    for i in range(20):
        now[0] = i * 0.1
        seen.append(t.ready())
    assert [i for i, ok in enumerate(seen) if ok] == [0, 5, 10, 15]


def test_series_memory_stays_bounded_for_a_million_steps():
    s = Series(capacity=256)
    for i in range(1_000_000):
        s.append(float(i), 1.0)
    assert len(s) < 256
    assert s.xs[0] == 0.0 and s.xs[-1] > 990_000  # still spans the whole run


def test_run_history_apply_and_offsets():
    h = RunHistory()
    h.apply(ev.TrainBegin(epochs=2, initial_epoch=0, steps=4))
    h.apply(ev.Step(epoch=0, step=2, logs={"loss": 1.0}))
    h.apply(ev.EpochEnd(epoch=0, logs={"loss": 0.9, "val_loss": 1.1}))
    h.apply(ev.EpochEnd(epoch=1, logs={"loss": 0.8, "val_loss": 1.0}))
    assert h.batch["loss"].xs == [0.5]
    h.apply(ev.TrainBegin(epochs=5, initial_epoch=2, steps=4))  # initial_epoch respected
    assert h.offset == 0
    h.apply(ev.EpochEnd(epoch=2, logs={"loss": 0.7}))
    assert h.epoch_index == [0, 1, 2]
    assert h.metric_names() == ["loss"]
    assert h.epoch_series("val_loss") == ([1.0, 2.0], [1.1, 1.0])


def test_scalar_logs_skips_non_scalars():
    import numpy as np

    assert scalar_logs({"a": 1, "b": np.float32(2), "c": np.ones(2), "d": "x", "e": True}) == {
        "a": 1.0, "b": 2.0}
