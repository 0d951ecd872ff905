"""trl-grrm."""
