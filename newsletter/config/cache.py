"""Validated configs kept by the digest of the file they came from, in this process and on disk for every other one.

The daemon, the web app and each CLI run read the same subscribers.yaml; whichever validates a content first
leaves its Config in the cache folder, so the others only read the file and hash it. An entry counts only for
the same file, the same bytes and the same code that checks them (a digest of newsletter/config and
newsletter/model), so neither an edit nor an upgrade can be served a stale config.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import logging
import os
import pickle
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from newsletter.model.config import Config

log = logging.getLogger("newsletter.config")

_memory: dict[str, tuple[bytes, Config]] = {}  # resolved path: the digest of the content last found valid here, its config
_unwritten: dict[str, tuple[bytes, Config]] = {}  # the same, still to be written to disk
_writer: threading.Thread | None = None  # the thread writing them, while there are any
_pauses = 0  # builds under many_objects() at this moment
_guard = threading.Lock()
_changed = 0.0  # when a config was last remembered (monotonic)
_now = threading.Event()  # set by flush: write what is left without waiting for edits to settle
SETTLE = 1.0  # seconds without another edit before an entry is written: a burst of web edits is pickled once, not per edit
_POLL = 0.05  # how often the writer looks whether the process is exiting (then it writes at once)


def digest(data: bytes) -> bytes:
    """The fingerprint of a file's content that an entry is kept under."""
    return hashlib.sha256(data).digest()


def folder() -> Path | None:
    """$XDG_CACHE_HOME/newsletter, else ~/.cache/newsletter; None for a user without a home (then nothing is kept on disk)."""
    base = os.environ.get("XDG_CACHE_HOME")
    try:
        return Path(base or Path.home() / ".cache") / "newsletter"
    except RuntimeError:
        return None


@contextmanager
def many_objects() -> Iterator[None]:
    """The cyclic garbage collector paused while a config of 100,000 readers is built: it would scan the young
    objects again and again, though none of them is garbage yet (unpickling one takes a third of the time so)."""
    global _pauses
    with _guard:
        _pauses += 1
        if _pauses == 1:
            gc.disable()
    try:
        yield
    finally:
        with _guard:
            _pauses -= 1
            if _pauses == 0:
                gc.enable()


def recall(path: Path, fingerprint: bytes) -> Config | None:
    """The config validated from the content with this digest of this file, by this process or another; else None."""
    key = _key(path)
    with _guard:
        found = _memory.get(key)
    if found is not None and found[0] == fingerprint:
        return _as(found[1], path)
    entry = _entry(key)
    if entry is None:
        return None
    try:
        with entry.open("rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_uid != os.getuid() or st.st_mode & 0o022:  # only an entry no one else could have written is unpickled
                return None
            with many_objects():
                stored_for, config = pickle.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as exc:
        log.debug("config cache %s unreadable: %s", entry, exc)
        return None
    if stored_for != (fingerprint, _CODE, key) or not isinstance(config, Config):
        return None
    with _guard:
        _memory[key] = (fingerprint, config)
    return _as(config, path)


def remember(path: Path, fingerprint: bytes, config: Config) -> None:
    """Keep `config` as the one validated from the content with this digest: at once in this process, on disk by a
    thread of its own once edits have settled for SETTLE seconds (the process waits for it before exiting), so an
    edit neither waits for the write nor, in a burst of them, for the previous edit's."""
    global _writer, _changed
    key = _key(path)
    with _guard:
        _memory[key] = (fingerprint, config)
        _unwritten[key] = (fingerprint, config)
        _changed = time.monotonic()
        if _writer is None:
            _now.clear()
            _writer = threading.Thread(target=_write_all, name="newsletter-config-cache")
            _writer.start()


def flush() -> None:
    """Write every config remembered so far to disk (or find it unwritable) now, and wait until that is done."""
    with _guard:
        writer = _writer
    if writer is not None:
        _now.set()
        writer.join()


def _write_all() -> None:
    global _writer
    while True:
        with _guard:
            if not _unwritten:
                _writer = None
                return
            done = _now.is_set() or not threading.main_thread().is_alive()  # flushed, or the process is exiting
            wait = 0.0 if done else _changed + SETTLE - time.monotonic()
            entry = _unwritten.popitem() if wait <= 0 else None
        if entry is None:
            _now.wait(min(wait, _POLL))  # another edit meanwhile replaces the unwritten entry, and is written instead
            continue
        key, (fingerprint, config) = entry
        _write(key, fingerprint, config)


def _write(key: str, fingerprint: bytes, config: Config) -> None:
    """One entry written beside its final name and renamed over it; a folder that cannot be written is only logged."""
    entry = _entry(key)
    if entry is None:
        return
    try:
        entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=f".{entry.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(((fingerprint, _CODE, key), dataclasses.replace(config)), fh, protocol=pickle.HIGHEST_PROTOCOL)  # replace: without cached lookups
            os.replace(tmp, entry)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
        log.warning("the config cache %s could not be written: %s", entry, exc)


def _as(config: Config, path: Path) -> Config:
    """The config as read through this spelling of its path (another process may have named it otherwise)."""
    if config.path == path:
        return config
    warnings = tuple(dataclasses.replace(w, file=str(path)) for w in config.warnings)
    return dataclasses.replace(config, path=path, warnings=warnings)


def _key(path: Path) -> str:
    return str(path.resolve())


def _entry(key: str) -> Path | None:
    base = folder()
    return None if base is None else base / f"config-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}.pickle"


def _code() -> bytes:
    """A digest of the code that reads and checks the file and of the classes it builds."""
    h = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    for source in sorted([*(package / "config").glob("*.py"), *(package / "model").glob("*.py")]):
        h.update(source.name.encode("utf-8") + b"\0" + source.read_bytes())
    return h.digest()


_CODE = _code()
