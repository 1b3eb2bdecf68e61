"""keras-vit's own messages: a logger for notices, a warning class for surprises.

The library stays quiet unless asked: notices (a warm-up cut to fit a short
run, TensorBoard skipped) go to the ``keras_vit`` logger at INFO, which shows
nothing until an application configures logging; warnings a user must see
(a checkpoint's head not loaded) are ``KerasVitWarning``. The ``keras-vit``
command line shows both, and hides other libraries' chatter.
"""

from __future__ import annotations

import logging

LOGGER_NAME = "keras_vit"

#: The ``keras_vit`` logger (notices at INFO).
logger = logging.getLogger(LOGGER_NAME)


class KerasVitWarning(UserWarning):
    """A warning from keras-vit (shown by the command line, which hides the others)."""
