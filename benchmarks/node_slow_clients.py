"""How long a legitimate peer waits for the DICOM node while hostile clients hold connections open.

What a hospital security review asks: with 11 silent TCP connections and 11 connections that send one byte
every 0.5 s (a TLS ClientHello, or an A-ASSOCIATE-RQ header, that never completes) open on the node, how long
until a legitimate modality (127.0.0.1) completes a C-ECHO, and how long does the node let each hostile
connection live? Scenarios, plain and TLS, with the node's defaults (handshake deadline 10 s, 4 connections per
address, 10 associations):

- `idle`: nobody else connected (the reference);
- `22 addresses`: the 22 hostile connections, each from its own loopback address (127.0.0.10-31), so the
  per-address cap does not apply: the deadline and the cap on unfinished connections must;
- `1 address`: the 22 hostile connections from one address (127.0.0.50): the per-address cap.

The peer retries a refused association every 0.2 s, as a modality would. Printed: median and worst time to be
served over `--repeats` runs, the median and worst lifetime of a hostile connection, and the rejections counted
in the node's status.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/node_slow_clients.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from dicom_fixtures import ThresholdSegmenter, free_port  # noqa: E402
from hostile_clients import PLAIN_DRIBBLE, TLS_DRIBBLE, Attacker, echo_seconds, open_attackers  # noqa: E402

from tinyusfm_monai.dicom.node import serve  # noqa: E402


def _certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


def run_once(work: Path, tls: bool, scenario: str) -> dict:
    cert, key = _certificate(work) if tls else (None, None)
    options = {"tls_cert": str(cert), "tls_key": str(key)} if tls else {}
    node = serve(
        "stand-in",
        port=free_port(),
        spool=str(work / "spool"),
        output=str(work / "out"),
        predictor=ThresholdSegmenter("busi_segmentation"),
        allow="MODALITY",
        block=False,
        **options,
    )
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert)) if tls else None
    attackers: list[Attacker] = []
    try:
        if scenario == "22 addresses":
            attackers = open_attackers(node.port, silent=11, dribbling=11, tls=tls)
        elif scenario == "1 address":
            attackers = [Attacker(node.port, "127.0.0.50") for _ in range(11)]
            dribble = TLS_DRIBBLE if tls else PLAIN_DRIBBLE
            attackers += [Attacker(node.port, "127.0.0.50", dribble) for _ in range(11)]
        time.sleep(0.5)
        served = echo_seconds(node.port, client, attempts_for=60)
        deadline = time.monotonic() + 20
        while attackers and time.monotonic() < deadline and any(a.closed_after is None for a in attackers):
            time.sleep(0.1)
        lives = [a.closed_after if a.closed_after is not None else float("inf") for a in attackers]
        rejected = Counter(node.status()["counts"]["rejected_associations"])
    finally:
        for a in attackers:
            a.close()
        node.stop()
    return {"served": served, "lives": lives, "rejected": rejected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows = []
    for tls in (False, True):
        for scenario in ("idle", "22 addresses", "1 address"):
            runs = []
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    runs.append(run_once(Path(tmp), tls, scenario))
            served = [r["served"] for r in runs]
            lives = [v for r in runs for v in r["lives"]]
            rejected = sum((r["rejected"] for r in runs), Counter())
            rows.append(
                (
                    "TLS" if tls else "plain",
                    scenario,
                    f"{statistics.median(served):.2f}",
                    f"{max(served):.2f}",
                    f"{statistics.median(lives):.1f}" if lives else "-",
                    f"{max(lives):.1f}" if lives else "-",
                    ", ".join(f"{k} {v / args.repeats:g}" for k, v in sorted(rejected.items())) or "-",
                )
            )
            print(rows[-1], flush=True)
    head = ("listener", "hostile clients", "served, median s", "served, worst s", "hostile life, median s",
            "worst s", "rejections per run (status)")  # fmt: skip
    print(f"\n{args.repeats} runs each; 22 hostile = 11 silent + 11 sending one byte every 0.5 s\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
