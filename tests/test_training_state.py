"""The one training-state module (every RNG, engine progress, best score, atomic checkpoint) and `atomic_write`."""

from __future__ import annotations

import os
import random
import time

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from tinyusfm_monai.handlers.training_state import BestModelSaver, TrainingCheckpoint, TrainingState
from tinyusfm_monai.utils import TEMP_PREFIX, atomic_path, atomic_write, remove_stale_temporaries


def _draw(generator: torch.Generator) -> tuple:
    g = torch.rand(3, generator=generator)
    return torch.rand(3), np.random.rand(3), random.random(), np.random.normal(), g


def test_training_state_restores_every_rng(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leaves a cached Gaussian in NumPy's state: it must survive too
    generator = torch.Generator().manual_seed(4)
    state = TrainingState(generators=[generator])
    torch.save(state.state_dict(), tmp_path / "s.pt")
    expected = _draw(generator)
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    generator.manual_seed(99)
    state.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    got = _draw(generator)
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2] == got[2] and expected[3] == got[3] and torch.equal(expected[4], got[4])


def test_training_state_refuses_a_checkpoint_without_its_generator(tmp_path):
    torch.save(TrainingState().state_dict(), tmp_path / "s.pt")
    with pytest.raises(KeyError, match="random generator 0"):
        TrainingState(generators=[torch.Generator()]).load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))


class _Counter(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


def _trainer(model: torch.nn.Module, checkpoint: TrainingCheckpoint, draws: list) -> Engine:
    def step(engine, batch):
        with torch.no_grad():
            model.w += 1.0
        draws.append(float(torch.rand(1)))

    engine = Engine(step)
    checkpoint.attach(engine)
    return engine


def test_training_checkpoint_resumes_exactly_where_it_stopped(tmp_path):
    data = list(range(3))
    torch.manual_seed(0)
    ref_model, ref_draws = _Counter(), []
    _trainer(ref_model, TrainingCheckpoint(str(tmp_path / "ref.pt"), {"model": ref_model}), ref_draws).run(data, 4)

    torch.manual_seed(0)
    model, draws = _Counter(), []
    first = _trainer(model, TrainingCheckpoint(str(tmp_path / "last.pt"), {"model": model}), draws)
    first.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: e.terminate())
    first.run(data, 4)
    assert first.state.epoch == 2 and float(model.w) == 6.0

    torch.manual_seed(123)  # a new process: other random state, fresh model
    resumed_model, resumed_draws = _Counter(), []
    checkpoint = TrainingCheckpoint(str(tmp_path / "last.pt"), {"model": resumed_model})
    resumed = _trainer(resumed_model, checkpoint, resumed_draws)
    resumed.run(data, 4)
    assert checkpoint.resumed and resumed.state.epoch == 4
    assert float(resumed_model.w) == float(ref_model.w) == 12.0
    assert draws + resumed_draws == ref_draws  # the RNG continued as if never stopped


def test_training_checkpoint_off_starts_afresh(tmp_path):
    model = _Counter()
    _trainer(model, TrainingCheckpoint(str(tmp_path / "last.pt"), {"model": model}), []).run([0], 2)
    fresh = _Counter()
    checkpoint = TrainingCheckpoint(str(tmp_path / "last.pt"), {"model": fresh}, resume=False)
    engine = _trainer(fresh, checkpoint, [])
    engine.run([0], 1)
    assert not checkpoint.resumed and float(fresh.w) == 1.0


def test_best_model_saver_keeps_the_restored_best(tmp_path):
    model = torch.nn.Linear(2, 1)
    saver = BestModelSaver(model, str(tmp_path / "model.pt"), "acc")
    engine = Engine(lambda e, b: None)
    for value in (0.5, 0.7):
        engine.state.metrics = {"acc": value}
        saver(engine)
    assert saver.best == 0.7 and (tmp_path / "model.pt").is_file()
    restored = BestModelSaver(model, str(tmp_path / "model.pt"), "acc")
    restored.load_state_dict(saver.state_dict())
    before = (tmp_path / "model.pt").stat().st_mtime_ns
    engine.state.metrics = {"acc": 0.6}  # worse than the best before the restart: must not overwrite
    restored(engine)
    engine.state.metrics = {"acc": float("nan")}  # NaN never wins
    restored(engine)
    assert (tmp_path / "model.pt").stat().st_mtime_ns == before and restored.best == 0.7


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "file.json"
    atomic_write(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]  # the temporary file is gone
    array = tmp_path / "a.npy"
    with atomic_path(array) as tmp:
        np.save(tmp, np.arange(3))  # writers that pick a format by suffix see the target's suffix
    assert np.array_equal(np.load(array), np.arange(3))


def test_stale_temporaries_are_removed_but_not_fresh_ones(tmp_path):
    stale = tmp_path / f"{TEMP_PREFIX}1-abc-x.dcm"
    fresh = tmp_path / f"{TEMP_PREFIX}2-def-y.dcm"
    keep = tmp_path / "x.dcm"
    for p in (stale, fresh, keep):
        p.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert fresh.exists() and keep.exists()


def test_atomic_files_get_the_umask_mode_and_stale_temporaries_are_found_below(tmp_path):
    """Writers built on mkstemp create 0600 files; results must be readable as the service's umask says."""
    import tempfile

    umask = os.umask(0o022)
    os.umask(umask)
    with atomic_path(tmp_path / "r.dcm") as tmp:
        fd, name = tempfile.mkstemp(dir=tmp_path)  # a writer that creates its file 0600
        os.close(fd)
        os.replace(name, tmp)
    assert (tmp_path / "r.dcm").stat().st_mode & 0o777 == 0o666 & ~umask
    assert atomic_write(tmp_path / "private", b"x", mode=0o600).stat().st_mode & 0o777 == 0o600
    deep = tmp_path / "study" / "series"
    deep.mkdir(parents=True)
    stale = deep / f"{TEMP_PREFIX}1-abc-SEG_1.dcm"
    stale.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert remove_stale_temporaries(tmp_path) == []
    assert remove_stale_temporaries(tmp_path, recursive=True) == [stale]
