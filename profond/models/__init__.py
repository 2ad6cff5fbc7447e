"""Model builders, registered in :data:`profond.registry.MODELS` (``profond list models``).

* :mod:`.mlp` — ``mlp`` (course §1.2);
* :mod:`.cnn` — ``lenet5``, ``vgg``, ``course-cnn``, ``fmnist-cnn``, ``resnet``,
  ``resnet8``, ``resnet20`` (course chapter 4);
* :mod:`.transfer` — freezing, parameter groups and safetensors loading (course §4.7).

Every builder has the signature ``builder(in_shape=(C, H, W), num_classes=10, **options)``
and returns an ``nn.Module`` mapping a float (B, C, H, W) batch to (B, num_classes) logits.
"""

from . import cnn, mlp
from .transfer import LoadReport, freeze, load_weights, param_groups, unfreeze

__all__ = ["LoadReport", "cnn", "freeze", "load_weights", "mlp", "param_groups", "unfreeze"]
