"""Drop-in layers (placeholder: filled in by the nn work)."""
