"""One exception root, so the CLI can turn every user mistake into one ``error:`` line."""

from __future__ import annotations


class SynthfaceError(Exception):
    """Root of every error a user can cause; the message says what is wrong and how to fix it."""


class ModelFileError(SynthfaceError):
    """A morphable-model file is missing, truncated, of an unknown format or has wrong keys."""


class ConfigError(SynthfaceError):
    """A sampling/render configuration value or key is invalid."""


class DeviceError(SynthfaceError):
    """A requested compute device (e.g. CUDA) is not available."""


class ShardError(SynthfaceError):
    """A shard or manifest is missing, corrupt, of another format, or cannot be written."""


class RenderError(SynthfaceError):
    """OpenGL/EGL is unavailable or a render failed."""


class CheckpointError(SynthfaceError):
    """A checkpoint is missing, truncated, foreign, malformed, cannot be written, or fits another model."""


class ReconstructError(SynthfaceError):
    """An input image cannot be read, holds no detectable face, or an output cannot be written."""
