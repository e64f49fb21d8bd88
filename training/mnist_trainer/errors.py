"""Exit codes, and the one exception that means "the user's input is wrong"."""
EXIT_OK = 0            # all epochs trained (also: a finished run started again)
EXIT_FAILURE = 1       # unexpected failure (a traceback is printed)
EXIT_BAD_INPUT = 2     # bad input: one line "error: ..." on stderr, no traceback
EXIT_DIVERGED = 3      # the loss became NaN or infinite: nothing saved from that epoch on
EXIT_PREEMPTED = 75    # SIGTERM/SIGINT: checkpoint saved, running again resumes (EX_TEMPFAIL)


class BadInput(Exception):
    """Something the user can fix: reported as one line, exit code 2."""
