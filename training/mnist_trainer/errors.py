"""Exit codes and the one exception that means "the user's input is wrong"."""
from __future__ import annotations

EXIT_OK = 0            # epochs finished, or the target accuracy / time budget was reached
EXIT_FAILURE = 1       # unexpected failure (a traceback is printed)
EXIT_BAD_INPUT = 2     # bad input: one line "error: ..." on stderr, no traceback
EXIT_PREEMPTED = 75    # SIGTERM/SIGINT: checkpoint saved, running again resumes (EX_TEMPFAIL)

EXIT_CODES_HELP = (
    "exit codes: 0 done (all epochs, or --target-accuracy / --max-minutes reached); "
    "2 bad input (one-line 'error: ...' on stderr); "
    "75 preempted (SIGTERM/SIGINT: checkpoint saved, run again to resume); "
    "1 unexpected failure"
)


class BadInput(Exception):
    """Something the user can fix: reported as one line, exit code 2."""
