"""Static assets shipped with flask-notify-emergency (package marker)."""
