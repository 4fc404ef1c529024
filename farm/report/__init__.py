"""Reports, rendered from a run's record (run.json and the files it names) and nothing else.

    write_all(run, run_dir)                      report.html, summary.txt, junit.xml, kcidb.json
    write_all(run, run_dir, history=path)        the same, after recording the run in the history DB;
                                                 the HTML and text reports then say what changed
                                                 since the job's previous run (new failures, fixed, flaky),
                                                 draw the job's recent runs as a strip and say where each
                                                 crash was first seen
    text.closing_lines(run, run_dir)             what `farm run` prints last: verdict, counts, time split, path
    reply.main(run_dir, out, report_url)         `farm reply`: the summary as an RFC 5322 reply to the series
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from ..results.run import Run


def write_all(run: Run, run_dir: Path, history: Path | None = None,
              on_history_error: Callable[[str], None] | None = None) -> list[Path]:
    """Write every report of a run (each atomically) and return their paths.

    history: the SQLite history database to record the run in and to compare with. When it cannot be
    used (damaged, unreadable) the reports are still written, without history; then on_history_error
    is called with the message, or, without one, the InputError is raised after writing."""
    from ..results.history import History
    from . import abtest, html, junit, kcidb, text
    from .common import quiet_gc

    run_dir = Path(run_dir)
    changes = None
    problem: InputError | None = None
    if history is not None:
        try:
            with History(Path(history)) as db:
                db.record(run)
                changes = db.changes(run)
        except InputError as e:
            problem = e
    with quiet_gc():
        comparisons = abtest.within_run(run)
        paths = [
            html.write(run, run_dir, comparisons, changes),
            text.write(run, run_dir, comparisons, changes),
            junit.write(run, run_dir),
            kcidb.write(run, run_dir),
        ]
    if problem is not None:
        if on_history_error is None:
            raise problem
        on_history_error(str(problem))
    return paths
