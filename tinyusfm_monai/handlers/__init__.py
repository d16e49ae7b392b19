"""Ignite handlers the bundle configs attach: training state and resume, trained-weight loading, student export,
progress. Named by full dotted path in the configs (`tinyusfm_monai.handlers.<module>.<Class>`)."""
