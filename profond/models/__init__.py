"""Model builders, registered in :data:`profond.registry.MODELS` (``profond list models``).

Plain ``nn.Module`` s: losses and training live in :mod:`profond.methods`.

* :mod:`.mlp` — ``mlp`` (course §1.2, §1.6; BatchNorm and dropout of ch. 3);
* :mod:`.cnn` — ``lenet5``, ``vgg``, ``course-cnn``, ``fmnist-cnn``, ``resnet``,
  ``resnet8``, ``resnet20`` (course chapter 4; depthwise-separable option of §4.9);
* :mod:`.transfer` — freezing, parameter groups and safetensors loading (course §4.5, §4.7);
* :mod:`.rnn` — ``rnn-classifier``, ``char-lm``, ``rnn-forecaster`` (course chapter 5), with
  ``impl="torch"`` or the course's own cells of :mod:`profond.nn.rnn`;
* :mod:`.seq2seq` — ``seq2seq``, the encoder–decoder with no, Bahdanau or Luong attention
  (course §6.1–6.3, exercise 6.1);
* :mod:`.ae` — ``ae`` (plain, linear or sigmoid-code autoencoder, def. 9.2) and ``vae``
  (course §9.4–9.8), MLP or convolutional;
* :mod:`.vqvae` — ``vqvae``, the VQ-VAE with its EMA codebook (course §9.7, exercise 9.5);
* :mod:`.gan` — ``gan`` (fully connected) and ``dcgan`` (course chapter 8), optionally
  class-conditional and spectrally normalised;
* :mod:`.unet` — ``unet`` and ``patchgan`` (Pix2Pix / CycleGAN) and ``srnet`` (SRGAN-style
  super-resolution), course seed 004.

The feature net of the generative metrics, ``fmnist-features``, is registered by
:mod:`profond.metrics.features`.

The image builders have the signature ``builder(in_shape=(C, H, W), num_classes=10,
**options)``; the sequence builders (:mod:`.rnn`, :mod:`.seq2seq`) take vocabulary or input
sizes instead. The classifiers (:mod:`.mlp`, :mod:`.cnn`) map a float (B, C, H, W) batch to
(B, num_classes) logits; the other modules say what their models take and return (token
ids, series windows, latent codes, images).
"""

from . import cnn, mlp
from .transfer import LoadReport, freeze, load_weights, param_groups, unfreeze

__all__ = ["LoadReport", "cnn", "freeze", "load_weights", "mlp", "param_groups", "unfreeze"]
