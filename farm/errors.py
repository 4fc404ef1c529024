"""Error classes; each maps to one exit code of `farm`."""


class FarmError(Exception):
    exit_code = 3


class InputError(FarmError):
    """Bad input from the user or a data file: exit 2, one line naming file, field or value."""

    exit_code = 2


class InfraError(FarmError):
    """The farm could not do its job (QEMU missing, boot never reached, disk full): exit 3."""

    exit_code = 3


class SeriesError(FarmError):
    """The series under test does not apply to any kernel of the job: a finding about the series, exit 1."""

    exit_code = 1
