"""Ultrasound DICOM in, DICOM SEG / TID 1500 SR (and optional Secondary Capture) out.

Modules: read (decode, colour handling, tissue crop, frame policy), reader (MONAI ImageReader for bundles),
predictor (the model contract), write (SEG/SR/SC), process (one instance), batch (`dicom infer`),
node (`dicom serve`), dicomweb (STOW-RS destination, `dicom pull`), concepts (coded concepts per label),
contours (cine SR geometry), privacy (log hygiene).
Nothing is imported here, so `import tinyusfm_monai.dicom.write` does not pull in pynetdicom.
See docs/hospital_it.md.
"""
