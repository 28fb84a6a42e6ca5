"""The uem runtime: numpy + onnxruntime + hnswlib + pillow. Never imports torch."""

from .engine import Engine, Hit, QueryResult
from .errors import (BundleError, BundleVersionError, DataError, ImageError, MissingDependencyError,
                     UemError, UnknownDomainError)
from .preprocess import IMAGE_EXTENSIONS, PreprocessSpec, load_image, preprocess, preprocess_batch

__all__ = [
    "Engine", "Hit", "QueryResult",
    "BundleError", "BundleVersionError", "DataError", "ImageError", "MissingDependencyError",
    "UemError", "UnknownDomainError", "IMAGE_EXTENSIONS", "PreprocessSpec", "load_image",
    "preprocess", "preprocess_batch",
]
