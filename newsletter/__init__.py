"""newsletter: research papers from feeds to a topic-aware daily email digest."""

__version__ = "0.1.0"
