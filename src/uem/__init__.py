"""uem — universal unsupervised cross-domain image retrieval, trained with UEM, served on a CPU."""

__version__ = "0.1.0"
