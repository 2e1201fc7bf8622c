"""The Follow / More like this / Fewer like this links of each paper card, and undoing what they did.

A card's links carry the reader's edition token (tokens.EDITION: the reader and the edition, sealed; a preview's, tokens.PREVIEW) and name the
paper, which must be one of that edition's: the pair is vouched for by the token without a token per card, which
would make every card of every mail different. Opening a link (GET) shows what each would do and changes nothing, as
mail scanners open every link; a form's button (POST, with CSRF) writes the rules to the reader's entry in
subscribers.yaml (SubscriberFile.rules). The preferences page lists the rules, each with a button that removes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from newsletter.config.edit import SubscriberFile
from newsletter.errors import ConcurrentEdit, ConfigError, StorageError
from newsletter.mail import tokens
from newsletter.model.config import Config, Subscriber, is_author_keyword
from newsletter.model.feedback import ACTIONS, Choices, Option, choices
from newsletter.model.paper import Paper
from newsletter.model.signup import Rules
from newsletter.storage.database import utcnow
from newsletter.storage.store import Store
from newsletter.web.editions import link_layout, open_link
from newsletter.web.pages import Pages

_HEADINGS = {
    "follow": ("Follow an author", "Their next papers reach you in a “Followed authors” section, whatever your topics."),
    "more": ("More like this", "Tick the terms to add as your own keywords, or a topic to join."),
    "fewer": ("Fewer like this", "Tick what to exclude: a paper with any of it stays out of your digest, whatever let it in."),
}


@dataclass(frozen=True)
class Card:
    """What a valid link opens: the reader as subscribers.yaml has them, and a paper of their edition."""

    config: Config
    subscriber: Subscriber
    paper: Paper


class Feedback:
    """The card links' pages and the preferences page's removals; they share the pages' CSRF and messages."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    async def form(self, request: Request) -> Response:
        """The three forms on one page: a card's Follow, More and Fewer links open it at theirs (#follow, #more, #fewer)."""
        return await run_in_threadpool(self._answer, request, None)

    async def act(self, request: Request) -> Response:
        form = await self.pages.form(request)
        if form is None:
            return self.pages.forbidden(request)
        return await run_in_threadpool(self._answer, request, form)

    def _answer(self, request: Request, form: FormData | None) -> Response:
        action = request.path_params.get("action", "")
        token, paper_id = request.path_params["token"], request.query_params.get("paper", "")
        if form is not None and action not in ACTIONS:
            return self.pages.not_found(request)
        card = self._card(request, token, paper_id)
        if isinstance(card, Response):
            return card
        offered = choices(card.config, card.subscriber, card.paper)
        if form is None:
            forms = [_form(a, offered, token, paper_id) for a in ACTIONS]
            return self.pages.page(request, "feedback.html", paper=card.paper, forms=forms, email=card.subscriber.email)
        add = _picked(action, offered, form)
        if add is None:
            return self.pages.message(request, "Nothing picked", "Tick at least one box, then press the button again. Nothing was changed.", 400)
        try:
            SubscriberFile(self.pages.config_path).rules(card.subscriber.email, add=add)
        except (ConfigError, ConcurrentEdit, TimeoutError) as exc:
            return self.pages.unavailable(request, exc)
        preferences = f"/preferences/{self.pages.link(tokens.PREFERENCES, card.subscriber.email)}#rules"
        return self.pages.message(request, "Done", _done(add, card.config), link=(preferences, "See or undo your rules"))

    def _card(self, request: Request, token: str, paper_id: str) -> Card | Response:
        """The reader and paper a link opens, or the page that says why it opens nothing."""
        try:
            config = SubscriberFile(self.pages.config_path).load()
            horizon = config.settings.horizon_days
            link = open_link(self.pages.secret, token, horizon)
            if link is None:
                return self.pages.invalid_link(request)
            email = link.email
            with Store(self.pages.env.db, self.pages.env.db_timeout) as store:
                subscriber = config.subscriber(email)
                if subscriber is None or store.has_left(email):
                    return self.pages.message(
                        request,
                        "You have left",
                        f"{email} is no longer subscribed, so this link changes nothing. You can subscribe again any time.",
                        410,
                        home=True,
                    )
                layout = link_layout(store, link)
                paper = store.paper(paper_id) if layout is not None and paper_id in layout.ids else None
        except (ConfigError, StorageError) as exc:
            return self.pages.unavailable(request, exc)
        if layout is None or paper is None:
            return self.pages.invalid_link(request)
        if layout.day + timedelta(days=horizon) < utcnow().astimezone(ZoneInfo(subscriber.timezone)).date():
            return self.pages.message(
                request,
                "This edition is past its horizon",
                f"Its papers are more than {horizon} days old, so its links no longer change your digest. The links in your latest digest do; "
                "your rules can be changed any time on your preferences page.",
                410,
            )
        return Card(config, subscriber, paper)

    # undo, from the preferences page

    async def remove(self, request: Request) -> Response:
        form = await self.pages.form(request)
        if form is None:
            return self.pages.forbidden(request)
        return await run_in_threadpool(self._remove, request, request.path_params["token"], form)

    def _remove(self, request: Request, token: str, form: FormData) -> Response:
        email = self.pages.reader(tokens.PREFERENCES, token)
        if email is None:
            return self.pages.invalid_link(request)
        kind, rule = str(form.get("kind", "")), str(form.get("rule", ""))
        if kind not in ("topics", "keywords", "exclude"):
            return self.pages.message(request, "Nothing to remove", "That rule is not one of yours. Nothing was changed.", 400)
        file = SubscriberFile(self.pages.config_path)
        try:
            subscriber = file.load().subscriber(email)
            if subscriber is None:
                return self.pages.message(request, "Not subscribed", f"{email} is not subscribed (any more).", 404, home=True)
            held = getattr(subscriber, kind)
            if rule not in held:
                return self.pages.message(request, "Already removed", "That rule is not among yours (any more). Nothing was changed.", 400)
            if kind != "exclude" and len(subscriber.topics) + len(subscriber.keywords) == 1:
                return self.pages.message(
                    request, "Your last rule", "Without it you would get no mail: add a topic or keyword first, or unsubscribe instead.", 400
                )
            file.rules(email, remove=Rules(**{kind: (rule,)}))
        except (ConfigError, ConcurrentEdit, TimeoutError) as exc:
            return self.pages.unavailable(request, exc)
        return RedirectResponse(f"/preferences/{token}?removed=1#rules", status_code=303)


def _form(action: str, offered: Choices, token: str, paper_id: str) -> dict[str, object]:
    """One form of the page: what it asks, its boxes by field, where it posts."""
    title, intro = _HEADINGS[action]
    boxes: list[tuple[str, Option]]
    if action == "follow":
        boxes = [("rule", o) for o in offered.authors]
    elif action == "fewer":
        boxes = [("rule", o) for o in offered.fewer]
    else:
        boxes = [("rule", o) for o in offered.more] + [("topic", o) for o in offered.topics]
    return {"action": action, "title": title, "intro": intro, "boxes": boxes, "url": f"/feedback/{token}/{action}?paper={quote(paper_id, safe='')}"}


def _picked(action: str, offered: Choices, form: FormData) -> Rules | None:
    """The offered rules the reader ticked (anything else posted is ignored); None when none."""
    ticked, topics = set(form.getlist("rule")), set(form.getlist("topic"))
    if action == "follow":
        rules = Rules(keywords=tuple(o.rule for o in offered.authors if o.rule in ticked))
    elif action == "fewer":
        rules = Rules(exclude=tuple(o.rule for o in offered.fewer if o.rule in ticked))
    else:
        rules = Rules(topics=tuple(o.rule for o in offered.topics if o.rule in topics), keywords=tuple(o.rule for o in offered.more if o.rule in ticked))
    return rules if rules.topics or rules.keywords or rules.exclude else None


def _done(rules: Rules, config: Config) -> str:
    """What the button did, in a sentence."""
    said = []
    authors = [k.partition(":")[2].strip('"') for k in rules.keywords if is_author_keyword(k)]
    words = [k for k in rules.keywords if not is_author_keyword(k)]
    if authors:
        said.append(f"You now follow {', '.join(authors)}")
    if words:
        said.append(f"Papers matching {', '.join(words)} now come in “Your keywords”")
    if rules.topics:
        said.append(f"You joined {', '.join(config.topics[name].title for name in rules.topics)}")
    if rules.exclude:
        said.append(f"Papers matching {', '.join(rules.exclude)} now stay out of your digest")
    return ". ".join(said) + ". You can undo this on your preferences page."
