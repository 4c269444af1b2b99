"""A local model registry: versioned model folders and a ``production`` pointer.

Layout::

    REGISTRY/
      versions/<model_version>/   model.pt, model.onnx, metadata.json (as exported)
      production.json              {"version": ..., "promoted_at": ..., "previous": ...}
      history.jsonl                one line per promotion

The pointer is replaced atomically (write + rename), so a reader sees the old or the new version,
never a half-written one. The streaming job can be pointed at a registry (model.dir) and then
follows ``production.json`` (hot swap, see flink_job/scoring.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from model.exceptions import ModelFileError

POINTER = "production.json"


@dataclass(frozen=True)
class Production:
    """What the production pointer says."""

    version: str
    path: Path
    promoted_at: str


def is_registry(path: str | Path) -> bool:
    """True when ``path`` is a registry folder (it has versions/)."""
    return (Path(path) / "versions").is_dir()


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def register(registry: str | Path, model_dir: str | Path) -> str:
    """Copy an exported model folder into the registry; returns its version (from its metadata)."""
    from model.export import load_model

    reg = Path(registry)
    loaded = load_model(Path(model_dir))  # verifies sha256 and metadata before anything is copied
    version = loaded.model_version
    dest = reg / "versions" / version
    if dest.exists():
        return version
    (reg / "versions").mkdir(parents=True, exist_ok=True)
    tmp = reg / "versions" / f".{version}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp)
    tmp.rename(dest)
    return version


def versions(registry: str | Path) -> list[str]:
    """Registered versions, oldest first (by folder time)."""
    root = Path(registry) / "versions"
    if not root.is_dir():
        return []
    dirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return [d.name for d in sorted(dirs, key=lambda d: d.stat().st_mtime)]


def production(registry: str | Path) -> Production | None:
    """The production version, or None when nothing was promoted yet."""
    reg = Path(registry)
    try:
        data = json.loads((reg / POINTER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{POINTER} is not valid JSON ({e}); promote a version again", path=str(reg)) from e
    path = reg / "versions" / data["version"]
    if not path.is_dir():
        raise ModelFileError(f"production points at {data['version']}, which is not registered", path=str(reg))
    return Production(data["version"], path, data.get("promoted_at", ""))


def promote(registry: str | Path, version: str) -> Production:
    """Make ``version`` the production model (atomic pointer swap) and record it in history.jsonl."""
    reg = Path(registry)
    if not (reg / "versions" / version).is_dir():
        raise ModelFileError(f"version {version} is not registered; register it first", path=str(reg))
    previous = production(reg)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    record = {"version": version, "promoted_at": now, "previous": previous.version if previous else None}
    _write_atomic(reg / POINTER, json.dumps(record))
    with open(reg / "history.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    return Production(version, reg / "versions" / version, now)


def resolve(model_dir: str | Path) -> Path:
    """The model folder to load: the production version of a registry, or ``model_dir`` itself."""
    p = Path(model_dir)
    if is_registry(p):
        prod = production(p)
        if prod is None:
            raise ModelFileError(
                "the registry has no production version; run `netanomaly retrain` or promote one", path=str(p)
            )
        return prod.path
    return p
