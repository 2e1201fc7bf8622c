"""What the shells call: one fetch, one send through the ledger, the rule trial, and pruning."""

from newsletter.pipeline.fetching import SourceResult, fetch, fetch_policy
from newsletter.pipeline.planning import Planner, reader_for, secret_key
from newsletter.pipeline.pruning import prune
from newsletter.pipeline.report import Outcome, SendReport, fetch_exit_code
from newsletter.pipeline.send import send

__all__ = ["Outcome", "Planner", "SendReport", "SourceResult", "fetch", "fetch_exit_code", "fetch_policy", "prune", "reader_for", "secret_key", "send"]
