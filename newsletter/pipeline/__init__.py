"""What the shells call: one fetch, one send through the ledger, and the rule trial."""

from newsletter.pipeline.fetching import SourceResult, fetch, fetch_policy
from newsletter.pipeline.planning import Planner, reader_for, secret_key
from newsletter.pipeline.report import Outcome, SendReport, fetch_exit_code
from newsletter.pipeline.send import send

__all__ = ["Outcome", "Planner", "SendReport", "SourceResult", "fetch", "fetch_exit_code", "fetch_policy", "reader_for", "secret_key", "send"]
