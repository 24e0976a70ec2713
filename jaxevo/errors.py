"""Errors that tell the user what to fix."""


class JaxevoError(Exception):
    """Base class for user-facing errors (bad config, missing file, unsupported model...)."""


class ConfigError(JaxevoError):
    """A configuration key or value is wrong."""


class WeightsError(JaxevoError):
    """A checkpoint cannot be read or does not match the model."""


class UnsupportedModelError(WeightsError):
    """The architecture or quantisation type is not supported."""
