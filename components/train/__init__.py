"""Training infrastructure shared by every model family (Ray Train adapter, sessions)."""
