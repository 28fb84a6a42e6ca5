"""The uem runtime: numpy + onnxruntime + hnswlib + pillow. Never imports torch."""

from .engine import Engine
from .errors import (BundleError, BundleVersionError, DataError, ImageError, MissingDependencyError,
                     UemError, UnknownDomainError)
from .preprocess import IMAGE_EXTENSIONS, PreprocessSpec, load_image, preprocess, preprocess_batch
from .search import Hit, QueryResult, Snapshot

__all__ = [
    "Engine", "Hit", "QueryResult", "Snapshot",
    "BundleError", "BundleVersionError", "DataError", "ImageError", "MissingDependencyError",
    "UemError", "UnknownDomainError", "IMAGE_EXTENSIONS", "PreprocessSpec", "load_image",
    "preprocess", "preprocess_batch",
]
