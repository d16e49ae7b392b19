"""`python -m tinyusfm_monai.monailabel` prints the app folder to pass as `monailabel start_server --app`."""

from tinyusfm_monai.monailabel import APP_DIR

print(APP_DIR)
