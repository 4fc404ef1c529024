"""`farm reply RUN_DIR`: the run's summary as a reply to the series on its mailing list, ready to send.

One RFC 5322 message (a file): In-Reply-To and References name the series' cover letter, the subject is
"Re: " and the series' subject, the body is summary.txt (with the report's link when given), and Tested-by
is in it only when nothing failed. `git send-email`, `sendmail -t` and `mutt -H` take the file as it is.
The farm never sends anything itself.

Everything in the headers but the farm's own identity comes from the series' mbox (someone else's text):
a message-id or address that is not one (a newline, no @) is refused, naming the run.json field.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

from ..errors import InputError
from ..results.run import Run
from . import abtest, text
from .common import ascii_line

# Lines of at most 78 characters, LF line ends (a file for a mail program, not an SMTP session), and header
# values with non-ASCII text (an author's name) encoded as RFC 2047 words.
POLICY = email.policy.default.clone(max_line_length=78, linesep="\n")
_MSGID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
_URL = re.compile(r"https?://[\x21-\x7e]+")


def message_id(value: str, where: str = "run.json: series.message_id") -> str:
    """'<local@domain>' from the series' message-id, with or without its angle brackets."""
    v = value.strip()
    if not v.startswith("<"):
        v = f"<{v}>"
    if not _MSGID.fullmatch(v):
        raise InputError(f"{where}: not a message-id: {ascii_line(value)!r}")
    return v


def _addresses(values: list[str], where: str) -> list[str]:
    out = []
    for value in values:
        if "\n" in value or "\r" in value:
            raise InputError(f"{where}: an address with a line break in it: {ascii_line(value)!r}")
        for name, addr in email.utils.getaddresses([value]):
            if not addr or "@" not in addr:
                raise InputError(f"{where}: not an e-mail address: {ascii_line(value)!r}")
            formatted = email.utils.formataddr((name, addr))
            if all(email.utils.parseaddr(x)[1].lower() != addr.lower() for x in out):
                out.append(formatted)
    return out


def _subject(subject: str) -> str:
    one = " ".join(subject.split())  # a folded subject from the mbox becomes one line again
    return one if re.match(r"(?i)re:", one) else f"Re: {one}"


def identity(run: Run) -> str:
    """The farm's From: and Tested-by identity: the one summary.txt's Tested-by line names."""
    host = ascii_line(run.host.hostname or "localhost").replace(" ", "") or "localhost"
    return text.TESTED_BY.format(host=host)


def body(run: Run, report_url: str | None = None, changes=None) -> str:
    """summary.txt, with a line linking the full report after the verdict when there is one."""
    summary = text.render(run, abtest.within_run(run), changes)
    if not report_url:
        return summary
    lines = summary.splitlines()
    at = next((i + 1 for i, line in enumerate(lines) if line.startswith("Verdict:")), 1)
    while at < len(lines) and lines[at].startswith("  "):  # the verdict line's continuation
        at += 1
    link = [f"Full report: {report_url}"] if len(report_url) <= 59 else ["Full report:", f"  {report_url}"]
    return "\n".join([*lines[:at], *link, *lines[at:]]) + "\n"


def message(run: Run, report_url: str | None = None, sender: str | None = None, changes=None,
            date: str | None = None, msgid: str | None = None) -> EmailMessage:
    """The reply as an email.message.EmailMessage (bytes(...) or str(...) is the file)."""
    series = run.series
    if series is None:
        raise InputError(f"run {run.run_id}: this run has no series (it was not started with --series): "
                         "there is nothing to reply to")
    if not series.message_id:
        raise InputError(f"run {run.run_id}: run.json: series.message_id is empty: the series' cover letter "
                         "had no Message-ID, so a reply cannot be threaded")
    if report_url is not None and not _URL.fullmatch(report_url):
        raise InputError(f"--report-url: not an http(s) URL of printable ASCII: {ascii_line(report_url)!r}")
    in_reply_to = message_id(series.message_id)
    me = _addresses([sender or identity(run)], "--from")
    if len(me) != 1:
        raise InputError(f"--from: give one address: {ascii_line(sender or '')!r}")
    to = _addresses([series.author], "run.json: series.author") if series.author else []
    cc = [a for a in _addresses(series.cc, "run.json: series.cc")
          if email.utils.parseaddr(a)[1].lower() not in
          {email.utils.parseaddr(x)[1].lower() for x in [*to, *me]}]
    msg = EmailMessage(policy=POLICY)
    name, addr = email.utils.parseaddr(me[0])
    msg["From"] = Address(display_name=name, addr_spec=addr)
    if to:
        msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = _subject(series.subject or f"[PATCH v{series.version}]")
    msg["Date"] = date or email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = msgid or email.utils.make_msgid("farm." + re.sub(r"[^A-Za-z0-9.-]", "-", run.run_id),
                                                       domain=addr.split("@", 1)[1])
    msg["In-Reply-To"] = in_reply_to
    msg["References"] = in_reply_to
    content = body(run, report_url, changes)
    if sender:  # the identity given names the tester: the Tested-by line (present only when all passed) too
        content = content.replace(f"Tested-by: {identity(run)}", f"Tested-by: {me[0]}")
    msg.set_content(content, charset="us-ascii", cte="7bit")
    return msg


def write(run: Run, out: Path, report_url: str | None = None, sender: str | None = None, changes=None) -> Path:
    from .common import atomic_write

    return atomic_write(out, message(run, report_url, sender, changes).as_string(policy=POLICY))


def main(run_dir: Path, out: Path | None = None, report_url: str | None = None, sender: str | None = None) -> Path:
    """`farm reply`: read the run (and, read only, what the history DB beside it says about it), write the file."""
    from ..results import run as runfile
    from ..results.history import History

    record = runfile.load(run_dir)
    changes = None
    db = run_dir.resolve().parent / "history.sqlite"
    if db.is_file():  # recorded there by `farm run` / `farm report`: flaky results and new failures then show
        with History(db, create=False) as h:
            if any(r[0] == record.run_id for r in h.runs(record.job or record.job_file)):
                changes = h.changes(record)
    return write(record, out or run_dir / "reply.eml", report_url, sender, changes)
