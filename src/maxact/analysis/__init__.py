"""Pure functions over atlas arrays (numpy only)."""
