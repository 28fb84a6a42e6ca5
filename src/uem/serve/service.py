"""The service behind the HTTP routes: one shared engine, its thread pools, adds and reloads.

No FastAPI here: the routes (api.py) parse and answer, this module does the work, so it is
testable and readable without HTTP.

Concurrency: the engine is opened once. Queries run in a thread pool and need no lock: each takes
the engine's current immutable snapshot once (`Engine.snapshot()`) and answers, generation and count
included, from it alone. Adds run one at a time on their own single thread, under `write_lock`,
which the reload poller and `close` take too; `Engine.add` commits the bundle atomically and only
then publishes the new snapshot, so a query sees the state before an add or after it, never a mix.
The poller picks up commits made by other processes (`uemctl index add`, the other workers of a
multi-worker server).
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
from ..engine.preprocess import IMAGE_EXTENSIONS, decoded
from .config import ServeConfig
from .media import STORABLE_FORMATS, MediaStore, extension
from .metrics import Metrics

log = logging.getLogger("uem.serve")
POLLER_JOIN_S = 5.0  # how long close() waits for the reload poller before it takes the write lock

# What GET /v1/info shows: an allow-list, so nothing a manifest carries about the machine that made
# or serves the bundle (paths of training data, runs, backend addresses) ever leaves the server.
_INFO_KEYS = ("format_version", "generation", "written_at", "domains", "hnsw", "prototypes",
              "calibration", "alignment")
_MODEL_KEYS = ("embed_dim", "preprocess", "opset", "encoder", "encoder_fp32")


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
        root = self.engine.snapshot().path
        self.media = MediaStore(config.media_dir(root))
        self.metrics = Metrics()
        self.write_lock = threading.Lock()
        self.queries = ThreadPoolExecutor(config.pool_size, thread_name_prefix="uem-query")
        self.adds = ThreadPoolExecutor(1, thread_name_prefix="uem-add")
        self._ids: dict[str, tuple[Sequence[dict], dict[str, int]]] = {}
        self._ids_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._root, self._root_name = str(root), root.name

    def redact(self, message: str) -> str:
        """`message` with the bundle's absolute path replaced by its name (for error answers)."""
        return message.replace(self._root, self._root_name)

    # -- life --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start looking for commits of other processes (every config.reload_interval_s)."""
        if self.config.reload_interval_s > 0 and self._poller is None:
            self._poller = threading.Thread(target=self._poll, name="uem-reload", daemon=True)
            self._poller.start()

    def close(self) -> None:
        """Stop the poller, finish queued work, then close the engine under the write lock (a
        reload still running past POLLER_JOIN_S finishes first)."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=POLLER_JOIN_S)
        self.queries.shutdown(wait=True, cancel_futures=True)
        self.adds.shutdown(wait=True)
        if self._owns_engine:
            with self.write_lock:
                self.engine.close()

    def _poll(self) -> None:
        while not self._stop.wait(self.config.reload_interval_s):
            try:
                self.reload_if_changed()
            except Exception as e:  # noqa: BLE001 - a broken commit elsewhere, a full disk, a bug:
                # keep serving the state we have, and keep looking
                what = str(e) if isinstance(e, UemError) else f"{type(e).__name__}: {e}"
                log.warning("uem serve: not reloading the bundle: %s", one_line(what))

    def reload_if_changed(self) -> bool:
        snap = self.engine.snapshot()
        if current_generation(snap.path) in (None, snap.generation):
            return False
        with self.write_lock:
            return self._reload_locked()

    def _reload_locked(self) -> bool:
        """Reload when another process committed (the caller holds write_lock)."""
        if self._stop.is_set():
            return False
        snap = self.engine.snapshot()
        gen = current_generation(snap.path)
        if gen is None or gen == snap.generation:
            return False
        return self.engine.reload()

    # -- reading -----------------------------------------------------------------------------
    def check(self, domain: str, source: str | None = None) -> None:
        """UnknownDomainError for a bad target or source, before any picture is read."""
        self.engine.snapshot().check(domain, source)

    def query(self, data: bytes, domain: str, k: int, source: str | None, no_reject: bool) -> Answer:
        """`Engine.query` on the uploaded bytes, on one snapshot taken once, so the generation and
        count reported are those of the state that answered."""
        t0 = time.perf_counter()
        snap = self.engine.snapshot()   # query_batch checks the domains before reading the picture
        try:
            result = snap.query_batch([data], domain, k, source, no_reject)[0]
        except ImageError as e:
            raise named_image_error(e, "the uploaded picture") from None
        self.metrics.observe_query(domain, result.accepted)
        return Answer(result, snap.generation, snap.count(domain), time.perf_counter() - t0)

    def item_path(self, domain: str, item_id: str) -> Path | None:
        """The picture file the bundle records for `item_id` in `domain`, or None (unknown id, or
        a record that is not a readable picture file). Only recorded paths are ever returned."""
        items = self.engine.items(domain)  # one state: the id map and the row come from it
        row = self._id_map(domain, items).get(item_id)
        if row is None:
            return None
        path = Path(items[row]["path"])
        if not path.is_absolute() or path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            return None
        return path

    def known_ids(self, domain: str) -> set[str]:
        return set(self._id_map(domain, self.engine.items(domain)))

    def _id_map(self, domain: str, items: Sequence[dict]) -> dict[str, int]:
        """id -> row of `items` (one state's items of `domain`), cached per items sequence; items
        only ever grow at the end (adds append), so a grown sequence extends the cached map."""
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
        spec = self.engine.snapshot().info.preprocess
        for up in uploads:
            try:
                decoded(up.data, spec)  # the engine's decoder and its decompression guard
                with Image.open(io.BytesIO(up.data)) as im:
                    fmt = im.format
            except ImageError as e:
                raise named_image_error(e, up.name) from None
            except Exception as e:  # noqa: BLE001 - PIL after a successful decode: still a bad file
                raise ImageError(one_line(f"{up.name}: cannot read image ({e})")) from None
            ext = extension(fmt)
            if ext is None:
                raise ImageError(one_line(f"{up.name}: {fmt or 'this'} pictures cannot be added "
                                          f"(send {', '.join(STORABLE_FORMATS)})"))
            checked.append((up, ext))
        with self.write_lock:
            # Another worker's commit first, so `present` is what the bundle holds now.
            self._reload_locked()
            present = self.known_ids(domain)
            stored: dict[str, tuple[Upload, Path]] = {}
            for up, ext in checked:
                digest, path = self.media.put(up.data, ext)
                stored.setdefault(digest, (up, path))
            todo = [d for d in stored if d not in present]
            added = 0
            if todo:
                added = self.engine.add(domain, [stored[d][1] for d in todo], ids=todo,
                                        metadata=[{"sha256": d, "filename": one_line(stored[d][0].name, 200)}
                                                  for d in todo])
            # The engine now serves the state just committed (nothing else writes under this
            # lock), where the rows this add appended are the last `added` ones: those are new,
            # even if another process committed some of `todo` in between.
            snap = self.engine.snapshot()
            items = snap.states[domain].items
            gen, count = snap.generation, len(items)
            new = {it["id"] for it in items[count - added:]} if added else set()
        self.metrics.observe_add(domain, added)
        return {"domain": domain, "added": added, "present": len(stored) - added,
                "generation": gen, "count": count,
                "items": [{"id": d, "filename": one_line(up.name, 200), "new": d in new}
                          for d, (up, _) in stored.items()]}

    # -- facts -------------------------------------------------------------------------------
    def domains(self) -> dict:
        """The generation and every domain's count, from one snapshot."""
        snap = self.engine.snapshot()
        return {"generation": snap.generation,
                "domains": [{"name": d, "count": snap.count(d)} for d in snap.states]}

    def info(self) -> dict:
        """The bundle's summary, allow-listed: facts about the model and its state, nothing about
        where the bundle, its training data or its backend live."""
        s = self.engine.info()
        out = {"bundle": Path(s["path"]).name, **{k: s[k] for k in _INFO_KEYS if k in s}}
        model = s.get("model") or {}
        out["model"] = {k: model[k] for k in _MODEL_KEYS if k in model}
        parity = (model.get("extra") or {}).get("parity")
        if isinstance(parity, dict):
            out["model"]["parity"] = {k: v for k, v in parity.items() if isinstance(v, (int, float))}
        if isinstance(s.get("backend"), dict):
            out["backend"] = {"kind": s["backend"].get("kind")}
        return out

    def gauges(self) -> dict:
        try:
            snap = self.engine.snapshot()
            return {
                "uem_bundle_generation": ("The bundle generation this process serves.",
                                          {(): float(snap.generation)}),
                "uem_domain_items": ("Items per domain in the state this process serves.",
                                     {(("domain", d),): float(snap.count(d)) for d in snap.states}),
            }
        except BundleError:
            return {}
