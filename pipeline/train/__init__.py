"""Training the project's default models (not used at inference time)."""
