"""RetinaFace with random weights: the released key layout, prior boxes and decoding against hand-computed
values, the detector end to end with rigged outputs, and the weights lookup's errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_dr2.faces.retinaface import (
    RetinaFaceDetector,
    decode_boxes,
    decode_landmarks,
    load_retinaface,
    prior_boxes,
)
from lightning_dr2.nets.loading import WeightsError
from lightning_dr2.nets.retinaface import RetinaFace
from lightning_dr2.weights import WEIGHTS, MissingWeightsError

# Counted on biubug6/Pytorch_Retinaface's networks (the layout of facexlib's release files).
RELEASED = {
    "mobilenet0.25": (300, 426_608, "body.stage1.0.0.weight"),
    "resnet50": (456, 27_293_600, "body.layer4.2.conv3.weight"),
}
SAMPLE_KEYS = (
    "fpn.output1.0.weight",
    "fpn.merge2.1.running_var",
    "ssh1.conv3X3.0.weight",
    "ssh3.conv7x7_3.1.bias",
    "ClassHead.0.conv1x1.weight",
    "BboxHead.2.conv1x1.bias",
    "LandmarkHead.1.conv1x1.weight",
)


@pytest.mark.parametrize("arch", list(RELEASED))
def test_state_dict_has_the_released_layout_and_output_shapes(arch):
    keys, params, backbone_key = RELEASED[arch]
    model = RetinaFace(arch).eval()
    state = model.state_dict()
    assert len(state) == keys and sum(p.numel() for p in model.parameters()) == params
    assert backbone_key in state and all(k in state for k in SAMPLE_KEYS)
    assert state["LandmarkHead.0.conv1x1.weight"].shape[0] == 20  # 2 anchors x 5 points x (x, y)
    with torch.no_grad():
        boxes, scores, landmarks = model(torch.randn(2, 3, 64, 96))
    priors = 2 * (8 * 12 + 4 * 6 + 2 * 3)
    assert boxes.shape == (2, priors, 4) and scores.shape == (2, priors) and landmarks.shape == (2, priors, 10)
    assert ((scores >= 0) & (scores <= 1)).all()


def test_prior_boxes_match_hand_computed_anchors():
    priors = prior_boxes(64, 96)  # feature maps 8x12, 4x6, 2x3; two anchor sizes per cell
    assert priors.shape == (2 * (96 + 24 + 6), 4)
    np.testing.assert_allclose(priors[0], [4 / 96, 4 / 64, 16 / 96, 16 / 64])  # stride 8, cell (0, 0), 16 px
    np.testing.assert_allclose(priors[1], [4 / 96, 4 / 64, 32 / 96, 32 / 64])  # same cell, 32 px
    np.testing.assert_allclose(priors[2], [12 / 96, 4 / 64, 16 / 96, 16 / 64])  # next column
    np.testing.assert_allclose(priors[2 * 12], [4 / 96, 12 / 64, 16 / 96, 16 / 64])  # next row
    np.testing.assert_allclose(priors[192], [8 / 96, 8 / 64, 64 / 96, 64 / 64])  # first stride-16 anchor
    np.testing.assert_allclose(priors[-1], [80 / 96, 48 / 64, 512 / 96, 512 / 64])  # last stride-32, 512 px
    odd = prior_boxes(33, 17)  # ceil: 5x3, 3x2, 2x1
    assert odd.shape == (2 * (15 + 6 + 2), 4)


def test_decoding_matches_hand_computation():
    prior = torch.tensor([[0.5, 0.25, 0.2, 0.4]])
    offsets = torch.tensor([[1.0, -2.0, np.log(2) / 0.2, 0.0]])
    # centre (0.5 + 1 * 0.1 * 0.2, 0.25 - 2 * 0.1 * 0.4) = (0.52, 0.17); size (0.2 * 2, 0.4)
    np.testing.assert_allclose(decode_boxes(offsets, prior)[0], [0.32, -0.03, 0.72, 0.37], atol=1e-6)
    points = torch.arange(10.0)[None]
    expected = [[0.5 + 0.02 * x, 0.25 + 0.04 * y] for x, y in zip(range(0, 10, 2), range(1, 10, 2), strict=False)]
    np.testing.assert_allclose(decode_landmarks(points, prior)[0], expected, atol=1e-6)


class _Rigged(torch.nn.Module):
    """Stands in for the network: every prior scores 0, except chosen ones (zero offsets)."""

    def __init__(self, hits: dict[int, float]):
        super().__init__()
        self.hits = hits
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x)
        n = prior_boxes(*x.shape[-2:]).shape[0]
        scores = torch.zeros(1, n)
        for i, s in self.hits.items():
            scores[0, i] = s
        return torch.zeros(1, n, 4), scores, torch.zeros(1, n, 10)


def test_detector_decodes_to_photo_pixels_and_merges_overlaps():
    height, width = 64, 96
    index = 192 + 2 * (1 * 6 + 2)  # stride 16, row 1, column 2, 64 px anchor: centre (40, 24)
    rigged = _Rigged({index: 0.99, index + 2: 0.98, 0: 0.5})  # a neighbour overlapping it; one weak prior
    detector = RetinaFaceDetector("mobilenet0.25", model=rigged, score_threshold=0.9)
    photo = np.zeros((height, width, 3), np.uint8)
    photo[..., 0] = 200  # red in RGB: the network must see it in the blue-first (BGR) slot, minus its mean
    faces = detector.detect(photo)
    assert len(faces) == 1  # IoU of the two 64 px boxes 16 px apart = 0.6 > 0.4: merged
    np.testing.assert_allclose(faces[0].box, [8, -8, 72, 56], atol=1e-4)
    np.testing.assert_allclose(faces[0].landmarks, [[40, 24]] * 5, atol=1e-4)
    assert faces[0].score == pytest.approx(0.99)
    seen = rigged.seen[0]
    np.testing.assert_allclose(seen[0, :, 0, 0], [0 - 104, 0 - 117, 200 - 123])


def test_large_photos_are_shrunk_and_boxes_mapped_back():
    rigged = _Rigged({0: 0.99})
    detector = RetinaFaceDetector("mobilenet0.25", model=rigged, max_side=64)
    faces = detector.detect(np.zeros((128, 192, 3), np.uint8))
    assert tuple(rigged.seen[0].shape[-2:]) == (43, 64)
    x0, y0, x1, y1 = faces[0].box
    assert x1 - x0 == pytest.approx(16 * 192 / 64, rel=1e-4) and y1 - y0 == pytest.approx(16 * 128 / 43, rel=1e-4)


def test_released_files_load_strictly_with_module_prefix_and_without_bn_counters(tmp_path):
    model = RetinaFace("mobilenet0.25")
    torch.nn.init.normal_(model.ClassHead[0].conv1x1.weight)
    state = {f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "detection_mobilenet0.25_Final.pth"
    torch.save(state, path)
    loaded = load_retinaface("mobilenet0.25", weights_dir=tmp_path)
    torch.testing.assert_close(loaded.ClassHead[0].conv1x1.weight, model.ClassHead[0].conv1x1.weight)
    torch.save({k: v for k, v in state.items() if "LandmarkHead" not in k}, path)
    with pytest.raises(WeightsError, match=r"(?s)detection_mobilenet0.25_Final.pth.*missing keys \(6\)"):
        load_retinaface("mobilenet0.25", weights_dir=tmp_path)


def test_missing_weights_name_the_file_and_the_fetch_command(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        RetinaFaceDetector("resnet50", weights_dir=tmp_path)
    message = str(err.value)
    assert "detection_Resnet50_Final.pth" in message and str(tmp_path) in message
    assert "python -m lightning_dr2 weights --fetch detection_Resnet50_Final.pth" in message
    for name in ("detection_Resnet50_Final.pth", "detection_mobilenet0.25_Final.pth"):
        entry = WEIGHTS[name]
        assert entry.role == "face detector" and entry.urls[0].endswith(f"/v0.1.0/{name}")
