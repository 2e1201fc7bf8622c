"""Where templates are found (a user's folder first, then the bundled ones), and the one Jinja environment
every template is rendered in: the digest, the service's own mails and the web pages alike."""

from __future__ import annotations

from pathlib import Path

import jinja2

_PACKAGE = Path(__file__).resolve().parent.parent
# Installed, the templates are inside the package (the wheel puts them there); in a source checkout they
# are the repository's templates/ folder, beside the package.
BUNDLED = _PACKAGE / "templates" if (_PACKAGE / "templates").is_dir() else _PACKAGE.parent / "templates"


def environment(user_folder: Path | None = None) -> jinja2.Environment:
    """Templates from `user_folder` win by name over the bundled ones; every template but a .txt one is HTML and escaped."""
    folders = ([user_folder] if user_folder else []) + [BUNDLED]
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in folders]),
        autoescape=is_html,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def is_html(name: str | None) -> bool:
    """Every template but the .txt ones is HTML: escaped when rendered, and inlined."""
    return not (name or "").endswith(".txt")
