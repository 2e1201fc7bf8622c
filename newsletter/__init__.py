"""newsletter: research papers from arXiv, Hugging Face and any feed, sorted into topics by your keyword rules
and mailed as one daily digest per subscriber.

The CLI is a thin layer over this API: load a config (`newsletter.config.load`) and the deployment settings
(`newsletter.environment.load`), open a `Store`, then `fetch` and `send`.
"""

from newsletter.__about__ import __version__
from newsletter.environment import Env
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
from newsletter.mail.render import Renderer
from newsletter.model.config import Config, Settings, Source, Subscriber
from newsletter.model.digest import Digest, Entry, Section
from newsletter.model.paper import Paper
from newsletter.model.topics import Matcher, Topic
from newsletter.pipeline import SendReport, fetch, send
from newsletter.storage.store import Store

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
