"""Errors that mean an input is wrong, not the code: a missing or mismatched checkpoint, a missing or
unfinished dataset. The command line reports them in one line instead of a traceback."""


class InputError(Exception):
    pass


class CheckpointError(InputError):
    """A checkpoint folder that is missing, incomplete, or does not fit its config."""


class DatasetError(InputError):
    """A dataset folder that is missing, unfinished, or lacks the split asked for."""
