"""Image synthesis: a convolutional VAE and a DCGAN, in plain PyTorch.

Modules (no Ray, no MLflow, no I/O at import):

``config``       ``VAEConfig``, ``GANConfig``, ``VAETrainParams``, ``GANTrainParams``
                 (frozen, strict; a leaf module: no torch, no model code).
``models``       ``build_vae``, ``build_gan``, the ``MODELS`` registry.
``vae``          ``Encoder``, ``Decoder``, likelihoods, ``VAE``, ELBO terms, IWAE.
``gan``          DCGAN ``Generator``, ``Discriminator``, discriminator norms.
``losses``       pure losses: KL, likelihoods, bits/dim, GAN losses, gradient penalty.
``ema``          ``EMA`` of generator weights, ``recalibrate_batchnorm``.
``steps``        ``vae_train_step``, ``vae_eval_step``, ``gan_train_step``,
                 ``make_gan_optimizers``.
``sampling``     ``sample``, ``reconstructions``, ``interpolate``, ``image_grid``.
``diagnostics``  ``sample_diversity``, ``colour_histogram``, ``histogram_distance``,
                 ``colour_distance``.
``data``         ``load_images``, ``ImageTensorDataset``.
``io``           ``save_model_dir``, ``load_model_dir``, ``load_generator``.
``fit``          the training loops ``fit_vae`` / ``fit_gan`` (Ray-agnostic, via a
                 ``Session``) and their ``TorchTrainer`` entry points.
``common``       ``unwrap`` (DDP / compile), seeded noise, uint8 <-> float images.
"""

from components.families import Entry

# the model families of this package (components.families finds them here)
FAMILIES = {"vae": Entry(params="components.generative.config:VAEParams", spec="components.generative.family:VAE"),
            "gan": Entry(params="components.generative.config:GANParams", spec="components.generative.family:GAN")}
