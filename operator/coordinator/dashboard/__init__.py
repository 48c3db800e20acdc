"""The web dashboard (``coordinator dashboard``): live runs, a run's timeline, trends, and actions taken with the
user's own rights. See docs/dashboard.md."""
