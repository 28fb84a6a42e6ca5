"""Prototypes as the runtime sees them: what open-set rejection needs, nothing more (numpy only).

Built on the training side (`uem.train.prototypes`), stored in a bundle as
`prototypes.npy` (float32 [P, D] centroids, unit length) + `prototypes.json` (who owns each
prototype, which prototypes were merged across domains, each merge's radius).

A *link* (a, b) says: prototype a of one domain and prototype b of another were paired by the
Hungarian algorithm after translation and passed the merge rule — they are the same concept. A
prototype with no link towards a target domain is a concept private to its own domain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleError

PROTOTYPES_NPY = "prototypes.npy"
PROTOTYPES_JSON = "prototypes.json"


@dataclass
class PrototypeGraph:
    domains: list[str]
    centroids: np.ndarray     # float32 [P, D], unit length
    owner: np.ndarray         # int64 [P], index into `domains`
    links: np.ndarray         # int64 [L, 2], global prototype indices, owners differ
    radius: np.ndarray        # float32 [L], largest D(x_a, x_b) between the two clusters' members
    domain_means: np.ndarray  # float32 [n_domains, D], embedding mean per domain (the translation)

    def __post_init__(self) -> None:
        self.centroids = np.asarray(self.centroids, dtype=np.float32)
        self.owner = np.asarray(self.owner, dtype=np.int64).reshape(-1)
        self.links = np.asarray(self.links, dtype=np.int64).reshape(-1, 2)
        self.radius = np.asarray(self.radius, dtype=np.float32).reshape(-1)
        self.domain_means = np.asarray(self.domain_means, dtype=np.float32)
        self.validate()

    def validate(self) -> None:
        p = len(self.centroids)
        problems = []
        if self.centroids.ndim != 2:
            problems.append("centroids must be 2-D")
        if len(self.owner) != p:
            problems.append(f"owner has {len(self.owner)} entries for {p} prototypes")
        if len(self.owner) and (self.owner.min() < 0 or self.owner.max() >= len(self.domains)):
            problems.append("owner names a domain that does not exist")
        if len(self.links) != len(self.radius):
            problems.append("links and radius differ in length")
        if len(self.links) and (self.links.min() < 0 or self.links.max() >= p):
            problems.append("a link names a prototype that does not exist")
        elif len(self.links) and np.any(self.owner[self.links[:, 0]] == self.owner[self.links[:, 1]]):
            problems.append("a link joins two prototypes of the same domain")
        if self.domain_means.shape != (len(self.domains), self.centroids.shape[-1] if self.centroids.ndim == 2 else -1):
            problems.append("domain_means shape does not match domains x dim")
        if not np.all(np.isfinite(self.centroids)) or not np.all(np.isfinite(self.radius)):
            problems.append("non-finite values")
        if problems:
            raise BundleError("invalid prototypes: " + "; ".join(problems))

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def of_domain(self, domain: str) -> np.ndarray:
        """Global indices of the prototypes owned by `domain`."""
        return np.flatnonzero(self.owner == self.domains.index(domain))

    def partners(self, proto: int, target: str) -> list[tuple[int, float]]:
        """(prototype of `target`, radius) for every link of `proto` into `target`."""
        t = self.domains.index(target)
        out = []
        for (a, b), r in zip(self.links.tolist(), self.radius.tolist()):
            if a == proto and self.owner[b] == t:
                out.append((b, r))
            elif b == proto and self.owner[a] == t:
                out.append((a, r))
        return out

    # -- storage -------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "version": 1,
            "domains": list(self.domains),
            "owner": self.owner.tolist(),
            "links": [[int(a), int(b), float(r)] for (a, b), r in zip(self.links, self.radius)],
            "domain_means": self.domain_means.tolist(),
        }

    def save(self, folder: Path) -> None:
        """Plain writes into `folder` (the bundle writer makes the whole bundle atomic)."""
        folder = Path(folder)
        np.save(folder / PROTOTYPES_NPY, self.centroids, allow_pickle=False)
        (folder / PROTOTYPES_JSON).write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> "PrototypeGraph":
        folder = Path(folder)
        try:
            centroids = np.load(folder / PROTOTYPES_NPY, allow_pickle=False)
            meta = json.loads((folder / PROTOTYPES_JSON).read_text(encoding="utf-8"))
            links = meta["links"]
            return cls(
                domains=[str(d) for d in meta["domains"]],
                centroids=centroids,
                owner=meta["owner"],
                links=[[a, b] for a, b, _ in links] if links else np.zeros((0, 2)),
                radius=[r for _, _, r in links],
                domain_means=meta["domain_means"],
            )
        except BundleError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BundleError(f"{folder}: unreadable prototypes ({e})") from None
