"""Net2WiderNet growth (edge_affect/models/widen.py): the widened model computes what the narrow one computed,
in eval and in training mode, its copied channels get unequal input shares (so they can drift apart), and a
pair of configs that is not "same model, wider ResNet stages" is refused in one line."""

from __future__ import annotations

import pytest
import torch

from edge_affect.models import create_model
from edge_affect.models.widen import widen_state_dict


def _trained_like(name: str, **overrides) -> torch.nn.Module:
    """A model whose BatchNorms hold non-trivial statistics and affine terms, as a trained one does."""
    torch.manual_seed(0)
    m = create_model(name, **overrides)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
    return m


def _grow(old: torch.nn.Module, name: str, **kw) -> torch.nn.Module:
    new = create_model(name)
    sd = widen_state_dict(
        old.state_dict(),
        old.config.to_dict(),
        new.config.to_dict(),
        {k: v.shape for k, v in new.state_dict().items()},
        **kw,
    )
    new.load_state_dict(sd, strict=True)
    return new


def test_widened_model_computes_the_same_function() -> None:
    old = _trained_like("edge_gray48_slim")
    new = _grow(old, "edge_gray48_mid")
    assert new.backbone.layer3[0].conv2.weight.shape[0] == 192 and old.backbone.layer3[0].conv2.weight.shape[0] == 128
    # each new channel of stage 1 copies an old one (filter statistics), and the layer reading stage 1 splits the
    # old channel's weights between the copies with unequal shares that sum to one (symmetry broken, same function)
    bn_old, bn_new = old.backbone.layer1[0].bn2, new.backbone.layer1[0].bn2
    stats = lambda bn, j: torch.stack([bn.weight[j], bn.bias[j], bn.running_mean[j], bn.running_var[j]])  # noqa: E731
    src = {j: [i for i in range(32) if torch.equal(stats(bn_new, j), stats(bn_old, i))] for j in range(32, 48)}
    assert all(len(v) == 1 for v in src.values()), src
    w_old = old.backbone.layer2[0].conv1.weight.detach()  # reads stage 1 (32 channels); its first 64 outputs
    w_new = new.backbone.layer2[0].conv1.weight.detach()[:64]  # are the old ones, reading stage 1 grown to 48
    shares = []
    for j, (i,) in src.items():
        share_j, share_i = w_new[:, j] / w_old[:, i], w_new[:, i] / w_old[:, i]
        assert torch.allclose(share_j, share_j.flatten()[0].expand_as(share_j), atol=1e-5)
        assert torch.allclose(share_i + share_j, torch.ones_like(share_j), atol=1e-5)
        shares.append(float(share_j.flatten()[0]))
    assert max(abs(s - 0.5) for s in shares) > 0.01, shares
    x = torch.rand(6, 1, 48, 48).expand(6, 3, 48, 48).contiguous()
    for training in (False, True):  # eval: running statistics; training: batch statistics of the copies
        old.train(training)
        new.train(training)
        torch.manual_seed(1)
        with torch.no_grad():
            a = old(x)
        torch.manual_seed(1)  # the same dropout masks in the transformer (its width is unchanged)
        with torch.no_grad():
            b = new(x)
        for k in a:
            assert torch.allclose(a[k], b[k], atol=2e-5), (training, k, (a[k] - b[k]).abs().max())


def test_equal_shares_are_exact_too() -> None:
    old = _trained_like("edge_gray48_slim").eval()
    new = _grow(old, "edge_gray48_mid", noise=0.0).eval()
    x = torch.rand(2, 3, 48, 48).mean(1, keepdim=True).expand(2, 3, 48, 48).contiguous()
    with torch.no_grad():
        assert torch.allclose(old(x)["expr"], new(x)["expr"], atol=2e-5)


@pytest.mark.parametrize(
    ("src", "dst", "message"),
    [
        ("edge_gray48_mid", "edge_gray48_slim", r"channels \[48, 96, 192, 256\] cannot grow into \[32, 64, 128, 256\]"),
        ("edge_gray48_slim", "edge_gray48_mid:dim", r"differs in \['dim'"),
        ("tiny", "edge_gray48_mid", "widening needs ResNet backbones with backbone_kwargs channels on both sides"),
    ],
)
def test_refuses_what_is_not_a_wider_same_model(src: str, dst: str, message: str) -> None:
    old = create_model(src)
    name, _, change = dst.partition(":")
    new = create_model(name, **({"dim": 64, "heads": 4} if change == "dim" else {}))
    with pytest.raises(ValueError, match=r"^init_widen: .*" + message):
        widen_state_dict(
            old.state_dict(),
            old.config.to_dict(),
            new.config.to_dict(),
            {k: v.shape for k, v in new.state_dict().items()},
        )
