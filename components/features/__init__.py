"""Image features for the captioners: CNN backbones, their weights, the Ray Data
extraction pipeline and the Parquet feature store.

``backbones``  registry name → :class:`~components.features.backbones.Backbone`
``weights``    resolve ``random`` / ``imagenet`` / a local file; the weights hash
``extract``    the Ray Data pipeline (decode tasks → model actors → shards)
``store``      the shard schema, the writer and :func:`~components.features.store.load_features`
"""
