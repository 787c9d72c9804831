"""MEDFuse Lens core library: records, sources, features, models, training and explanations.

No Streamlit import anywhere in this package: the dashboard in app/ is one consumer among others.
"""

from medfuse_core.record import MODALITIES, ChestImage, ImageMetadata, Labs, Note, PatientRecord, Vitals

__all__ = ["MODALITIES", "ChestImage", "ImageMetadata", "Labs", "Note", "PatientRecord", "Vitals"]
__version__ = "0.1.0"
