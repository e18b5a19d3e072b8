"""synthface: synthetic face data for single-image 3D face reconstruction, and its trainer.

Public API (the CLI is a thin layer over it)::

    import synthface
    model = synthface.load_model()                      # bundled CC0 MakeHuman face model
    params = synthface.sample_params(model, seed=0, indices=range(8))
    verts = synthface.camera_vertices(model, params)    # (8, V, 3) camera-space mm, OpenCV axes
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .config import SamplingConfig, load_config
from .errors import ConfigError, DeviceError, ModelFileError, SynthfaceError
from .geometry import camera_vertices, project, vertex_normals
from .loaders import FORMATS, load_model
from .model import MorphableModel
from .params import POSE_FIELDS, param_layout
from .sampling import ParameterSampler, sample_params

try:
    __version__ = version("synthface")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "FORMATS", "POSE_FIELDS", "ConfigError", "DeviceError", "ModelFileError", "MorphableModel",
    "ParameterSampler", "SamplingConfig", "SynthfaceError", "__version__", "camera_vertices",
    "load_config", "load_model", "param_layout", "project", "sample_params", "vertex_normals",
]
