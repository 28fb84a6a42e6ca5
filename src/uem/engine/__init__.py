"""The uem runtime: numpy + onnxruntime + hnswlib + pillow. Never imports torch."""

from .errors import (BundleError, BundleVersionError, DataError, ImageError, MissingDependencyError,
                     UemError, UnknownDomainError)
from .preprocess import IMAGE_EXTENSIONS, PreprocessSpec, load_image, preprocess, preprocess_batch

__all__ = [
    "BundleError", "BundleVersionError", "DataError", "ImageError", "MissingDependencyError",
    "UemError", "UnknownDomainError", "IMAGE_EXTENSIONS", "PreprocessSpec", "load_image",
    "preprocess", "preprocess_batch",
]
