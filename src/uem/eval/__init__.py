"""Evaluation: metrics, protocol splits, labels, the harness and the report.

numpy only at import time (the engine and the CLI use it without torch); the report imports
matplotlib lazily, inside its functions. Labels are read here and nowhere else (`labels`).
"""

from .harness import evaluate, evaluate_pair, parse_pairs, split_images
from .labels import DomainLabels, load_labels
from .metrics import (auroc, average_precision, h_score, known_acceptance_rate, open_set_metrics,
                      precision_at_k, private_detection_accuracy, retrieval_metrics, roc_curve,
                      top1_accuracy)
from .protocols import PROTOCOLS, CategorySplit, split_categories

__all__ = [
    "evaluate", "evaluate_pair", "parse_pairs", "split_images", "DomainLabels", "load_labels", "auroc",
    "average_precision", "h_score", "known_acceptance_rate", "open_set_metrics", "precision_at_k",
    "private_detection_accuracy", "retrieval_metrics", "roc_curve", "top1_accuracy", "PROTOCOLS",
    "CategorySplit", "split_categories", "write_report",
]


def write_report(*args, **kwargs):
    """See `uem.eval.report.write_report` (imported on use: it needs matplotlib)."""
    from .report import write_report as _write

    return _write(*args, **kwargs)
