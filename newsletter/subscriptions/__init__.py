"""Self-service sign-up: form checks, the service's own mails, and double opt-in."""

from newsletter.subscriptions.by_mail import imap_settings, inbound_handler
from newsletter.subscriptions.forms import check_choice, normalise_email
from newsletter.subscriptions.service import Limits, Service

__all__ = ["Limits", "Service", "check_choice", "imap_settings", "inbound_handler", "normalise_email"]
