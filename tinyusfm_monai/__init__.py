"""TinyUSFM for the MONAI ecosystem: networks, task and distillation bundles, DICOM in / SEG and SR out.

Package map (lower layers never import higher ones): `utils` and `io` (atomic writes, format detection, DICOM
decoding, MONAI readers) → `networks` → `transforms`, `inferers`, `handlers` (MONAI components the configs name)
→ `data`, `evaluation` → `bundle` (config generator, the one predictor), `deploy` → `dicom`, `distillation`,
`monailabel`, `demo`, `cli`. See docs/architecture.md.
"""

__version__ = "0.2.0"
