"""Metrics: caption scores (pycocoevalcap), semantic scene accuracy, generative metrics."""
