"""A real MONAI Label 0.8.5 server with our app: upload, infer, train, infer again, stop.

Starts `monailabel start_server` from the separate venv (tinyusfm_monai/monailabel/setup_env.sh) on 127.0.0.1
with a classification and a segmentation bundle (tmp copies at image size 64 with seeded initial weights), and
checks every answer against the bundle's own pipeline run here with the same weights, before and after a
one-epoch `POST /train/<bundle>`. The server runs with tinyusfm_monai/monailabel/compat on PYTHONPATH (see its
docstring).
Without the venv: fails under CI=true, skips otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from monailabel_harness import SETUP_SCRIPT, Server, http, monailabel_venv, reference_prediction, tiny_bundle_copy
from PIL import Image

CLS, SEG = "busi_classification", "busi_segmentation"
UNTRAINED = "tn3k_segmentation"  # served without models/model.pt: trainer only until /train writes the weights
CLASS_NAMES = ["normal", "benign", "malignant"]
TRAIN_REQUEST = {"max_epochs": 1, "batch_size": 2, "num_workers": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def venv() -> Path:
    venv = monailabel_venv()
    if not (venv / "bin" / "monailabel").is_file():
        message = f"MONAI Label venv missing at {venv}: run `bash {SETUP_SCRIPT}` (or set MONAILABEL_VENV)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return venv


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _make_images(root: Path) -> dict[str, tuple[Path, Path]]:
    """Two phantom BUSI images cropped to 96 wide x 80 high (non-square, so a transposed label would show)."""
    from tinyusfm_monai.data.phantom import generate_task

    generate_task(SEG, root / "phantom", n_train=2, n_val=0, n_test=0, image_size=96, seed=0)
    out = {}
    for i in range(2):
        image = np.asarray(Image.open(root / "phantom" / "images" / f"train_{i:05d}.png"))[:80]
        mask = np.asarray(Image.open(root / "phantom" / "masks" / f"train_{i:05d}.png"))[:80]
        assert mask.max() == 1, "phantom mask should contain the lesion"
        Image.fromarray(image).save(root / f"img{i}.png")
        Image.fromarray(mask).save(root / f"mask{i}.png")
        out[f"img{i}"] = (root / f"img{i}.png", root / f"mask{i}.png")
    return out


def _make_pool(studies: Path, images: dict[str, tuple[Path, Path]]) -> dict[str, list[str]]:
    """Unlabelled images for the active-learning strategies, written before the server starts: 10 distinct phantom
    scenes, a cine burst of img0 (which gets labelled: none of its frames may ever be proposed) and a burst of a new
    scene (at most one of its frames may be proposed, ever)."""
    from tinyusfm_monai.data import phantom_junk
    from tinyusfm_monai.data.phantom import render_sample

    rng = np.random.default_rng(23)
    names: dict[str, list[str]] = {"distinct": [], "burst_labelled": [], "burst_new": []}
    for i in range(11):
        image = render_sample(SEG, "training", 100 + i, 96, seed=0)[0][:80]
        if i == 10:
            frames = phantom_junk.make_burst(rng, image, 4)
            kind = "burst_new"
        else:
            frames = [image]
            kind = "distinct"
        for k, frame in enumerate(frames):
            name = f"al{i:02d}_{k}" if kind != "distinct" else f"al{i:02d}"
            Image.fromarray(frame).save(studies / f"{name}.png")
            names[kind].append(name)
    source = np.asarray(Image.open(images["img0"][0]))
    for k, frame in enumerate(phantom_junk.make_burst(rng, source, 4)):
        Image.fromarray(frame).save(studies / f"img0_cine{k}.png")
        names["burst_labelled"].append(f"img0_cine{k}")
    return names


def _scoring(server: Server) -> dict:
    """POST /scoring/tinyusfm_features synchronously (retried while MONAI Label's background pass is running)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        url = f"{server.url}/scoring/tinyusfm_features?run_sync=true"
        status, body = http(url, "POST", json_body={}, timeout=300)
        if status != 429:
            assert status == 200, f"{body[:2000]!r}\n{server.log_tail()}"
            return json.loads(body)
        time.sleep(1.0)
    raise TimeoutError(f"scoring still busy after 300 s:\n{server.log_tail()}")


def _propose(server: Server, strategy: str, model: str) -> dict:
    status, body = http(f"{server.url}/activelearning/{strategy}", "POST", json_body={"model": model})
    assert status == 200, f"{strategy}: {body[:2000]!r}\n{server.log_tail()}"
    answer = json.loads(body)
    assert answer.get("id"), f"{strategy}: no proposal: {answer}"
    return answer


def _active_learning_round(server: Server, pool: dict[str, list[str]], calls: int, proposed: list[str]) -> dict:
    """Score, then `calls` proposals per strategy (classification and segmentation bundles); the REST answers
    never name a labelled image, a frame of the labelled image's burst, an image proposed before, or a second
    frame of the new burst. Returns the scoring result."""
    scored = _scoring(server)
    for model in (CLS, SEG):
        assert scored[model]["images"] == 2 + sum(len(v) for v in pool.values()), scored[model]
        assert scored[model]["groups_larger_than_one"] >= 2, f"{model}: the bursts were not grouped: {scored[model]}"
    for strategy in ("diversity", "uncertainty", "hybrid"):
        for k in range(calls):
            model = CLS if k % 2 == 0 else SEG
            answer = _propose(server, strategy, model)
            assert answer["al_weights"] == scored[model]["weights"] and not answer["al_stale"], answer
            proposed.append(answer["id"])
    assert not {"img0", "img1"} & set(proposed), f"a labelled image was proposed: {proposed}"
    assert not set(pool["burst_labelled"]) & set(proposed), f"a frame of a labelled image's burst: {proposed}"
    assert len(set(pool["burst_new"]) & set(proposed)) <= 1, f"two frames of one burst: {proposed}"
    assert len(set(proposed)) == len(proposed), f"an image was proposed twice: {proposed}"
    return scored


def _infer_cls(server: Server, image_id: str) -> np.ndarray:
    status, body = http(f"{server.url}/infer/{CLS}?image={image_id}&output=json", "POST", fields={"params": "{}"})
    assert status == 200, body[:2000]
    prediction = json.loads(body)["prediction"]
    assert [p["label"] for p in prediction] == CLASS_NAMES
    assert [p["idx"] for p in prediction] == [0, 1, 2]
    scores = np.array([p["score"] for p in prediction])
    assert abs(scores.sum() - 1.0) < 1e-4
    return scores


def _infer_seg(server: Server, image_id: str, out: Path) -> np.ndarray:
    status, body = http(f"{server.url}/infer/{SEG}?image={image_id}&output=image", "POST", fields={"params": "{}"})
    assert status == 200, body[:2000]
    out.write_bytes(body)
    with Image.open(out) as im:
        assert im.mode in ("L", "P", "I;16"), im.mode
        return np.asarray(im)


def _train(server: Server, model: str) -> None:
    status, body = http(f"{server.url}/train/{model}?run_sync=true", "POST", json_body=TRAIN_REQUEST, timeout=420)
    assert status == 200, f"{body[:2000]!r}\n{server.log_tail()}"


def _check_predictions(server: Server, bundles: Path, images: dict, tmp: Path, tag: str) -> tuple:
    cls_scores = _infer_cls(server, "img0")
    expected = reference_prediction(bundles / CLS, images["img0"][0])
    np.testing.assert_allclose(cls_scores, expected, atol=1e-4, err_msg=f"{tag}: server != bundle pipeline")

    seg = _infer_seg(server, "img0", tmp / f"seg_{tag}.png")
    source = np.asarray(Image.open(images["img0"][0]))
    assert seg.shape == source.shape[:2], f"{tag}: label {seg.shape} for an image of {source.shape[:2]}"
    assert set(np.unique(seg).tolist()) <= {0, 1}, f"{tag}: values outside the registry's {{0, 1}}"
    expected_seg = reference_prediction(bundles / SEG, images["img0"][0]).squeeze(0)
    agreement = float((expected_seg == seg).mean())
    assert agreement >= 0.999, f"{tag}: only {agreement:.4f} of pixels agree with the bundle pipeline"
    return cls_scores, seg


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_monailabel_server_infer_and_train(venv: Path, tmp_path: Path) -> None:
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    for name in (CLS, SEG, UNTRAINED):
        tiny_bundle_copy(name, bundles, image_size=64)
    (bundles / UNTRAINED / "models" / "model.pt").unlink()
    images = _make_images(tmp_path)
    studies = tmp_path / "studies"
    studies.mkdir()
    pool = _make_pool(studies, images)
    Image.fromarray(np.pad(np.full((8, 8), 3, np.uint8), ((10, 62), (20, 68)))).save(tmp_path / "class1.png")
    (tmp_path / "class0.json").write_text(json.dumps({"label": "Benign"}))

    server = Server(studies, bundles, [CLS, SEG, UNTRAINED], tmp_path / "server.log")
    try:
        info = server.wait_ready(timeout=240)
        assert info["models"][CLS]["type"] == "classification"
        assert info["models"][SEG]["type"] == "segmentation"
        assert info["models"][SEG]["labels"] == {"lesion": 1}
        assert set(info["trainers"]) == {CLS, SEG, UNTRAINED}
        assert UNTRAINED not in info["models"]
        assert {"random", "first", "diversity", "uncertainty", "hybrid"} <= set(info["strategies"])
        assert "tinyusfm_features" in info["scoring"]

        for image_id, (image, mask) in images.items():
            status, body = http(f"{server.url}/datastore/image?image={image_id}", "PUT", files={"file": image})
            assert status == 200, body
            status, body = http(
                f"{server.url}/datastore/label?image={image_id}&tag=final", "PUT", files={"label": mask}
            )
            assert status == 200, body
        # classes: img0 by a JSON label (tag "class"), img1 by a label image painted with class index + 1
        for image_id, label in (("img0", tmp_path / "class0.json"), ("img1", tmp_path / "class1.png")):
            status, body = http(
                f"{server.url}/datastore/label?image={image_id}&tag=class", "PUT", files={"label": label}
            )
            assert status == 200, body
        assert (studies / "labels" / "final" / "img0.png").is_file()
        assert (studies / "labels" / "class" / "img0.json").is_file()

        before_cls, _ = _check_predictions(server, bundles, images, tmp_path, "before")

        t_al = time.monotonic()
        proposed: list[str] = []
        scored_before = _active_learning_round(server, pool, calls=2, proposed=proposed)
        al_seconds = time.monotonic() - t_al

        for name in (SEG, CLS):
            weights = bundles / name / "models" / "model.pt"
            digest = _sha(weights)
            _train(server, name)
            assert _sha(weights) != digest, f"{name}: /train did not rewrite models/model.pt"

        # the untrained bundle: refused before training, served right after it (no restart)
        status, _ = http(f"{server.url}/infer/{UNTRAINED}?image=img0&output=json", "POST", fields={"params": "{}"})
        assert status != 200
        _train(server, UNTRAINED)
        assert UNTRAINED in json.loads(http(f"{server.url}/info/")[1])["models"]
        status, body = http(f"{server.url}/infer/{UNTRAINED}?image=img0&output=image", "POST", fields={"params": "{}"})
        assert status == 200, body[:2000]

        log = server.log_path.read_text(errors="replace")
        assert "classification datalist: 2 labelled images" in log
        assert "validation split is empty" in log  # 2 images, val_split 0.2: validated on the training pair

        after_cls, _ = _check_predictions(server, bundles, images, tmp_path, "after")
        assert not np.allclose(after_cls, before_cls, atol=1e-6), "classification scores unchanged after training"

        # retrained models: new weights fingerprints, every feature recomputed, the strategies answer from them
        t_al = time.monotonic()
        scored_after = _active_learning_round(server, pool, calls=1, proposed=proposed)
        al_seconds += time.monotonic() - t_al
        for model in (CLS, SEG):
            assert scored_after[model]["weights"] != scored_before[model]["weights"], f"{model}: same fingerprint"
        print(f"active-learning steps of this test: {al_seconds:.1f} s (scoring passes and 9 proposals)")
    finally:
        server.stop()
    assert server.process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(server.process.pid, 0)  # nothing left in the server's process group


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_monailabel_server_openvino_backend(venv: Path, tmp_path: Path) -> None:
    """`--conf backend openvino`: the classification bundle runs its exported IR, the segmentation bundle (no IR)
    its network converted in memory; both answer what the PyTorch pipeline gives (1e-4 / 99.9 % of pixels).
    After /train rewrites models/model.pt, the now stale IR is not used: the answer follows the new weights."""
    from tinyusfm_monai.deploy.export import export

    bundles = tmp_path / "bundles"
    bundles.mkdir()
    for name in (CLS, SEG):
        tiny_bundle_copy(name, bundles, image_size=64)
    with contextlib.redirect_stdout(io.StringIO()):
        export(str(bundles / CLS), format="openvino", image_size=64, check_size=4)
    images = _make_images(tmp_path)
    studies = tmp_path / "studies"
    studies.mkdir()
    server = Server(studies, bundles, [CLS, SEG], tmp_path / "server.log", conf={"backend": "openvino"})
    try:
        server.wait_ready(timeout=240)
        for image_id, (image, mask) in images.items():
            status, body = http(f"{server.url}/datastore/image?image={image_id}", "PUT", files={"file": image})
            assert status == 200, body
            url = f"{server.url}/datastore/label?image={image_id}&tag=final"
            status, body = http(url, "PUT", files={"label": mask})
            assert status == 200, body
        _check_predictions(server, bundles, images, tmp_path, "openvino")
        log = server.log_path.read_text(errors="replace")
        assert f"{CLS}: backend openvino" in log and f"{SEG}: backend openvino" in log
        assert f"{CLS}/models/model.xml, precision f32" in log, server.log_tail()
        assert "in-memory conversion of the network, precision f32" in log  # SEG has no exported IR

        label = tmp_path / "class1.png"
        Image.fromarray(np.pad(np.full((8, 8), 2, np.uint8), ((10, 62), (20, 68)))).save(label)
        for image_id in images:
            url = f"{server.url}/datastore/label?image={image_id}&tag=class"
            status, body = http(url, "PUT", files={"label": label})
            assert status == 200, body
        _train(server, CLS)
        scores = _infer_cls(server, "img0")
        expected = reference_prediction(bundles / CLS, images["img0"][0])
        np.testing.assert_allclose(scores, expected, atol=1e-4, err_msg="after /train: server != bundle pipeline")
        assert "exported from other weights" in server.log_path.read_text(errors="replace")
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("content", "suffix", "expected"),
    [
        ('{"label": "Benign"}', ".json", 1),
        ('{"class_index": 2}', ".json", 2),
        ("malignant\n", ".txt", 2),
        ("0", ".txt", 0),
        (np.pad(np.full((2, 2), 1, np.uint8), 3), ".png", 0),
        (np.pad(np.full((2, 2), 3, np.uint8), 3), ".png", 2),
        (np.zeros((8, 8), np.uint8), ".png", None),
    ],
)
def test_class_from_label_file(tmp_path: Path, content, suffix: str, expected) -> None:
    """The classification annotation conventions (no server needed)."""
    from tinyusfm_monai.monailabel.lib.labels import class_from_label_file

    path = tmp_path / f"label{suffix}"
    if isinstance(content, np.ndarray):
        Image.fromarray(content).save(path)
    else:
        path.write_text(content)
    assert class_from_label_file(path, CLASS_NAMES) == expected


@pytest.mark.parametrize(("content", "suffix"), [('{"label": "cyst"}', ".json"), ("7", ".txt"), ("{}", ".json")])
def test_class_from_label_file_rejects(tmp_path: Path, content: str, suffix: str) -> None:
    from tinyusfm_monai.monailabel.lib.labels import class_from_label_file

    path = tmp_path / f"label{suffix}"
    path.write_text(content)
    with pytest.raises(ValueError):
        class_from_label_file(path, CLASS_NAMES)
