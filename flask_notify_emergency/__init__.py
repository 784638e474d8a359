"""flask-notify-emergency: keeps a Flask app's notifications flowing when its real-time
layer breaks."""

from __future__ import annotations

from . import signals
from .config import ConfigError
from .extension import NotifyEmergency, NotifyEmergencyState

__version__ = "0.1.0"

__all__ = ["ConfigError", "NotifyEmergency", "NotifyEmergencyState", "__version__", "signals"]
