"""The data layer's user-facing error (re-exported by `facealign.data.layouts`)."""


class DataError(ValueError):
    """A user-facing data problem (empty split, unknown layout, overlapping splits...)."""
