"""Templates shipped with flask-notify-emergency (package marker)."""
