"""capsynth pipeline stages: one thin module per DVC stage, plus the CLI.

Each stage: load its typed config from ``params.yaml`` → call components →
write its declared outputs atomically.
"""
