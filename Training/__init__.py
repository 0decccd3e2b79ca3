"""Training: the paper's cross-validated training, model export and experiment tables.

Modules: ``config`` (one dataclass per job, the paper's defaults), ``datasets`` (manifest
CSV → cases and LE/DES pairs), ``splits`` (patient-disjoint stratified 5 × 80/10/10),
``cache`` (preprocessed images, built once), ``augment``, ``classifier_training``,
``generator_training``, ``runtime`` (device, AMP, torchrun, checkpoints), ``run`` (a whole
run), ``evaluation`` / ``metrics`` (settings F, C, Ĉ, F+C, F+Ĉ), ``holdout`` (a package on
new patients), ``export`` (model package), ``experiments`` (tables) and ``cli``
(``virtual-biopsy-train``). The library never imports this package.

>>> from Training.config import RunConfig
>>> RunConfig().classifier.max_epochs
300
"""
