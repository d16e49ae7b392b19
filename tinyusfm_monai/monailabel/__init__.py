"""A MONAI Label app serving the task bundles (see docs/monailabel.md).

This package is the `--app` folder for `monailabel start_server`. Its modules import monailabel, which lives
in a separate environment (tinyusfm_monai/monailabel/setup_env.sh); importing this package itself needs only
the standard library, so the project's own environment can still import `tinyusfm_monai.monailabel.lib.labels`.
"""

from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
