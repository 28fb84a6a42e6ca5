"""Ground truth for evaluation — the ONLY module that reads labels.

Training sees DATA/<domain>/**/<image> through `uem.datasets.folders.scan` and nothing else; here,
for scoring only, the folders below a domain become labels:
- category of an image = the first sub-folder under its domain folder (DATA/<domain>/<category>/...),
  or, when a labels CSV is given, its `category` column (rows: path,category; path relative to DATA
  or absolute; a header row "path,category" is optional);
- identity = the file stem: the same emoji drawn in another style has the same file name.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..datasets.folders import scan
from ..engine.errors import DataError


@dataclass
class DomainLabels:
    """One domain's images with their category and identity, aligned by index."""

    domain: str
    paths: list[Path]
    categories: np.ndarray   # str [N]
    identities: np.ndarray   # str [N]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, mask: np.ndarray) -> "DomainLabels":
        idx = np.flatnonzero(mask)
        return DomainLabels(self.domain, [self.paths[i] for i in idx],
                            self.categories[idx], self.identities[idx])


def category_from_folder(path: str | Path, domain_dir: str | Path) -> str:
    """The first sub-folder under the domain folder; DataError if the image sits directly in it."""
    rel = Path(path).relative_to(domain_dir)
    if len(rel.parts) < 2:
        raise DataError(f"{path}: no category folder (expected <domain>/<category>/.../<image>)")
    return rel.parts[0]


def identity_of(path: str | Path) -> str:
    """The file stem: the same item in another style shares it."""
    return Path(path).stem


def read_labels_csv(csv_path: str | Path, data_dir: str | Path) -> dict[Path, str]:
    """{resolved image path: category} from a path,category CSV."""
    csv_path, data_dir = Path(csv_path), Path(data_dir)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: labels file not found")
    out: dict[Path, str] = {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            if line_no == 1 and [c.strip().lower() for c in row[:2]] == ["path", "category"]:
                continue
            if len(row) < 2 or not row[1].strip():
                raise DataError(f"{csv_path}:{line_no}: expected 'path,category', got {row!r}")
            p = Path(row[0].strip())
            p = p if p.is_absolute() else data_dir / p
            out[p.resolve()] = row[1].strip()
    return out


def load_labels(data_dir: str | Path, domains: Sequence[str] | None = None,
                labels_csv: str | Path | None = None) -> dict[str, DomainLabels]:
    """{domain: DomainLabels} for DATA/<domain>/**; categories from folders or from `labels_csv`."""
    data_dir = Path(data_dir)
    found = scan(data_dir, list(domains) if domains else None)
    table = read_labels_csv(labels_csv, data_dir) if labels_csv is not None else None
    out = {}
    for domain, paths in found.items():
        if table is None:
            cats = [category_from_folder(p, data_dir / domain) for p in paths]
        else:
            cats = [table.get(p.resolve()) for p in paths]
            missing = [p for p, c in zip(paths, cats) if c is None]
            if missing:
                raise DataError(f"{labels_csv}: {len(missing)} image(s) of domain {domain!r} have no label, "
                                f"e.g. {missing[0]}")
        out[domain] = DomainLabels(domain, list(paths), np.asarray(cats, dtype=str),
                                   np.asarray([identity_of(p) for p in paths], dtype=str))
    return out
