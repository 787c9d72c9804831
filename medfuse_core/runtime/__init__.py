"""The runtime layer: what every consumer of a trained model needs, below train/ and explain/.

* checkpoint.py   the checkpoint format (safetensors + JSON), validated uploads, `load_model`
* device.py       device choice ("auto" -> cuda if available)
* precision.py    the autocast policy
* calibration.py  the ONE calibrated-probability function: the checkpoint's per-label calibration
* domain.py       the applicability domain per modality (is this input like the training data?)
* uncertainty.py  the conformal interval beside every probability
* trust.py        a prediction's states (insufficient data / out of domain / uncertain) and plain words
* cache.py        where the cache lives ($MEDFUSE_LENS_HOME)
* digest.py       sha256 of a file, once per file version per process
* threads.py      torch intra-op threads for one-patient interactive work

Nothing here imports train/, explain/, the predictor or the app (the import contracts in
pyproject.toml check it).
"""
