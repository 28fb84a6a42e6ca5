"""The service behind the HTTP routes: one shared engine, its thread pools, adds and reloads.

No FastAPI here: the routes (api.py) parse and answer, this module does the work, so it is
testable and readable without HTTP.

Concurrency: the engine is opened once. Queries run in a thread pool and need no lock: each takes
the engine's current immutable snapshot (uem.engine.engine). Adds run one at a time on their own
single thread, under `write_lock`, which the reload poller takes too; `Engine.add` commits the
bundle atomically and only then publishes the new snapshot, so a query sees the state before an
add or after it, never a mix. The poller picks up commits made by other processes (`uemctl index
add`, the other workers of a multi-worker server).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image

from ..engine import Engine, QueryResult
from ..engine.bundle.store import current_generation
from ..engine.errors import BundleError, ImageError, UemError
from ..engine.preprocess import IMAGE_EXTENSIONS
from .config import ServeConfig
from .media import MediaStore, extension
from .metrics import Metrics

log = logging.getLogger("uem.serve")


def one_line(text: str, limit: int = 500) -> str:
    """A message safe for a one-line JSON error: control characters and newlines become spaces."""
    s = "".join(c if c.isprintable() else " " for c in str(text))
    s = " ".join(s.split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


def named_image_error(e: ImageError, name: str) -> ImageError:
    """The engine names in-memory pictures `<bytes>`; an upload has a better name."""
    msg = str(e)
    for prefix in ("<bytes>", "<bytearray>"):
        if msg.startswith(prefix):
            msg = name + msg[len(prefix):]
    if msg.startswith("empty image data"):
        msg = f"{name}: {msg}"
    return ImageError(one_line(msg))


@dataclass(frozen=True)
class Answer:
    """One query's result and the state it came from (generation, the target domain's item count)."""

    result: QueryResult
    generation: int
    count: int
    seconds: float


@dataclass(frozen=True)
class Upload:
    name: str      # the client's file name (only shown back, never used as a path)
    data: bytes


class Service:
    """The engine, its executors and the media folder of one server process."""

    def __init__(self, bundle: str | Path | Engine, config: ServeConfig) -> None:
        self.config = config
        if isinstance(bundle, Engine):
            self.engine, self._owns_engine = bundle, False
        else:
            self.engine, self._owns_engine = Engine.open(bundle, threads=config.onnx_threads), True
        self.media = MediaStore(config.media_dir(self.engine.path))
        self.metrics = Metrics()
        self.write_lock = threading.Lock()
        self.queries = ThreadPoolExecutor(config.pool_size, thread_name_prefix="uem-query")
        self.adds = ThreadPoolExecutor(1, thread_name_prefix="uem-add")
        self._ids: dict[str, tuple[Sequence[dict], dict[str, int]]] = {}
        self._ids_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- life --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start looking for commits of other processes (every config.reload_interval_s)."""
        if self.config.reload_interval_s > 0 and self._poller is None:
            self._poller = threading.Thread(target=self._poll, name="uem-reload", daemon=True)
            self._poller.start()

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        self.queries.shutdown(wait=True, cancel_futures=True)
        self.adds.shutdown(wait=True)
        if self._owns_engine:
            self.engine.close()

    def _poll(self) -> None:
        while not self._stop.wait(self.config.reload_interval_s):
            try:
                self.reload_if_changed()
            except UemError as e:  # a broken commit elsewhere: keep serving the state we have
                log.warning("uem serve: not reloading the bundle: %s", one_line(str(e)))

    def reload_if_changed(self) -> bool:
        gen = current_generation(self.engine.path)
        if gen is None or gen == self.engine.generation:
            return False
        with self.write_lock:
            return self.engine.reload()

    # -- reading -----------------------------------------------------------------------------
    def check(self, domain: str, source: str | None = None) -> None:
        """UnknownDomainError for a bad target or source, before any picture is read."""
        self.engine.check_domains(domain, source)

    def query(self, data: bytes, domain: str, k: int, source: str | None, no_reject: bool) -> Answer:
        """Engine.query on the uploaded bytes, with the generation and count of the state that
        answered. The engine reads its snapshot once per query; generations only grow, so when
        the generation is the same before and after, every read in between saw that one state."""
        t0 = time.perf_counter()
        for _ in range(3):
            gen = self.engine.generation
            count = self.engine.count(domain)
            try:
                result = self.engine.query(data, domain, k=k, source=source, no_reject=no_reject)
            except ImageError as e:
                raise named_image_error(e, "the uploaded picture") from None
            if self.engine.generation == gen:
                break
        else:  # three adds committed during three queries: counts only grow, report the newest
            gen, count = self.engine.generation, self.engine.count(domain)
        self.metrics.observe_query(domain, result.accepted)
        return Answer(result, gen, count, time.perf_counter() - t0)

    def item_path(self, domain: str, item_id: str) -> Path | None:
        """The picture file the bundle records for `item_id` in `domain`, or None (unknown id, or
        a record that is not a readable picture file). Only recorded paths are ever returned."""
        row = self._id_map(domain).get(item_id)
        if row is None:
            return None
        path = Path(self.engine.items(domain)[row]["path"])
        if not path.is_absolute() or path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            return None
        return path

    def known_ids(self, domain: str) -> set[str]:
        return set(self._id_map(domain))

    def _id_map(self, domain: str) -> dict[str, int]:
        """id -> row of the current state's items, cached per items sequence; items only ever
        grow at the end (adds append), so a grown sequence extends the cached map."""
        items = self.engine.items(domain)
        with self._ids_lock:
            cached = self._ids.get(domain)
            if cached is not None and cached[0] is items:
                return cached[1]
            if cached is not None and len(items) >= len(cached[0]) and (
                    not cached[0] or items[len(cached[0]) - 1]["id"] == cached[0][-1]["id"]):
                ids, start = dict(cached[1]), len(cached[0])
            else:
                ids, start = {}, 0
            for row in range(start, len(items)):
                ids.setdefault(items[row]["id"], row)
            self._ids[domain] = (items, ids)
            return ids

    # -- writing -----------------------------------------------------------------------------
    def add(self, domain: str, uploads: list[Upload]) -> dict:
        """Decode every upload (all must be pictures: nothing is stored otherwise), store each in the
        media folder, then add them to `domain` in one atomic commit. Runs on the add thread."""
        self.check(domain)
        checked = []
        for up in uploads:
            try:
                self.engine.preprocess(up.data)  # the engine's decoder and its decompression guard
                with Image.open(io.BytesIO(up.data)) as im:
                    fmt = im.format
            except ImageError as e:
                raise named_image_error(e, up.name) from None
            except Exception as e:  # noqa: BLE001 - PIL after a successful decode: still a bad file
                raise ImageError(one_line(f"{up.name}: cannot read image ({e})")) from None
            checked.append((up, extension(fmt)))
        with self.write_lock:
            present = self.known_ids(domain)
            stored: dict[str, tuple[Upload, Path]] = {}
            for up, ext in checked:
                digest, path = self.media.put(up.data, ext)
                stored.setdefault(digest, (up, path))
            new = [d for d in stored if d not in present]
            added = 0
            if new:
                added = self.engine.add(domain, [stored[d][1] for d in new], ids=new,
                                        metadata=[{"sha256": d, "filename": one_line(stored[d][0].name, 200)}
                                                  for d in new])
            gen, count = self.engine.generation, self.engine.count(domain)
        self.metrics.observe_add(domain, added)
        return {"domain": domain, "added": added, "present": len(stored) - len(new),
                "generation": gen, "count": count,
                "items": [{"id": d, "filename": one_line(up.name, 200), "new": d in new}
                          for d, (up, _) in stored.items()]}

    # -- facts -------------------------------------------------------------------------------
    def domains(self) -> list[dict]:
        eng = self.engine
        return [{"name": d, "count": eng.count(d)} for d in eng.domains]

    def info(self) -> dict:
        """The bundle's summary without where it lives on the server's disk."""
        s = dict(self.engine.info())
        s["bundle"] = Path(s.pop("path")).name
        return s

    def gauges(self) -> dict:
        try:
            eng = self.engine
            return {
                "uem_bundle_generation": ("The bundle generation this process serves.",
                                          {(): float(eng.generation)}),
                "uem_domain_items": ("Items per domain in the state this process serves.",
                                     {(("domain", d),): float(eng.count(d)) for d in eng.domains}),
            }
        except BundleError:
            return {}
