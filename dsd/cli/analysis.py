"""Analysis commands (placeholder until issue 4 lands)."""
