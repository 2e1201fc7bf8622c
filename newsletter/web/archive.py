"""`newsletter archive`: the public pages and topic feeds written out as files, for a static host without the app."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from newsletter.environment import Env
from newsletter.errors import ArchiveError
from newsletter.mail.render import Renderer
from newsletter.model.config import Config
from newsletter.storage.store import Store
from newsletter.web.public import Links, PublicSite, segment

STATIC = Links(static=True)
_EXPORTED = re.compile(r"^topics/[^/]+(\.atom|/index\.html|/\d{4}-\d{2}-\d{2}/index\.html)$")  # what `_files` names under topics/


@dataclass(frozen=True)
class Archived:
    """What an export wrote."""

    folder: Path
    pages: int
    feeds: int
    removed: int  # files of an earlier export no longer written: days no longer listed, topics gone


def write_archive(env: Env, config: Config, folder: Path, base_url: str) -> Archived:
    """Write index.html, topics/<topic>/index.html (its latest day), topics/<topic>/<day>/index.html, topics/<topic>.atom
    and style.css under `folder`, every link relative, so the files work from any folder of any static host.

    Each file replaces its old copy atomically; then the files an earlier export wrote that this one did not (days no
    longer listed, topics gone) are removed, so the folder holds what `serve` would answer, and nothing links to a gone file."""
    if not config.settings.public_pages:
        raise ArchiveError(f"settings.public_pages is false in {config.path}: there are no public pages to write")
    if not re.match(r"^https?://[^\s<>\"']+$", base_url):
        raise ArchiveError(f"--base-url {base_url!r} is not an http(s) URL")
    _prepare(folder)
    site = PublicSite(Renderer(env.base_url, env.templates))
    written = {"style.css"}
    with Store(env.db, env.db_timeout) as store:
        for name, content in _files(site, store, config, base_url.rstrip("/"), f"{env.base_url}/"):
            _write(folder / name, content)
            written.add(name)
    _write(folder / "style.css", site.stylesheet().encode("utf-8"))
    removed = _remove_stale(folder, written)
    return Archived(folder, sum(n.endswith(".html") for n in written), sum(n.endswith(".atom") for n in written), removed)


def _remove_stale(folder: Path, written: set[str]) -> int:
    """Remove the files under topics/ named as an export names them that this export did not write, and the folders
    they leave empty; any other file there is someone else's and stays."""
    removed = 0
    topics = folder / "topics"
    for path in sorted(topics.rglob("*"), reverse=True) if topics.is_dir() else []:
        name = path.relative_to(folder).as_posix()
        if path.is_file() and name not in written and _EXPORTED.match(name):
            try:
                path.unlink()
            except OSError as exc:
                raise ArchiveError(f"cannot remove {path}: {exc.strerror}") from None
            removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return removed


def _files(site: PublicSite, store: Store, config: Config, base_url: str, subscribe_url: str) -> Iterator[tuple[str, bytes]]:
    yield "index.html", site.front(store, config, STATIC, subscribe_url=subscribe_url).encode("utf-8")
    for topic in config.topics.values():
        seg = segment(topic.name)
        latest = site.topic_page(store, config, topic, None, STATIC.at(2))
        assert latest is not None  # the latest day always has papers, or there is no day
        yield f"topics/{seg}/index.html", latest.encode("utf-8")
        for day in site.days(store, config, topic):
            page = site.topic_page(store, config, topic, day, STATIC.at(3))
            assert page is not None
            yield f"topics/{seg}/{day.isoformat()}/index.html", page.encode("utf-8")
        yield f"topics/{seg}.atom", site.feed(store, config, topic, STATIC, base_url)


def _prepare(folder: Path) -> None:
    """The folder exists (made if need be) and takes files, or one line saying why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ArchiveError(f"{folder} exists and is not a folder") from None
    except OSError as exc:
        raise ArchiveError(f"cannot create {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ArchiveError(f"cannot write in {folder}: permission denied")


def _write(path: Path, content: bytes) -> None:
    """Write through a temporary file and a rename, so a host serving the folder never sends half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".archive-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(content)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ArchiveError(f"cannot write {path}: {exc.strerror}") from None
