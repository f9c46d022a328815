"""The recipe layer: what is specific to speech recipes on top of the model-agnostic core
(``neurosel.fc``, ``saliency``, ``prune``, ``adapt``): the stage implementations of stages 5-7,
the files and plots of the saliency stage, and ``layout``, the one owner of on-disk names.

Modules import what they use explicitly; nothing is imported here, so that ``neurosel.recipe.layout``
(which the shell asks through ``neurosel.bin.layout``) starts without torch or Lhotse.
"""
