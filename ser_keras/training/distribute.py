"""``runtime.strategy``: the same training code on one device, several local devices, or several
machines, through ``tf.distribute`` (Keras 3's TensorFlow backend distributes ``model.fit``
over the strategy the model was built under).

- ``default``: the default (no-op) strategy.
- ``mirrored``: ``MirroredStrategy`` over the local GPUs, or over the logical CPU devices when
  there is no GPU and more than one CPU device is configured (that is how it is tested:
  ``tf.config.set_logical_device_configuration`` splits the CPU into two).
- ``multi-worker``: ``MultiWorkerMirroredStrategy``, which reads the cluster from ``TF_CONFIG``.
  Every worker runs the same ``ser-keras fit`` command; the chief writes the run directory, the
  other workers a scratch copy in ``<run_dir>/.worker-<index>`` (their checkpoints and logs).
  Keras 3's ``fit`` needs two work-arounds under this strategy (``patch_for_multi_worker``).

``train.batch_size`` is the global batch: with N replicas each replica sees batch_size / N.
"""

from __future__ import annotations

import json
import os

from ser_keras.config import STRATEGIES, STRATEGY_DEFAULT, STRATEGY_MIRRORED, STRATEGY_MULTI_WORKER
from ser_keras.errors import SerKerasError


def make_strategy(name: str):
    import tensorflow as tf

    if name == STRATEGY_DEFAULT:
        return tf.distribute.get_strategy()
    if name == STRATEGY_MIRRORED:
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[d.name for d in cpus])
    if name == STRATEGY_MULTI_WORKER:
        raw = os.environ.get("TF_CONFIG")
        if raw:
            try:
                json.loads(raw)
            except ValueError:
                raise SerKerasError("TF_CONFIG: not valid JSON (runtime.strategy=multi-worker)") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise SerKerasError(f"runtime.strategy: '{name}' is not one of {', '.join(STRATEGIES)}")


def worker_role() -> tuple:
    """(task_type, task_index) from TF_CONFIG, or ("chief", 0) without one."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return "chief", 0
    try:
        task = json.loads(raw).get("task", {})
    except ValueError:
        raise SerKerasError("TF_CONFIG: not valid JSON (runtime.strategy=multi-worker)") from None
    return task.get("type", "chief"), int(task.get("index", 0))


def is_chief(strategy_name: str) -> bool:
    """Whether this process writes the run directory (always, except non-chief workers)."""
    if strategy_name != STRATEGY_MULTI_WORKER:
        return True
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    cluster = json.loads(raw).get("cluster", {})
    task_type, index = worker_role()
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and index == 0


def patch_for_multi_worker(model) -> None:
    """Work around Keras 3's ``fit`` under MultiWorkerMirroredStrategy (keras-team/keras#20585),
    two places where it reduces across workers in a way that fails:

    1. before the first epoch it builds the model from the strategy-wide MEAN of the first
       distributed batch (an eager cross-worker reduce); building it from this worker's local
       part of that batch gives the same variables (only shapes and dtypes matter);
    2. it reduces every scalar log of a train step with ``strategy.reduce("MEAN", v, axis=0)``,
       which needs a rank >= 1 value: the train step here returns its logs as shape (1,), which
       that reduce turns back into the scalar mean over workers.
    """
    import tensorflow as tf
    from keras import tree

    if not hasattr(model, "_maybe_symbolic_build") or not hasattr(model, "_symbolic_build"):
        return  # a Keras without this code path needs no patch
    strategy = model.distribute_strategy

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(local, next(it))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build

    original_train_step = model.train_step

    def train_step(data):
        logs = original_train_step(data)
        return tree.map_structure(lambda v: tf.reshape(v, [1]) if getattr(v, "shape", None) is not None
                                  and v.shape.rank == 0 else v, logs)

    model.train_step = train_step
