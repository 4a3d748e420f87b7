"""Caption-conditioned image synthesis, judged by the captioner: the ``imagine`` model family.

Modules:

* :mod:`.config`: the ``train_imagine`` params group (a leaf module: no torch).
* :mod:`.models`: the caption encoder, the FiLM-conditioned generator, the
  projection discriminator, :func:`~.models.encode_captions` (refuses what the
  model cannot read), :func:`~.models.imagine` (seeded images per caption).
* :mod:`.data`: the prepared images with their captions.
* :mod:`.fit`: the training loop on a ``Session`` and its Ray Train entry point.
* :mod:`.io`: the model folder and :class:`~.io.Imaginer` (captions in, images out).
* :mod:`.family`: the family spec the generic train stage runs.
* :mod:`.evaluation`: the caption consistency, read back by the trained captioner.
* :mod:`.serving`: the registered pyfunc (captions in, base64 PNGs out).
"""

from components.families import Entry

# the model families of this package (components.families finds them here)
FAMILIES = {"imagine": Entry(params="components.imagine.config:ImagineParams",
                             spec="components.imagine.family:IMAGINE")}
