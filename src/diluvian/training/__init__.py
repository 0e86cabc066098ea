"""Moving-FOV training of flood-filling networks, and validation (spec §4).

Training
--------
The volumes are split into training and validation parts (``[training]
partitions`` / ``training_partition`` / ``validation_partition``) and brought
to ``[volume] resolution``. A background thread streams training subvolumes of
``model.training_subv_shape``, round-robin over the training volumes: sampled
(:func:`~diluvian.volumes.sample_subvolume_bounds`), label mask eroded by
``label_erosion`` (subvolumes whose seed falls outside the eroded object are
redrawn), optionally reduced to the seed's connected component, and augmented
(:func:`~diluvian.augment.augment_subvolume`).

``batch_size`` slots each hold a :class:`~diluvian.region.Region` on one
subvolume (target = its object, no padding, no anti-merge bias). At every step
each slot contributes the next FOV of its region (a slot whose move queue is
empty starts on a new subvolume, with the seed FOV), the batch goes through one
forward/backward/optimizer step, and the network's own (detached) predictions
are written back into the regions, which queues the next moves: training is
self-fed, as in FFN. The loss is binary cross-entropy on logits against soft
targets (``v_true``/``v_false``), per-sample weighted by the inverse frequency of
the subvolume's filling fraction when ``fill_factor_bins`` is set.

On CUDA the slots form two groups that alternate: while the device runs one
group's step, the host writes the previous step's predictions into the other
group's regions and assembles its next batch, so the device rarely waits for
NumPy. Each region still sees the prediction of its own previous FOV; a
prediction just comes from weights one step older.

Validation
----------
A fixed set of ``validation_size`` subvolumes of ``model.validation_subv_shape``
is drawn once from the validation parts with a seed derived from
``random_seed`` (the same set every epoch; augmented only with
``augment_validation``, and then identically every epoch). Every epoch each
validation region is filled to completion with the network in eval mode, many
regions batched per forward pass, and scored with ``validation_metric`` over
the area its output FOVs can cover. ``val_subv_metric`` is the mean score and
``val_loss`` the mean loss over all validation FOVs (there are no padding
batches).

Outputs for ``-mo BASE``: ``BASE.toml`` (the effective config, at the start),
``BASE.pt`` (the best model by ``val_subv_metric``, with optimizer state),
``BASE.csv`` (``epoch,loss,val_loss,val_subv_metric,time``, rewritten every
epoch), ``BASE.png`` (the metric plot), per-epoch checkpoints with ``-mc`` and
TensorBoard logs in ``BASE_logs/`` with ``--tensorboard``.


Modules
-------
``data``
    volume parts, prepared subvolumes, the background stream, the validation set
``objective``
    optimizer, per-sample loss, filling-fraction weights
``loop``
    the training slots, the epoch loop, :func:`train_network`
``validation``
    :func:`run_validation`, :func:`validate_model`
``outputs``
    history CSV, metric plot, checkpoint names, TensorBoard, progress bars
"""

from __future__ import annotations

from .data import (PreparedSubvolume, Prefetcher, prepare_subvolume, prepare_training_volumes, subvolume_stream,
                   validation_subvolumes)
from .loop import MAX_EARLY_RESTARTS, TrainingResult, train_network
from .objective import make_optimizer
from .outputs import CSV_FIELDS, TrainingOutputs, write_history_csv, write_metric_plot
from .validation import ValidationResult, run_validation, validate_model

__all__ = [
    "PreparedSubvolume",
    "TrainingResult",
    "ValidationResult",
    "prepare_training_volumes",
    "prepare_subvolume",
    "subvolume_stream",
    "validation_subvolumes",
    "run_validation",
    "make_optimizer",
    "train_network",
    "validate_model",
    "write_history_csv",
    "write_metric_plot",
    "CSV_FIELDS",
    "MAX_EARLY_RESTARTS",
    "Prefetcher",
    "TrainingOutputs",
]
