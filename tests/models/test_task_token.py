"""TaskTokenTransformer, registry and self-describing checkpoints."""

from __future__ import annotations

import pytest
import torch

from edge_affect.config import ModelConfig
from edge_affect.models import (
    TaskTokenTransformer,
    count_macs,
    count_params,
    create_model,
    get_config,
    list_models,
    load_checkpoint,
    save_checkpoint,
    save_safetensors,
)


def test_registry_has_required_configs() -> None:
    assert {"tiny", "edge", "paper"} <= set(list_models())


@pytest.mark.parametrize("mode,n_tokens", [("task", 3), ("label", 15)])
def test_forward_shapes_and_ranges(mode: str, n_tokens: int) -> None:
    torch.manual_seed(0)
    m = create_model("tiny", token_mode=mode).eval()
    assert m.num_tokens == n_tokens
    out = m(torch.randn(5, 3, 64, 64) * 3)
    assert set(out) == {"va", "expr", "au"}
    assert out["va"].shape == (5, 2) and out["expr"].shape == (5, 8) and out["au"].shape == (5, 12)
    assert out["va"].abs().max() <= 1.0  # tanh


def test_tiny_is_small_and_edge_within_budget() -> None:
    assert count_params(create_model("tiny")) < 500_000
    assert count_params(create_model("edge")) < 10_000_000


def test_unknown_names_suggest_close_match() -> None:
    with pytest.raises(ValueError, match="did you mean 'tiny'"):
        create_model("tinny")
    with pytest.raises(ValueError, match="did you mean 'decoder_layers'"):
        get_config("tiny", decoder_layer=3)
    with pytest.raises(ValueError, match="not a timm model"):
        TaskTokenTransformer(ModelConfig(backbone="no_such_net_xyz"))


def test_batch_independence_no_data_dependent_flow() -> None:
    """Each sample's output depends only on itself (eval mode): row 0 alone == row 0 in a batch."""
    torch.manual_seed(1)
    m = create_model("tiny").eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        full, single = m(x), m(x[:1])
    for k in full:
        torch.testing.assert_close(full[k][:1], single[k], atol=1e-5, rtol=1e-5)


def test_pretrained_backbone_from_local_file(tmp_path) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(2)
    ref = timm.create_model(get_config("tiny").backbone, pretrained=False)
    save_file(ref.state_dict(), str(tmp_path / "bb.safetensors"))
    m = create_model("tiny", pretrained=str(tmp_path / "bb.safetensors"))
    name, w_new = next(iter(m.backbone.named_parameters()))  # the stem's first weight
    w_ref = dict(ref.named_parameters())[name]
    torch.testing.assert_close(w_ref, w_new, atol=0, rtol=0)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create_model("tiny", pretrained=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_checkpoint_rebuilds_without_config(tmp_path, fmt: str) -> None:
    torch.manual_seed(3)
    m = create_model("tiny", token_mode="label", dim=32, heads=4).eval()
    path = tmp_path / f"m.{fmt}"
    th = [0.3 + 0.01 * i for i in range(12)]
    (save_checkpoint if fmt == "pt" else save_safetensors)(path, m, au_thresholds=th)
    m2, meta = load_checkpoint(path)
    assert m2.config.token_mode == "label" and m2.config.dim == 32
    assert meta.au_thresholds == pytest.approx(th)
    assert meta.preprocess.input_size == 64 and len(meta.checkpoint_sha256) == 64
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = m(x), m2(x)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def test_bad_checkpoints_give_one_line_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt.pt"):
        load_checkpoint(bad)
    trunc = tmp_path / "trunc.pt"
    save_checkpoint(trunc, create_model("tiny"))
    trunc.write_bytes(trunc.read_bytes()[:2000])
    with pytest.raises(ValueError, match="trunc.pt"):
        load_checkpoint(trunc)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="expected 'edge-affect-checkpoint/1'"):
        load_checkpoint(other)


@pytest.mark.parametrize("name", ["tiny", "edge", "edge_gray48", "tiny_silu"])
def test_every_parameter_is_used(name: str) -> None:
    """DDP (find_unused_parameters=False) needs every parameter in the graph of the loss."""
    m = create_model(name)
    s = m.config.input_size
    out = m(torch.randn(2, 3, s, s))
    sum(v.sum() for v in out.values()).backward()
    unused = [k for k, p in m.named_parameters() if p.grad is None]
    assert unused == []


def test_test_time_flip_is_mirror_invariant_and_exports(tmp_path) -> None:
    """With ``test_time_flip`` the model averages face and mirror image: f(x) == f(mirror x) to 1e-5, the
    training path is untouched, MACs double, and the ONNX graph (a Gather) matches PyTorch to 1e-4."""
    pytest.importorskip("onnx", reason="ONNX export needs the export extra")
    from edge_affect.export.onnx_export import export_onnx, run_onnx, run_torch
    from edge_affect.models.checkpoint import model_meta

    torch.manual_seed(0)
    plain = create_model("tiny").eval()
    flip = create_model("tiny", test_time_flip=True).eval()
    flip.load_state_dict(plain.state_dict())  # the option adds no weights
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        a, b = flip(x), flip(x.flip(-1))
        p, q = plain(x), plain(x.flip(-1))
    for k in a:
        assert float((a[k] - b[k]).abs().max()) <= 1e-5, k
        assert torch.allclose(a[k], (p[k] + q[k]) / 2, atol=1e-5), k
    flip.train()  # training sees single images (no doubled batch)
    assert tuple(flip(x)["expr"].shape) == (3, 8)
    flip.eval()
    assert count_macs(flip) == pytest.approx(2 * count_macs(plain), rel=0.01)
    path = tmp_path / "flip.onnx"
    export_onnx(flip, model_meta(flip), path, sample=x.numpy())
    ref, got = run_torch(flip, x.numpy()), run_onnx(path, x.numpy())
    assert all(float(abs(ref[k] - got[k]).max()) <= 1e-4 for k in ref)


def test_gray_stem_reads_one_channel(tmp_path) -> None:
    """A grayscale model's stem convolves the channel sum with the kernel averaged over channels: on the
    replicated luma the runtime feeds it equals the 3-channel convolution (1e-5), its state dict is unchanged,
    and the exported graph, from either exporter, reads one channel (a 1-channel Conv weight, BatchNorm folded,
    no per-call kernel mean) and matches PyTorch to 1e-4; ``stem_nodes`` still finds that convolution (kept FP16
    in TensorRT INT8)."""
    import copy

    pytest.importorskip("onnx", reason="ONNX export needs the export extra")
    import onnx
    from torch import nn

    from edge_affect.export.onnx_export import export_onnx, run_onnx, run_torch, stem_nodes
    from edge_affect.models.checkpoint import model_meta
    from edge_affect.models.task_token import GrayStemConv2d, fold_gray_stem

    torch.manual_seed(0)
    gray = create_model("tiny", color="gray").eval()
    stems = [m for m in gray.modules() if isinstance(m, GrayStemConv2d)]
    assert len(stems) == 1 and stems[0].in_channels == 3
    plain = copy.deepcopy(gray)
    next(m for m in plain.modules() if isinstance(m, GrayStemConv2d)).__class__ = nn.Conv2d
    assert list(gray.state_dict()) == list(plain.state_dict())
    x = torch.rand(4, 1, 64, 64).mul(2).sub(1).repeat(1, 3, 1, 1)  # normalised luma, replicated
    with torch.no_grad():
        a, b = gray(x), plain(x)
    for k in a:
        assert float((a[k] - b[k]).abs().max()) <= 1e-5, k
    assert count_macs(gray) < count_macs(plain)
    assert not any(isinstance(m, GrayStemConv2d) for m in create_model("tiny").modules())  # RGB: 3 channels
    assert any(isinstance(m, GrayStemConv2d) for m in create_model("edge_gray48_slim").modules())  # the default
    other = nn.Sequential(nn.Conv2d(3, 9, 3, groups=3))  # a first layer that is not a plain stem
    assert not fold_gray_stem(other) and type(other[0]) is nn.Conv2d

    for exporter in ("torchscript", "dynamo"):
        path = tmp_path / f"gray-{exporter}.onnx"
        export_onnx(gray, model_meta(gray), path, exporter=exporter, sample=x.numpy())
        assert "folded" not in str(list(gray.state_dict()))  # the export-time parameter is gone again
        graph = onnx.load(str(path)).graph
        stem = [n for n in graph.node if n.name in stem_nodes(onnx.load(str(path)))]
        assert len(stem) == 1, exporter
        weights = {t.name: list(t.dims) for t in graph.initializer}
        assert weights[stem[0].input[1]][1] == 1, exporter
        assert not any(n.op_type in ("ReduceMean", "BatchNormalization") for n in graph.node), exporter
        ref, got = run_torch(gray, x.numpy()), run_onnx(path, x.numpy())
        assert all(float(abs(ref[k] - got[k]).max()) <= 1e-4 for k in ref), exporter


def test_anti_aliased_resnet_takes_plain_weights_and_moves_less_under_shifts(tmp_path) -> None:
    """``edge_gray48_slim_aa`` (``backbone_kwargs`` ``anti_alias``) holds the plain layout's weights under the same
    names and shapes (v3's load as they are), costs more MACs (stride-1 convolutions before each blur), and with
    the same weights its features move several times less under a 1-px shift of a smooth image; its ONNX graph
    matches PyTorch to 1e-4."""
    pytest.importorskip("onnx", reason="ONNX export needs the export extra")
    from torch import nn

    from edge_affect.export.onnx_export import export_onnx, run_onnx, run_torch
    from edge_affect.models.checkpoint import model_meta
    from edge_affect.models.task_token import PooledShortcut

    torch.manual_seed(0)
    plain = create_model("edge_gray48_slim").eval()
    aa = create_model("edge_gray48_slim_aa").eval()
    assert {k: v.shape for k, v in aa.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    aa.load_state_dict(plain.state_dict(), strict=True)
    assert sum(isinstance(m, PooledShortcut) for m in aa.modules()) == 2  # layers 2 and 3 (layer 1 keeps stride 1)
    assert not any(isinstance(m, PooledShortcut) for m in plain.modules())
    assert 1.1 < count_macs(aa) / count_macs(plain) < 1.3
    smooth = nn.functional.interpolate(torch.rand(8, 1, 14, 14), size=(52, 52), mode="bicubic", align_corners=False)
    img = smooth.clamp(0, 1).mul(2).sub(1).repeat(1, 3, 1, 1)
    x0, x1 = img[..., 2:50, 2:50], img[..., 2:50, 3:51]  # the same image moved by one pixel
    with torch.no_grad():
        moved = {
            name: float((m.backbone(x1)[-1] - (f := m.backbone(x0)[-1])).norm() / f.norm())
            for name, m in (("plain", plain), ("aa", aa))
        }
    assert moved["aa"] < moved["plain"] / 3, moved
    path = tmp_path / "aa.onnx"
    export_onnx(aa, model_meta(aa), path, sample=x0.numpy())
    ref, got = run_torch(aa, x0.numpy()), run_onnx(path, x0.numpy())
    assert all(float(abs(ref[k] - got[k]).max()) <= 1e-4 for k in ref)
