"""newsletter: research papers from arXiv, Hugging Face and any feed, sorted into topics by your keyword rules
and mailed as one daily digest per subscriber.

The CLI is a thin layer over this API: load a config (`newsletter.config.load`) and the deployment settings
(`newsletter.environment.load`), open a `Store`, then `fetch` and `send`.
"""

import importlib
from typing import TYPE_CHECKING

from newsletter.__about__ import __version__
from newsletter.errors import (
    ArchiveError,
    ConcurrentEdit,
    ConfigError,
    DeliveryError,
    EnvError,
    FetchError,
    InvalidInput,
    KeywordError,
    MailboxError,
    NewsletterError,
    Problem,
    RateLimited,
    RenderError,
    SchemaTooNew,
    SendInProgress,
    SourceError,
    StorageError,
)

# The rest of the API is imported when first used, so that a process needing one corner of the package (a
# sending process imports only newsletter.mail) does not load all of it.
_LAZY = {
    "Renderer": "newsletter.mail.render",
    "Config": "newsletter.model.config",
    "Settings": "newsletter.model.config",
    "Source": "newsletter.model.config",
    "Subscriber": "newsletter.model.config",
    "Digest": "newsletter.model.digest",
    "Entry": "newsletter.model.digest",
    "Section": "newsletter.model.digest",
    "Paper": "newsletter.model.paper",
    "Matcher": "newsletter.model.topics",
    "Topic": "newsletter.model.topics",
    "SendReport": "newsletter.pipeline",
    "fetch": "newsletter.pipeline",
    "send": "newsletter.pipeline",
    "Store": "newsletter.storage.store",
    "Env": "newsletter.environment",
}

if TYPE_CHECKING:
    from newsletter.environment import Env
    from newsletter.mail.render import Renderer
    from newsletter.model.config import Config, Settings, Source, Subscriber
    from newsletter.model.digest import Digest, Entry, Section
    from newsletter.model.paper import Paper
    from newsletter.model.topics import Matcher, Topic
    from newsletter.pipeline import SendReport, fetch, send
    from newsletter.storage.store import Store


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'newsletter' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "ArchiveError",
    "ConcurrentEdit",
    "Config",
    "ConfigError",
    "DeliveryError",
    "Digest",
    "Entry",
    "Env",
    "EnvError",
    "FetchError",
    "InvalidInput",
    "KeywordError",
    "MailboxError",
    "Matcher",
    "NewsletterError",
    "Paper",
    "Problem",
    "RateLimited",
    "RenderError",
    "Renderer",
    "SchemaTooNew",
    "Section",
    "SendInProgress",
    "SendReport",
    "Settings",
    "Source",
    "SourceError",
    "StorageError",
    "Store",
    "Subscriber",
    "Topic",
    "__version__",
    "fetch",
    "send",
]
