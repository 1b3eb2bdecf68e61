"""Quiet by default: TensorFlow's start-up logs hidden, errors as one sentence.

TensorFlow 2.21 prints its oneDNN and CPU-feature notices through absl
before logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not hide
them: they are written to file descriptor 2 while ``tensorflow`` is
imported. ``session`` imports it with that descriptor pointed at a
temporary file (shown again if the import fails), lowers the Python
loggers of TensorFlow, absl and the converters to errors, shows
keras-vit's own log messages and warnings (``keras_vit.messages``) as
``keras-vit CMD: ...`` lines, and hides other libraries' warnings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings

EXIT_USAGE = 2  # a user error: bad value, missing file or extra, corrupt input
EXIT_FAILURE = 1  # an export beyond tolerance, or an unexpected error
EXIT_INTERRUPTED = 130

CHATTY_LOGGERS = ("tensorflow", "absl", "tf2onnx", "keras", "h5py", "nncf", "openvino")


@contextlib.contextmanager
def _stderr_to_file():
    """File descriptor 2 (C++ logs) into a temporary file; yields the file."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield capture
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow_quietly():
    """Imports TensorFlow (and Keras) with its start-up logs hidden.

    If the import fails, what it printed is shown before the error.
    """
    if "tensorflow" in sys.modules:
        return
    with _stderr_to_file() as capture:
        try:
            import keras  # noqa: F401  (imports TensorFlow, the backend)
        except BaseException:
            capture.flush()
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise


class _PrefixedHandler(logging.Handler):
    def __init__(self, prefix):
        super().__init__(logging.INFO)
        self.prefix = prefix

    def emit(self, record):
        print(f"{self.prefix}: {record.getMessage()}", file=sys.stderr)


@contextlib.contextmanager
def session(verbose=False, prefix="keras-vit"):
    """The environment one command runs in (restored afterwards, for in-process callers).

    Args:
        verbose: bool. Show every library's logs and warnings.
        prefix: str. Start of keras-vit's own message lines.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if verbose:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import_tensorflow_quietly()
    from keras_vit.messages import LOGGER_NAME, KerasVitWarning

    levels = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    ours = logging.getLogger(LOGGER_NAME)
    handler, level, propagate = _PrefixedHandler(prefix), ours.level, ours.propagate
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    show = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", KerasVitWarning)
        warnings.showwarning = lambda message, *_, **__: print(
            f"{prefix}: warning: {message}", file=sys.stderr
        )
        try:
            yield
        finally:
            warnings.showwarning = show
            ours.removeHandler(handler)
            ours.setLevel(level)
            ours.propagate = propagate
            for name, old in levels.items():
                logging.getLogger(name).setLevel(old)


def describe(err):
    """``(exit code, one-line message)`` for an error that ends a command.

    Errors a user can act on (bad values, missing or unwritable files,
    missing extras, corrupt inputs, TensorFlow's input errors) give exit 2
    and their own message; an export beyond tolerance gives 1; anything
    else is reported as unexpected, with how to see the traceback.
    """
    name = type(err).__name__
    if name == "ExportParityError":
        return EXIT_FAILURE, str(err)
    if isinstance(err, (ValueError, OSError, ImportError)):
        return EXIT_USAGE, _one_paragraph(err)
    message = getattr(err, "message", None)
    if type(err).__module__.startswith("tensorflow") and message:
        return EXIT_USAGE, f"TensorFlow rejected the input: {message.strip()}"
    return EXIT_FAILURE, (
        f"unexpected {name}: {err}. Rerun with --verbose (or KERAS_VIT_DEBUG=1) for "
        "the traceback, and please report it."
    )


def _one_paragraph(err):
    text = str(err).strip() or type(err).__name__
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{text}: {err.filename}"
    return text
