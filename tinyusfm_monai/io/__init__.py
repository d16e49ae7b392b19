"""Reading inputs: which format a file is (`formats`), ultrasound DICOM decoding (`dicom`), MONAI image readers
(`readers`). Nothing above this package decides formats or decodes DICOM pixels itself.

Submodules are imported on use so that `tinyusfm_monai.io.formats` stays free of pydicom and MONAI.
"""
