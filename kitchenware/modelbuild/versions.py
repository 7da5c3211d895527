"""What produced a model: recorded in its metadata when it is built (training, imports).

Lives with the model-building code because it imports TensorFlow and Keras to read their
versions; the runtime only reads the recorded dict (ModelMetadata.framework_versions).
"""

from __future__ import annotations

import platform


def framework_versions() -> dict[str, str]:
    """Versions of what produced the model; imported lazily so the schema stays cheap."""
    import bentoml
    import keras
    import numpy
    import PIL
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "bentoml": bentoml.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
    }
