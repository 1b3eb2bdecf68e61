"""``tf.distribute`` strategies by name, and ``model.fit`` under multi-worker training.

``make_strategy("auto" | "cpu" | "mirrored" | "multiworker" | "tpu")`` picks
the strategy; build the model, optimiser and metrics inside its ``scope()``.

Keras 3 (checked on 3.15) cannot ``fit`` under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585, ``Attempt to convert a value (PerReplica...)``). Two
places in ``keras.src.backend.tensorflow.trainer`` are at fault:

1. ``TensorFlowTrainer._maybe_symbolic_build`` averages the first distributed
   input batch with ``strategy.reduce("MEAN", batch, axis=None)`` only to learn
   its shapes; under the collective strategy that eager cross-worker reduce
   cannot take the ``PerReplica`` batch. One local replica's batch has the
   same per-replica shapes, which is all the symbolic build needs.
2. ``reduce_per_replica`` reduces the step's logs (scalar loss and metrics)
   with ``strategy.reduce("MEAN", v, axis=0)`` on the multi-worker path, and a
   scalar has no axis 0. Scalars need ``axis=None`` (the mean over replicas,
   which is what the single-worker path computes).

``multiworker_fit_support()`` replaces both, only while it is active and only
for the collective strategy; everything else goes to Keras' own code.

Keras 3 also clips by global norm *before* it all-reduces the gradients, so
under data parallelism each replica clips its own partial gradient and the
result depends on the number of replicas. ``clip_after_all_reduce`` gives an
optimiser class whose global-norm clipping sees the summed gradient, as on
one device.

Both workarounds touch private Keras code, so they are guarded:
``VERIFIED_KERAS`` lists the Keras versions they were verified on (the range
``setup.cfg`` requires), and ``check_keras_internals`` compares the private
functions with the signatures they were written against. On another version
whose internals still match they run with a ``KerasVitWarning``; where the
internals changed they refuse with an error naming what changed, and
``tests/train/test_keras_internals.py`` fails loudly.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import warnings

import keras
import tensorflow as tf

from keras_vit.messages import KerasVitWarning

STRATEGIES = ("auto", "cpu", "mirrored", "multiworker", "tpu")

#: Keras (major, minor) versions the private-API workarounds were verified on.
VERIFIED_KERAS = ((3, 15),)

# The private Keras functions patched or overridden here, with the
# parameters they were written against.
_INTERNALS = {
    "keras.src.backend.tensorflow.trainer.reduce_per_replica": ("values", "strategy", "reduction"),
    "keras.src.backend.tensorflow.trainer.TensorFlowTrainer._maybe_symbolic_build": (
        "self",
        "iterator",
        "data_batch",
    ),
    "keras.optimizers.Optimizer._clip_gradients": ("self", "grads"),
}


def _resolve(dotted):
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def check_keras_internals():
    """The private Keras functions the workarounds use, against what they were written for.

    Returns:
        list of str: one message per function that is missing or whose
        parameters changed (empty when everything matches).
    """
    problems = []
    for dotted, expected in _INTERNALS.items():
        try:
            found = tuple(inspect.signature(_resolve(dotted)).parameters)
        except (ImportError, AttributeError):
            problems.append(f"{dotted} no longer exists")
            continue
        if found != expected:
            problems.append(f"{dotted}{found} changed (written against {expected})")
    return problems


def require_keras_internals():
    """Raises when the workarounds cannot run on this Keras; warns off ``VERIFIED_KERAS``.

    Raises:
        RuntimeError: naming the private functions that changed.
    """
    version = tuple(int(part) for part in keras.__version__.split(".")[:2])
    problems = check_keras_internals()
    if problems:
        raise RuntimeError(
            f"keras-vit's tf.distribute workarounds were verified on Keras "
            f"{', '.join('.'.join(map(str, v)) for v in VERIFIED_KERAS)}; Keras "
            f"{keras.__version__} changed their private code: "
            + "; ".join(problems)
            + ". Install a verified Keras (see setup.cfg) or report this."
        )
    if version not in VERIFIED_KERAS:
        warnings.warn(
            f"keras-vit's tf.distribute workarounds were verified on Keras "
            f"{VERIFIED_KERAS}, not {keras.__version__}; its private code still matches.",
            KerasVitWarning,
            stacklevel=3,
        )


def split_cpu(num_devices):
    """Splits the CPU into ``num_devices`` logical devices (for MirroredStrategy on CPU).

    Must run before TensorFlow initialises its devices (before the first op).

    Raises:
        ValueError: if the devices were already initialised differently.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * int(num_devices)
        )
    except RuntimeError as err:
        if len(tf.config.list_logical_devices("CPU")) != num_devices:
            raise ValueError(
                f"Cannot split the CPU into {num_devices} devices after TensorFlow "
                f"initialised them: {err}"
            ) from None


def _cluster_size():
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    return sum(len(tasks) for tasks in config.get("cluster", {}).values())


def make_strategy(name="auto", tpu=None, cpu_devices=None):
    """A ``tf.distribute.Strategy`` by name.

    Args:
        name: str. ``"auto"``: multi-worker when ``TF_CONFIG`` names a
            cluster of several tasks, a TPU when ``tpu`` is given, mirrored
            over several local GPUs (or ``cpu_devices``), else the default
            strategy. ``"cpu"``: one CPU device. ``"mirrored"``: all local
            GPUs, or ``cpu_devices`` logical CPUs. ``"multiworker"``: the
            cluster of ``TF_CONFIG``. ``"tpu"``: the TPU at ``tpu``.
        tpu: str or None. TPU address (``grpc://...``, a TPU name, or
            ``"local"``).
        cpu_devices: int or None. Split the CPU into this many logical
            devices and mirror over them (testing data parallelism on CPU).

    Returns:
        ``tf.distribute.Strategy``.

    Raises:
        ValueError: for an unknown name, or multi-worker without ``TF_CONFIG``.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}.")
    if name == "auto":
        if _cluster_size() > 1:
            name = "multiworker"
        elif tpu:
            name = "tpu"
        elif cpu_devices or len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            return tf.distribute.get_strategy()
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if name == "mirrored":
        if cpu_devices:
            split_cpu(cpu_devices)
            return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(int(cpu_devices))])
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if _cluster_size() < 1:
            raise ValueError(
                "strategy='multiworker' needs TF_CONFIG with a cluster, e.g. "
                '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}; TF_CONFIG is not set.'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_multiworker(strategy):
    """True for ``MultiWorkerMirroredStrategy`` (the collective all-reduce strategy)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy):
    """True on the worker that writes the run's files (task 0, or no cluster)."""
    if not is_multiworker(strategy):
        return True
    resolver = strategy.cluster_resolver
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


def task_id(strategy):
    """This worker's index in a multi-worker cluster (0 otherwise)."""
    return strategy.cluster_resolver.task_id if is_multiworker(strategy) else 0


def clip_after_all_reduce(optimizer_class):
    """``optimizer_class`` with global-norm clipping of the all-reduced gradient.

    In a replica context with several replicas, the clip factor
    ``min(1, global_clipnorm / ||sum of replica gradients||)`` is computed
    from an extra all-reduce of the gradients and applied to each replica's
    gradient before Keras sums them; with one replica (or no clipping) it is
    Keras' own behaviour. Costs one more all-reduce per step when clipping.

    Args:
        optimizer_class: a ``keras.optimizers.Optimizer`` subclass.

    Returns:
        A subclass of the same name.
    """

    if tf.distribute.get_strategy().num_replicas_in_sync > 1:  # built in the strategy's scope
        require_keras_internals()

    class ReplicaConsistentClipping(optimizer_class):
        def _clip_gradients(self, grads):
            context = tf.distribute.get_replica_context()
            if not self.global_clipnorm or context is None or context.num_replicas_in_sync == 1:
                return super()._clip_gradients(grads)
            summed = context.all_reduce(
                tf.distribute.ReduceOp.SUM, [g for g in grads if g is not None]
            )
            norm = tf.linalg.global_norm(summed)
            factor = tf.minimum(1.0, self.global_clipnorm / tf.maximum(norm, 1e-12))
            return [None if g is None else g * tf.cast(factor, g.dtype) for g in grads]

    ReplicaConsistentClipping.__name__ = optimizer_class.__name__
    ReplicaConsistentClipping.__qualname__ = optimizer_class.__qualname__
    return ReplicaConsistentClipping


def _first_local_value(strategy, value):
    """One local replica's tensor of a ``PerReplica`` value (or the value itself)."""
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


@contextlib.contextmanager
def multiworker_fit_support():
    """Lets ``fit``/``evaluate`` run under ``MultiWorkerMirroredStrategy`` (see module doc).

    Replaces ``TensorFlowTrainer._maybe_symbolic_build`` and the trainer's
    ``reduce_per_replica`` while active; both defer to Keras' own code for
    any other strategy. Trace the train/test functions inside it (the first
    ``fit``/``evaluate`` call does).
    """
    from keras import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    require_keras_internals()

    keras_reduce = tf_trainer.reduce_per_replica
    keras_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values, strategy, reduction):
        if not is_multiworker(strategy) or reduction not in ("auto", "mean"):
            return keras_reduce(values, strategy, reduction)

        def mean(value):
            rank = _first_local_value(strategy, value).shape.rank
            return strategy.reduce("MEAN", value, axis=0 if rank else None)

        return tree.map_structure(mean, values)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or strategy is None or not is_multiworker(strategy):
            return keras_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            data_batch = tree.map_structure(
                lambda v: _first_local_value(strategy, v), next(batches)
            )
            break
        return keras_build(self, data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = keras_reduce
        tf_trainer.TensorFlowTrainer._maybe_symbolic_build = keras_build
