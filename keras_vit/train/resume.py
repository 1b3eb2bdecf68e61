"""The training state of a run, kept so that a SIGKILL at any moment loses at most one epoch.

Keras' ``BackupAndRestore`` writes ``latest.weights.h5`` in place (a kill
mid-write leaves a truncated file that blocks every restart), keeps the
epoch in a second file written separately (a kill between the two resumes
the wrong epoch on top of the wrong weights) and deletes its folder when
``fit`` ends, before the run's final files exist (a kill then retrains
everything). ``RunBackup`` keeps the state in ``<run>/backup/`` instead:

- ``epoch-NNNNNN.weights.h5``: model and optimiser state after epoch N,
  written to a temporary file and renamed into place (``keras_vit.atomic``);
- ``training_metadata.json``, written the same way after it, is the commit
  record: the epoch, the weights file with its size and SHA-256, the
  optimiser steps, the plan (epochs, steps per epoch, batch size) and the
  best monitored value so far. Older weights files are removed only after
  the record names the new one, so the record always names a whole file.

``restore`` resumes exactly (the optimiser steps are checked against the
record and the plan) or raises ``ResumeError`` naming the damaged file and
the command that starts fresh; the loop calls ``remove`` only after the
run's final files are written.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import keras

from keras_vit.atomic import atomic_path, write_json_atomic
from keras_vit.digests import sha256_of
from keras_vit.messages import logger

METADATA = "training_metadata.json"
_WEIGHTS = re.compile(r"^epoch-(\d{6})\.weights\.h5$")
_RECORD_KEYS = ("epoch", "weights", "bytes", "sha256", "iterations", "plan")


class ResumeError(ValueError):
    """The backup of a run cannot be resumed exactly; the message says how to start fresh."""


def weights_name(epoch):
    """File name of the state after ``epoch`` epochs."""
    return f"epoch-{epoch:06d}.weights.h5"


class RunBackup:
    """The backup folder of one run.

    Args:
        directory: path. ``<run>/backup``.
        plan: dict. What the state is valid for: ``epochs``,
            ``steps_per_epoch``, ``gradient_accumulation_steps`` (None or
            the micro-batches per optimiser step) and anything else that
            must match (``batch_size``, ``task``).
        fresh_command: str. The command that starts the run over, for the
            messages.
    """

    def __init__(self, directory, plan, fresh_command):
        self.directory = Path(directory)
        self.plan = dict(plan)
        self.fresh_command = fresh_command

    @property
    def metadata_path(self):
        return self.directory / METADATA

    def _refuse(self, problem):
        raise ResumeError(
            f"Cannot resume from {self.directory}: {problem}. To start the run over, run "
            f"`{self.fresh_command}` (or delete {self.directory})."
        )

    def remove(self):
        """Deletes the backup (after the run's final files are written)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def weights_files(self):
        """``{epoch: path}`` of the complete weights files in the folder."""
        if not self.directory.is_dir():
            return {}
        found = {}
        for path in self.directory.iterdir():
            match = _WEIGHTS.match(path.name)
            if match:
                found[int(match.group(1))] = path
        return found

    def _read_record(self):
        try:
            record = json.loads(self.metadata_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            self._refuse(f"{self.metadata_path} is damaged ({err})")
        if not isinstance(record, dict) or any(key not in record for key in _RECORD_KEYS):
            self._refuse(
                f"{self.metadata_path} is damaged or was not written by keras-vit "
                f"(expected the keys {list(_RECORD_KEYS)})"
            )
        return record

    def restore(self, model):
        """Loads the last committed state into a compiled, built model.

        Args:
            model: the run's compiled ``keras.Model`` (built, in the
                strategy's scope).

        Returns:
            ``(initial_epoch, best)``: epochs already done (0 without a
            backup) and the best monitored value recorded (or None).

        Raises:
            ResumeError: (a ``ValueError``) naming the damaged or missing
                file, or the plan that differs, and the command that starts
                fresh.
        """
        for stray in self.directory.glob(".partial-*"):  # left by a kill mid-write
            stray.unlink(missing_ok=True)
        files = self.weights_files()
        if self.metadata_path.exists():
            record = self._read_record()
            if record["plan"] != self.plan:
                self._refuse(
                    f"it was written for another plan {record['plan']} (this run: "
                    f"{self.plan}); resume with the recipe it was started with"
                )
            epoch, path = int(record["epoch"]), self.directory / str(record["weights"])
            if not path.is_file():
                self._refuse(f"{path}, which {self.metadata_path} names, is missing")
            if path.stat().st_size != record["bytes"] or sha256_of(path) != record["sha256"]:
                self._refuse(f"{path} is damaged (its size or SHA-256 differs from the record)")
            expected, best = int(record["iterations"]), record.get("best")
        elif files:
            # The first epoch's weights can be renamed into place just before
            # a kill stops the record: the file is whole, the steps tell.
            epoch = max(files)
            path = files[epoch]
            accumulation = self.plan["gradient_accumulation_steps"] or 1
            expected = epoch * self.plan["steps_per_epoch"] // accumulation
            best = None
            logger.info("%s has no %s: resuming from %s.", self.directory, METADATA, path.name)
        else:
            return 0, None
        self._load(model, path)
        steps = int(model.optimizer.iterations.numpy())
        if steps != expected:
            self._refuse(
                f"{path} holds the state after {steps} optimiser steps, but epoch {epoch} "
                f"ends after {expected}"
            )
        logger.info("Resuming after epoch %d (%d optimiser steps) from %s.", epoch, steps, path)
        return epoch, best

    def _load(self, model, path):
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(str(path))
        except Exception as err:  # h5py / Keras raise many kinds for a bad file
            self._refuse(f"{path} cannot be read ({type(err).__name__}: {err})")

    def save(self, model, epoch, best=None):
        """Commits the state after ``epoch`` epochs (weights, then the record)."""
        path = self.directory / weights_name(epoch)
        with atomic_path(path, ".weights.h5") as partial:
            model.save_weights(partial, overwrite=True)
        record = {
            "epoch": epoch,
            "weights": path.name,
            "bytes": path.stat().st_size,
            "sha256": sha256_of(path),
            "iterations": int(model.optimizer.iterations.numpy()),
            "plan": self.plan,
            "best": best,
        }
        write_json_atomic(record, self.metadata_path)
        for old_epoch, old in self.weights_files().items():
            if old_epoch != epoch:
                old.unlink(missing_ok=True)

    def callback(self, best_checkpoint=None):
        """A callback that commits the state at every epoch end.

        Args:
            best_checkpoint: optional callback with a ``best`` attribute
                (``BestModelCheckpoint``), recorded so that a resumed run
                keeps comparing with it. Put it before this callback.
        """
        return _SaveEachEpoch(self, best_checkpoint)


class _SaveEachEpoch(keras.callbacks.Callback):
    def __init__(self, backup, best_checkpoint):
        super().__init__()
        self.backup = backup
        self.best_checkpoint = best_checkpoint

    def on_epoch_end(self, epoch, logs=None):
        best = None
        if self.best_checkpoint is not None and self.best_checkpoint.has_best:
            best = self.best_checkpoint.best
        self.backup.save(self.model, epoch + 1, best)
