"""Training commands (placeholder until issue 3 lands)."""
