"""The README's first Quick start line: the bundled config and feeds mail real papers into the outbox."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter import config
from newsletter.scheduler import due_today

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_demo_writes_one_digest_per_sample_subscriber_grouped_by_their_topics(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "NEWSLETTER_"))}
    env |= {"NEWSLETTER_OUTBOX": str(tmp_path / "outbox"), "NEWSLETTER_DB": str(tmp_path / "state.db")}
    run = subprocess.run(
        [sys.executable, "-m", "newsletter", "--config", str(ROOT / "subscribers.yaml"), "send"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert f"Messages are in {tmp_path / 'outbox'}" in run.stdout

    sample = config.load(ROOT / "subscribers.yaml")
    files = sorted((tmp_path / "outbox").glob("*.eml"))
    due = [s for s in sample.subscribers if due_today(s, datetime.now(UTC), None)]
    assert len(due) >= 2, "Ada and Rosalind read daily, Grace on weekdays"
    assert len(files) == len(due), "one digest per subscriber due today"
    for path in files:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        subscriber = sample.subscriber(msg["To"].addresses[0].addr_spec)
        assert subscriber is not None
        text = msg.get_body(("plain",)).get_content()
        headings = [line.strip("= ").rsplit(" (", 1)[0] for line in text.splitlines() if line.startswith("== ")]
        allowed = [sample.topics[t].title for t in subscriber.topics] + (["Your keywords"] if subscriber.keywords else [])
        assert headings and set(headings) <= set(allowed), (subscriber.email, headings)
        assert headings == [t for t in allowed if t in headings], "sections follow the subscriber's topic order"

    viewer = next(line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines() if line.startswith('python3 -c "import email'))
    shown = subprocess.run(["bash", "-c", viewer], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("==> outbox/") == len(files), "the README's viewer prints every mail"
    assert "== " in shown.stdout and "Content-Transfer-Encoding" not in shown.stdout, "as text, not base64 or MIME"

    again = subprocess.run(
        [sys.executable, "-m", "newsletter", "--config", str(ROOT / "subscribers.yaml"), "send"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "nothing new for anyone" in again.stdout
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == len(files)
