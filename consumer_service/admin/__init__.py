"""`pipeline-admin`: operator commands over the dead-letter topic (list, show, replay)."""
