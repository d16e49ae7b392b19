"""Names and versions of the MONAI Deploy app (one place: the app, its app.yaml and the docs use them)."""

APP_NAME = "tinyusfm-ultrasound"
APP_TITLE = "TinyUSFM ultrasound (DICOM SEG / SR)"
APP_VERSION = "0.1.0"
#: the MONAI Deploy App SDK the app is written and tested against (setup_env.sh installs it)
SDK_VERSION = "4.0.0"
