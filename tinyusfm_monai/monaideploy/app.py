"""The MONAI Deploy application (App SDK 4.x, Holoscan operators): ultrasound selection -> bundle predictor ->
DICOM SEG / SR writer. Run locally with the SDK's conventions (inputs, outputs and the model from the command
line or the HOLOSCAN_* environment of a MAP):

    python -m tinyusfm_monai.monaideploy.app -i DICOM_FOLDER -o OUTPUT -m BUNDLE_FOLDER

`-m` is a task bundle (bundles/<task>, with models/model.pt). TINYUSFM_BACKEND picks the runtime (default auto),
TINYUSFM_FRAMES the frame policy (default all). A summary goes to OUTPUT/monai-deploy-report.json.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application, ConditionType, Fragment, Operator, OperatorSpec

from tinyusfm_monai.bundle.parser import DEFAULT_BACKEND
from tinyusfm_monai.bundle.predictor import load_predictor
from tinyusfm_monai.io.dicom import DicomInputError
from tinyusfm_monai.monaideploy.app_info import APP_NAME, APP_TITLE, APP_VERSION
from tinyusfm_monai.monaideploy.steps import predict_instance, select_ultrasound, write_results

log = logging.getLogger("tinyusfm_monai.monaideploy")


class UltrasoundSelectorOperator(Operator):
    """Emits the ultrasound instances of the input folder (one message: a list of paths)."""

    def __init__(self, fragment: Fragment, *args, input_folder: Path, **kwargs) -> None:
        self.input_folder = Path(input_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("instances")

    def compute(self, op_input, op_output, context) -> None:
        selection = select_ultrasound(self.input_folder)
        for path, reason in selection.skipped.items():
            log.info("not selected: %s (%s)", Path(path).name, reason)
        op_output.emit(selection.instances, "instances")


class BundlePredictorOperator(Operator):
    """Runs the bundle predictor on each instance; emits (path, image, results) or (path, None, reason)."""

    def __init__(self, fragment: Fragment, *args, bundle: Path, backend: str, frames: str, **kwargs) -> None:
        self.predictor = load_predictor(bundle, backend=backend)
        self.frames = frames
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("instances")
        spec.output("predictions")

    def compute(self, op_input, op_output, context) -> None:
        out = []
        for path in op_input.receive("instances"):
            try:
                image, results = predict_instance(self.predictor, path, self.frames)
                out.append((path, image, results))
            except DicomInputError as exc:
                out.append((path, None, f"skipped: {exc.reason}: {exc.detail}"))
        op_output.emit((self.predictor, out), "predictions")


class SegSrWriterOperator(Operator):
    """Writes DICOM SEG / SR per instance under the output folder, and the run's report."""

    def __init__(self, fragment: Fragment, *args, output_folder: Path, **kwargs) -> None:
        self.output_folder = Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("predictions").condition(ConditionType.MESSAGE_AVAILABLE)

    def compute(self, op_input, op_output, context) -> None:
        predictor, items = op_input.receive("predictions")
        report = {}
        for path, image, results in items:
            if image is None:
                report[Path(path).name] = results
                continue
            written = write_results(image, results, predictor, self.output_folder)
            report[Path(path).name] = "written: " + ", ".join(str(p.relative_to(self.output_folder)) for p in written)
        self.output_folder.mkdir(parents=True, exist_ok=True)
        (self.output_folder / "monai-deploy-report.json").write_text(json.dumps(report, indent=1, sort_keys=True))
        log.info("%d instance(s) written", sum(v.startswith("written") for v in report.values()))


class TinyUSFMUltrasoundApp(Application):
    """TinyUSFM ultrasound segmentation / classification: DICOM in, DICOM SEG / SR out."""

    name = APP_NAME
    description = APP_TITLE
    version = APP_VERSION

    def compose(self) -> None:
        context: AppContext = Application.init_app_context(self.argv)
        bundle = Path(context.model_path)
        selector = UltrasoundSelectorOperator(
            self, CountCondition(self, 1), input_folder=Path(context.input_path), name="us_selector"
        )
        predictor = BundlePredictorOperator(
            self,
            bundle=bundle,
            backend=os.environ.get("TINYUSFM_BACKEND", DEFAULT_BACKEND),
            frames=os.environ.get("TINYUSFM_FRAMES", "all"),
            name="bundle_predictor",
        )
        writer = SegSrWriterOperator(self, output_folder=Path(context.output_path), name="seg_sr_writer")
        self.add_flow(selector, predictor, {("instances", "instances")})
        self.add_flow(predictor, writer, {("predictions", "predictions")})


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    TinyUSFMUltrasoundApp().run()


if __name__ == "__main__":
    main()
