"""Model specs (Keras layer names), the torch module they build, and the summary."""
