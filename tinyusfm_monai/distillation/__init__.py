"""TinyUSFM distillation: pool manifests, feature-gradient coreset selection, and domain-separated masked
distillation from a frozen USFM teacher into a TinyUSFM student (bundle `tinyusfm_distillation`).

Submodules are imported lazily by the bundle configs (full dotted `_target_` paths), so importing this package
stays cheap.
"""
