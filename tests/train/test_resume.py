"""Resuming a run after a kill at any point: exactly, or a message naming the damage.

A kill is simulated in-process by raising from inside the run at the point
of interest (after the backup of an epoch, between the weights and their
record, between the end of ``fit`` and the final files); what is left on
disk is then exactly what a SIGKILL there leaves, because every file is
written to a temporary name and renamed (``keras_vit.atomic``).
tests/train/test_distribute.py and test_mpp_train.py kill real processes.
"""

import json
import shutil

import keras
import pytest

from keras_vit.train import loop, resume
from keras_vit.train.loop import schedule_of, train
from keras_vit.train.recipe import load_recipe
from keras_vit.train.resume import METADATA, ResumeError, RunBackup
from keras_vit_cli import main as cli

from test_loop import TINY_MODEL

EPOCHS, STEPS_PER_EPOCH = 3, 2
PLANNED_STEPS = EPOCHS * STEPS_PER_EPOCH


class Killed(Exception):
    """Stands for the SIGKILL."""


def recipe(output, *overrides):
    settings = [
        *TINY_MODEL,
        f"steps={PLANNED_STEPS}",
        f"steps_per_epoch={STEPS_PER_EPOCH}",
        "warmup_steps=1",
        "verbose=0",
        f"output={output}",
        *overrides,
    ]
    return load_recipe("digits_scratch", settings)


def kill_after_backup_of(monkeypatch, epoch):
    save = RunBackup.save

    def save_then_die(self, model, done, best=None):
        save(self, model, done, best)
        if done == epoch:
            raise Killed

    monkeypatch.setattr(RunBackup, "save", save_then_die)


@pytest.fixture(scope="module")
def killed_after_epoch_2(tmp_path_factory):
    """A run directory as a kill right after the backup of epoch 2 leaves it."""
    output = tmp_path_factory.mktemp("killed") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        kill_after_backup_of(monkeypatch, 2)
        with pytest.raises(Killed):
            train(recipe(output))
    assert not (output / "metrics.json").exists()
    assert sorted(p.name for p in (output / "backup").iterdir()) == [
        "epoch-000002.weights.h5",
        METADATA,
    ]
    return output


@pytest.fixture
def run_dir(killed_after_epoch_2, tmp_path):
    output = tmp_path / "run"
    shutil.copytree(killed_after_epoch_2, output)
    return output


def assert_finished_exactly(output, metrics, epochs_trained):
    assert metrics["steps"] == PLANNED_STEPS
    assert len(metrics["history"].get("loss", [])) == epochs_trained
    assert (output / "model.keras").is_file() and (output / "metrics.json").is_file()
    assert not (output / "backup").exists()  # removed only after the final files


def test_a_killed_run_resumes_at_the_next_epoch(run_dir):
    record = json.loads((run_dir / "backup" / METADATA).read_text())
    assert record["epoch"] == 2 and record["iterations"] == 2 * STEPS_PER_EPOCH
    assert_finished_exactly(run_dir, train(recipe(run_dir)), epochs_trained=1)


def test_a_deleted_record_resumes_from_the_whole_weights_file(run_dir):
    (run_dir / "backup" / METADATA).unlink()
    assert_finished_exactly(run_dir, train(recipe(run_dir)), epochs_trained=1)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate_weights", r"epoch-000002\.weights\.h5 is damaged"),
        ("delete_weights", r"epoch-000002\.weights\.h5, which .*training_metadata\.json names, "),
        ("garble_record", r"training_metadata\.json is damaged"),
        ("empty_record", r"training_metadata\.json is damaged or was not written by keras-vit"),
    ],
)
def test_damage_stops_with_the_file_and_the_fresh_command(run_dir, damage, message):
    weights = run_dir / "backup" / "epoch-000002.weights.h5"
    record = run_dir / "backup" / METADATA
    if damage == "truncate_weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "delete_weights":
        weights.unlink()
    elif damage == "garble_record":
        record.write_text('{"epoch": 2, "weig')
    else:
        record.write_text("{}")
    with pytest.raises(ResumeError, match=message) as error:
        train(recipe(run_dir))
    assert f"keras-vit train digits_scratch --output {run_dir} --fresh" in str(error.value)
    assert not (run_dir / "metrics.json").exists()
    # The command it names starts over and runs the whole plan.
    assert_finished_exactly(run_dir, train(recipe(run_dir), fresh=True), epochs_trained=EPOCHS)


def test_an_unreadable_weights_file_without_record_is_named(run_dir):
    (run_dir / "backup" / METADATA).unlink()
    weights = run_dir / "backup" / "epoch-000002.weights.h5"
    weights.write_bytes(b"not hdf5")
    with pytest.raises(ResumeError, match=r"epoch-000002\.weights\.h5 cannot be read"):
        train(recipe(run_dir))


def test_weights_of_another_epoch_than_their_name_are_refused(run_dir):
    backup = run_dir / "backup"
    (backup / METADATA).unlink()
    (backup / "epoch-000002.weights.h5").rename(backup / "epoch-000003.weights.h5")
    with pytest.raises(ResumeError, match="after 4 optimiser steps, but epoch 3 ends after 6"):
        train(recipe(run_dir))


def test_another_plan_is_refused(run_dir):
    with pytest.raises(ResumeError, match="another plan"):
        train(recipe(run_dir, "steps=8"))


def test_a_kill_between_weights_and_record_resumes_from_the_record(run_dir, monkeypatch):
    write_json = resume.write_json_atomic

    def die_on_record_3(record, path):
        if record["epoch"] == 3:
            raise Killed
        return write_json(record, path)

    monkeypatch.setattr(resume, "write_json_atomic", die_on_record_3)
    with pytest.raises(Killed):
        train(recipe(run_dir))
    backup = run_dir / "backup"
    assert (backup / "epoch-000003.weights.h5").is_file()  # renamed, but not recorded
    assert json.loads((backup / METADATA).read_text())["epoch"] == 2
    (backup / ".partial-x.weights.h5").write_bytes(b"half")  # and one killed mid-write
    monkeypatch.undo()
    assert_finished_exactly(run_dir, train(recipe(run_dir)), epochs_trained=1)


def test_a_kill_before_the_final_files_retrains_nothing(run_dir, monkeypatch):
    save_model = loop.save_model_atomic

    def die_at_model_keras(model, path):
        if path.name == "model.keras":
            raise Killed
        return save_model(model, path)

    monkeypatch.setattr(loop, "save_model_atomic", die_at_model_keras)
    with pytest.raises(Killed):
        train(recipe(run_dir))
    assert (run_dir / "best.keras").is_file() and not (run_dir / "model.keras").exists()
    record = json.loads((run_dir / "backup" / METADATA).read_text())
    assert record["epoch"] == EPOCHS  # the backup outlives fit
    monkeypatch.undo()
    metrics = train(recipe(run_dir))
    assert_finished_exactly(run_dir, metrics, epochs_trained=0)
    final = keras.saving.load_model(run_dir / "model.keras")
    assert final.count_params() == metrics["num_parameters"]


def test_the_best_value_survives_a_resume(run_dir, monkeypatch):
    record = json.loads((run_dir / "backup" / METADATA).read_text())
    assert record["best"] is not None  # sign x val_accuracy of the best epoch so far
    seen = []

    class Recording(loop.BestModelCheckpoint):
        def on_train_begin(self, logs=None):
            seen.append(self.best)

    monkeypatch.setattr(loop, "BestModelCheckpoint", Recording)
    train(recipe(run_dir))
    assert seen == [record["best"]]


def test_steps_run_exactly_as_asked(caplog):
    def schedule(*overrides, examples=1437):
        return schedule_of(load_recipe("cifar10_finetune", list(overrides)), examples)

    with caplog.at_level("INFO", logger="keras_vit"):
        assert schedule("steps=20") == (1, 20)  # steps_per_epoch 500 in the recipe
    assert "20 steps run as 1 epoch(s) of 20 steps" in caplog.text
    assert schedule("steps=10000") == (20, 500)
    # Without steps_per_epoch: the largest divisor of steps within one pass (2 batches).
    assert schedule("steps=7", "steps_per_epoch=null", "batch_size=512") == (7, 1)
    assert schedule("steps=50", "steps_per_epoch=null", "batch_size=64") == (5, 10)
    with pytest.raises(ValueError, match="steps=1001 is not a multiple of steps_per_epoch=500"):
        schedule("steps=1001")


def test_a_plan_of_20_steps_trains_20_steps(tmp_path):
    metrics = train(recipe(tmp_path / "run", "steps=20", "steps_per_epoch=500"))
    assert metrics["steps"] == 20 and metrics["epochs"] == 1
    assert len(metrics["history"]["loss"]) == 1


def test_the_command_line_names_the_damage_and_starts_fresh(run_dir, capsys):
    (run_dir / "backup" / METADATA).write_text("garbage")
    args = ["train", "digits_scratch", "--output", str(run_dir), "--set"]
    overrides = [*TINY_MODEL, f"steps={PLANNED_STEPS}", f"steps_per_epoch={STEPS_PER_EPOCH}"]
    overrides += ["warmup_steps=1", "verbose=0"]
    assert cli.main([*args, *overrides]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("keras-vit train: error: Cannot resume")
    assert "training_metadata.json is damaged" in error[0] and "--fresh" in error[0]
    assert cli.main([*args, *overrides, "--fresh"]) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == PLANNED_STEPS
