"""One training and evaluation loop for every CNN paper (effnet_ham, siim2020, gradcam_overlap).

The loop is configured by :class:`TrainOptions` (built from the config with
:meth:`TrainOptions.from_dict`), takes torch datasets and writes a checkpoint every epoch to a
folder Snakemake does not own, so a killed job resumes where it stopped. Randomness is derived
from ``(seed, epoch)`` at the start of every epoch, which makes a resumed run bit-identical to
an uninterrupted one on CPU.

Pieces: torchvision backbones by name with an optional metadata branch (:class:`CNNClassifier`),
losses (BCE, focal BCE with ``torchvision.ops.sigmoid_focal_loss``, cross-entropy), a weighted
sampler to a target class mix, mixup, gradient accumulation, mixed precision on CUDA, a frozen
backbone warm-up, AdamW/Adam/SGD, cosine annealing, early stopping, and the best checkpoint by a
validation metric.

Modules, in the order of the flow (each imports only those above it):

* :mod:`~melrepro.methods.training.options`: :class:`TrainOptions`, its choices, fingerprint;
* :mod:`~melrepro.methods.training.data`: datasets, samplers, the training and evaluation
  loaders, batches to the device, augmentation on the device;
* :mod:`~melrepro.methods.training.models`: :class:`CNNClassifier`, :func:`build_model`, model
  factories, Grad-CAM layers, paper 004's Flatten-MLP head and Keras layer names;
* :mod:`~melrepro.methods.training.optim`: losses, mixup, optimisers, schedules, AMP dtype;
* :mod:`~melrepro.methods.training.checkpoint`: ``last.pt``/``best.pt``, resume,
  :func:`export_best`, :func:`load_model`, :func:`write_run_outputs`;
* :mod:`~melrepro.methods.training.loop`: epochs, validation, precise BN, :func:`train_model`,
  :func:`evaluate`, :func:`predict`.
"""

from melrepro.methods.training.checkpoint import (
    TrainResult,
    export_best,
    load_model,
    run_summary,
    write_run_outputs,
)
from melrepro.methods.training.data import (
    ArrayDataset,
    RawImages,
    SeededItems,
    TrainLoader,
    augment_on_device,
    augments_on_device,
    make_class_sampler,
    make_sampler,
)
from melrepro.methods.training.loop import _val_score as _val_score
from melrepro.methods.training.loop import evaluate, predict, recalibrate_batchnorm, train_model
from melrepro.methods.training.models import (
    KERAS_LAYERS,
    CNNClassifier,
    ModelFactory,
    build_model,
    flatten_size,
    gradcam_target_layer,
    keras_layer,
    layer_grid,
    use_flatten_mlp_head,
)
from melrepro.methods.training.optim import _inverse_time_lr as _inverse_time_lr
from melrepro.methods.training.optim import _make_optimizer as _make_optimizer
from melrepro.methods.training.optim import make_loss, mixup_batch
from melrepro.methods.training.options import (
    BACKBONES,
    HEADS,
    LOSSES,
    MONITORS,
    OPTIMIZERS,
    SCHEDULERS,
    TrainOptions,
)

# The private names above (``_make_optimizer``, ``_inverse_time_lr``, ``_val_score``) stay
# reachable as ``training.<name>`` for the tests that use them; they are not in ``__all__``.
__all__ = [
    "BACKBONES",
    "HEADS",
    "KERAS_LAYERS",
    "LOSSES",
    "MONITORS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "ArrayDataset",
    "CNNClassifier",
    "ModelFactory",
    "RawImages",
    "SeededItems",
    "TrainLoader",
    "TrainOptions",
    "TrainResult",
    "augment_on_device",
    "augments_on_device",
    "build_model",
    "evaluate",
    "export_best",
    "flatten_size",
    "gradcam_target_layer",
    "keras_layer",
    "layer_grid",
    "load_model",
    "make_class_sampler",
    "make_loss",
    "make_sampler",
    "mixup_batch",
    "predict",
    "recalibrate_batchnorm",
    "run_summary",
    "train_model",
    "use_flatten_mlp_head",
    "write_run_outputs",
]
