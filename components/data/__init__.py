"""Datasets: loaders into one normalized form, the synthetic generator, prepare."""
