"""Helpers shared by the tests and the benches: real servers on 127.0.0.1 and the headless browser.

- `support.httpserver`: LocalHTTPServer, a directory of files plus scripted replies (Reply, redirect).
- `support.smtpserver`: SMTPServer around an aiosmtpd Sink that records and can refuse; RefusingSMTPServer (421 at
  the greeting); free_port, greylisting.
- `support.browser`: Debian's /usr/bin/chromium driven by Playwright, and where screenshots go.

The test directory is on sys.path (pytest's rootdir conftest; the benches insert it), so import them as
`from support.httpserver import LocalHTTPServer`.
"""
