"""One error root: every exception class the package defines derives from NewsletterError, so a caller (and
the CLI, which turns each into one line) can catch them all without catching Python's own."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import newsletter
from newsletter.errors import NewsletterError


def test_every_exception_class_in_the_package_derives_from_newsletter_error() -> None:
    found = []
    for module in pkgutil.walk_packages(newsletter.__path__, "newsletter."):
        if module.name == "newsletter.__main__":  # importing it runs the command
            continue
        for _, cls in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == module.name:
                found.append(cls)
    assert len(found) >= 15, "the walk saw the package's exceptions"
    assert [c.__qualname__ for c in found if not issubclass(c, NewsletterError)] == []


def test_the_public_api_exports_the_root_and_every_public_error() -> None:
    import newsletter.errors as errors

    public = {name for name, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, BaseException) and not name.startswith("_")}
    assert public <= set(newsletter.__all__)
    assert newsletter.NewsletterError is NewsletterError
