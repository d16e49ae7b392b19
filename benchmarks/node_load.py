"""DICOM node under load, and the peak memory of one instance of each hostile kind. One command, two tables:

1. Load (`tests/node_load_harness.py`): 1,000 distinct real ultrasound instances (+ 10 damaged) over 8
   concurrent dcmtk storescu associations, a queue small enough to fill (0xA700, resent), SIGKILL of the node
   at 40 % acknowledged and a restart, the destination down until everything is processed, then back; the
   memory-hostile set among the inputs (150 x 2000^2 JPEG cine, 20000^2 RLE, 13000^2 JPEG, a JPEG lying about
   its size). Checked and printed: acknowledged = processed + failed-with-reason, each result delivered
   exactly once, peak RSS of the node process (VmHWM) against the 1.5 GB bound, and the timings.
2. Peak RSS of one process running `process_file` on a single input of each kind (fresh process each, median
   of `--repeats`), with the deterministic stand-in predictor and with a real bundle (busi_segmentation,
   224 px, a randomly initialised model.pt: memory does not depend on the weight values).

    python benchmarks/node_load.py              # full size, ~20 min on 2 cores
    python benchmarks/node_load.py --quick      # 200 instances, 30-frame cine, ~5 min

Timings on a shared machine are noisy; the counts and the memory figures are not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from dicom_fixtures import (  # noqa: E402
    make_huge_cine,
    make_huge_jpeg,
    make_huge_rle,
    make_limit_frame,
    make_lying_jpeg,
    us_file,
)
from node_load_harness import run_load  # noqa: E402

ONE_INPUT = textwrap.dedent(
    """
    import json, sys, warnings
    sys.path.insert(0, {tests!r})
    warnings.simplefilter("ignore")
    from dicom_fixtures import ThresholdSegmenter
    from tinyusfm_monai.dicom.process import process_file
    from tinyusfm_monai.utils import peak_rss_mib
    from tinyusfm_monai.io.dicom import DicomInputError
    bundle = {bundle!r}
    if bundle:
        from tinyusfm_monai.bundle.predictor import load_predictor
        predictor = load_predictor(bundle, device="cpu")
    else:
        predictor = ThresholdSegmenter("busi_segmentation")
    base = peak_rss_mib()
    try:
        result = process_file(predictor, {path!r}, {out!r}, "all")
        outcome = f"processed ({{len(result.frame_numbers)}} frame(s))"
    except DicomInputError as exc:
        outcome = f"refused: {{exc.reason}}"
    print(json.dumps({{"outcome": outcome, "base_mb": base,
                      "peak_mb": peak_rss_mib()}}))
    """
)


def random_bundle(workdir: Path) -> Path:
    """busi_segmentation with a randomly initialised model.pt (right shapes; memory does not depend on values)."""
    import torch
    from monai.bundle import ConfigParser

    bundle = workdir / "busi_segmentation"
    shutil.copytree(REPO / "bundles" / "busi_segmentation", bundle)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    (bundle / "models").mkdir(exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    return bundle


def one_input_rss(path: Path, out: Path, bundle: str, repeats: int) -> tuple[str, float, float]:
    runs = []
    for _ in range(repeats):
        code = ONE_INPUT.format(tests=str(REPO / "tests"), bundle=bundle, path=str(path), out=str(out))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return (
        runs[0]["outcome"],
        statistics.median(r["base_mb"] for r in runs),
        statistics.median(r["peak_mb"] for r in runs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 instances, 30-frame cine")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1, help="runs per single-input RSS figure (median)")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-single", action="store_true")
    args = parser.parse_args()
    n = args.n or (200 if args.quick else 1000)
    frames = 30 if args.quick else 150
    work = Path(tempfile.mkdtemp(prefix="tinyusfm-node-load-"))
    try:
        if not args.skip_load:
            figures = run_load(work / "load", n=n, damaged=10, queue_size=4, cine_frames=frames)
            print("## Node under load\n")
            print("| figure | value |\n|---|---|")
            rows = [
                ("instances sent (distinct) + damaged", f"{figures['instances']} + {figures['damaged']}"),
                (
                    "hostile inputs",
                    f"cine {frames} x 2000^2 JPEG, 3840 x 2160 colour JPEG, 20000^2 RLE, 13000^2 JPEG, lying JPEG",
                ),
                ("concurrent associations (dcmtk storescu)", figures["associations"]),
                ("send rounds (resends of refused / unanswered)", figures["send_rounds"]),
                ("responses other than Success (resent)", json.dumps(figures["refused_responses"])),
                ("20000^2 RLE / 13000^2 JPEG", " / ".join(figures["hostile_refusals"].values())),
                ("acknowledged when SIGKILLed", figures["acknowledged_at_kill"]),
                ("acknowledged (distinct instances)", figures["acknowledged"]),
                ("processed", figures["processed"]),
                ("failed with a reason", f"{figures['failed']} {json.dumps(figures['failed_reasons'])}"),
                (
                    "acknowledged - processed - failed",
                    figures["acknowledged"] - figures["processed"] - figures["failed"],
                ),
                ("results waiting when the destination came back", figures["outbox_when_destination_came_back"]),
                (
                    "results delivered / delivered twice",
                    f"{figures['delivered_objects']} / {figures['duplicate_deliveries']}",
                ),
                ("peak RSS of the node (bound)", f"{figures['peak_rss_mb']:.0f} MB ({figures['rss_bound_mb']:.0f} MB)"),
                ("sending (all rounds)", f"{figures['send_s']:.0f} s"),
                ("first send to spool drained", f"{figures['send_to_processed_s']:.0f} s"),
                ("outbox delivery after the destination came back", f"{figures['delivery_s']:.0f} s"),
            ]
            for name, value in rows:
                print(f"| {name} | {value} |")
            print()
        if not args.skip_single:
            inputs = work / "inputs"
            cases = [
                ("real US, 640 x 480 J2K", us_file("US1_J2KI.dcm")),
                (f"JPEG cine {frames} x 2000^2", make_huge_cine(inputs / "cine.dcm", frames=frames)),
                ("colour JPEG 3840 x 2160 (the frame limit)", make_limit_frame(inputs / "limit.dcm")),
                ("RLE 20000^2 (6 MB)", make_huge_rle(inputs / "rle.dcm")),
                ("JPEG 13000^2 (1 kB)", make_huge_jpeg(inputs / "jpeg.dcm")),
                ("JPEG header 512^2, codestream 13000^2", make_lying_jpeg(inputs / "lying.dcm")),
            ]
            bundle = str(random_bundle(work))
            print(f"## Peak RSS of one process per input (median of {args.repeats})\n")
            print("| input | file | outcome | stand-in: after imports / peak | real bundle: after load / peak |")
            print("|---|---|---|---|---|")
            for name, path in cases:
                size = Path(path).stat().st_size
                outcome, base, peak = one_input_rss(path, work / "out", "", args.repeats)
                _, bbase, bpeak = one_input_rss(path, work / "out", bundle, args.repeats)
                print(
                    f"| {name} | {size / 2**20:.2f} MB | {outcome} | {base:.0f} / {peak:.0f} MB | {bbase:.0f} / {bpeak:.0f} MB |"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
