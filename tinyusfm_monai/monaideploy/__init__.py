"""A MONAI Deploy App SDK (4.x) application made of this project's steps: ultrasound instance selection, the
bundle predictor, DICOM SEG / SR writing (`app.py`); its MAP packaging files (`package.py`).

`steps.py` holds the work of each operator and imports no SDK, so it is tested in the project's environment; the
SDK (Holoscan) lives in its own venv (`make monaideploy-env`), where `app.py` runs.
"""
