"""Methods: what each family of models does with its nets, registered in
:data:`profond.registry.METHODS` (``profond list methods``).

A method builds its data and models from the config and provides the training step and
the evaluation that the one training loop (:mod:`profond.train`) calls; the contract is
in :mod:`profond.contract`.

* :mod:`.classification` — ``classifier`` (course ch. 1, 3, 4);
* :mod:`.autoencoder` — ``autoencoder``; :mod:`.vae` — ``vae``; :mod:`.vqvae` — ``vqvae``
  (course ch. 9);
* :mod:`.gan` — ``gan``, with the losses of :mod:`.gan_losses` (course ch. 8);
* :mod:`.img2img` — ``pix2pix``, ``srgan``, ``cyclegan`` (course seed 004);
* :mod:`.diffusion` — ``diffusion`` (DDPM, DDIM, guidance, flow matching), with the noise
  process of :mod:`.noise` and the samplers of :mod:`.samplers` (course ch. 10);
* :mod:`.sequence` — ``text-classifier``, ``char-lm``; :mod:`.forecast` — ``forecaster``
  (course ch. 5); :mod:`.seq2seq` — ``seq2seq`` (course ch. 6);
* :mod:`.generative` — what every generative family offers beyond training (sampling,
  reconstruction, latent tools); :mod:`.imagedata` — the image-data set-up the image
  families share.
"""
