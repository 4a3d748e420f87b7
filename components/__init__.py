"""capsynth components: the library behind the pipeline stages.

Plain modules: nothing here reads ``params.yaml``, parses argv or does I/O at
import. Ray and MLflow are only touched from their adapter modules.
"""
