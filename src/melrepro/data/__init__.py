"""Raw archives to manifests: official file layouts, download and verification, the synthetic twin,
ingest into typed manifests, the image cache and the splits.

May use: the standard library and third-party packages only (never ``methods``, ``papers`` or
``report``).
"""
