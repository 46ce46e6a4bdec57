"""seglab's own error type: every error a user can cause is raised as a SeglabError."""


class SeglabError(Exception):
    """An error caused by input or options: its message names the file or option and what to do."""
