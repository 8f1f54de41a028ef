"""Test-time augmentation (model.inference.tta_shift): shifted views, averaged, and only at evaluation."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_ensemble import tiny_data, tiny_trainer, trained_checkpoint

from sigverify.models.inference import InferenceConfig
from sigverify.models.module import SignatureVerifier
from sigverify.models.tta import ShiftAveraged, shifted


def shifted_by_loop(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Pixel by pixel: out[y, x] = image[y - dy, x - dx] where that lies inside, else 0."""
    h, w = image.shape
    out = np.zeros_like(image)
    for y in range(h):
        for x in range(w):
            if 0 <= y - dy < h and 0 <= x - dx < w:
                out[y, x] = image[y - dy, x - dx]
    return out


@pytest.mark.parametrize("dy, dx", [(0, 0), (2, 0), (-3, 0), (0, 4), (0, -1), (1, -2)])
def test_shifted_matches_a_pixel_loop(dy, dx):
    image = torch.randint(0, 256, (7, 11), dtype=torch.uint8)
    np.testing.assert_array_equal(shifted(image[None, None], dy, dx)[0, 0].numpy(), shifted_by_loop(image.numpy(), dy, dx))


class Flatten(torch.nn.Module):
    """A network that is not shift-invariant: the normalised image itself, as the embedding."""

    def forward(self, images):
        return F.normalize(images.float().flatten(1), dim=1)


def test_shift_averaged_is_the_normalised_mean_over_the_five_views():
    images = torch.rand(3, 1, 10, 20)
    wrapped = ShiftAveraged(Flatten(), 0.1)
    assert wrapped.offsets(10, 20) == [(0, 0), (-1, 0), (1, 0), (0, -2), (0, 2)]
    expected = F.normalize(sum(Flatten()(shifted(images, dy, dx)) for dy, dx in wrapped.offsets(10, 20)), dim=1)
    torch.testing.assert_close(wrapped(images), expected)
    # each image keeps its own views (a batch-order mix-up would fail here)
    torch.testing.assert_close(wrapped(images[1:2]), expected[1:2])


@pytest.mark.parametrize("shift", [0.0, -0.1, 0.5])
def test_shift_averaged_refuses_shifts_outside_the_image(shift):
    with pytest.raises(ValueError, match="fraction of the image size"):
        ShiftAveraged(Flatten(), shift)


def test_eval_config_refuses_a_bad_shift():
    with pytest.raises(ValueError, match="tta_shift"):
        InferenceConfig(tta_shift=0.7)


def predicted(tmp_path, checkpoint: str, **inference) -> tuple[np.ndarray, np.ndarray]:
    """predict's embeddings, and the images it embedded (in the same order)."""
    model = SignatureVerifier.load_from_checkpoint(checkpoint, inference=InferenceConfig(**inference))
    data = tiny_data(tmp_path)
    batches = tiny_trainer(tmp_path).predict(model, data)
    images = torch.cat([b[0] for b in data.predict_dataloader()])
    return torch.cat([b["embedding"] for b in batches]).numpy(), images


def test_predict_embeds_through_the_shifted_views(tmp_path):
    checkpoint = trained_checkpoint(tmp_path, 0)
    plain, images = predicted(tmp_path, checkpoint)
    augmented, _ = predicted(tmp_path, checkpoint, tta_shift=0.1)
    network = SignatureVerifier.load_from_checkpoint(checkpoint).embedder.eval()
    with torch.no_grad():
        expected = ShiftAveraged(network, 0.1)(images).numpy()
    np.testing.assert_allclose(augmented, expected, atol=1e-5)
    assert np.abs(augmented - plain).max() > 1e-4  # the views were used (a barely trained net moves little)


def test_fit_embeds_without_the_views_and_validate_with_them(tmp_path, monkeypatch):
    calls = []
    original = ShiftAveraged.forward
    monkeypatch.setattr(ShiftAveraged, "forward", lambda self, images: calls.append(len(images)) or original(self, images))
    model = SignatureVerifier(backbone="test_efficientnet", head_hidden=[32], embedding_dim=16, warmup_epochs=0,
                              inference=InferenceConfig(tta_shift=0.1))
    trainer, data = tiny_trainer(tmp_path), tiny_data(tmp_path)
    trainer.fit(model, data)  # training steps and fit's own validation
    assert calls == []
    trainer.validate(model, data)
    assert sum(calls) == len(data.positions("val"))
    tiny_trainer(tmp_path).fit(model, data)  # a later fit in the same process trains the single network again
    assert sum(calls) == len(data.positions("val"))
