"""nets.py: the backbone contract (shapes, labels, null label = last row), DiT's adaLN-Zero start (the output is 0,
every block the identity), its fixed 2-D sin-cos position embedding in closed form, patchify/unpatchify, the guidance
mix, configs (old checkpoints load as UNets), the options declared once, and DiT trained through ddpm.py and cfg.py."""
import math
import subprocess
import sys
import typing

import pytest
import torch

import cfg
import ddpm
import nets
from conftest import ROOT, assert_one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_DIT = dict(depth=2, width=16, heads=2)


def backbones(num_classes):
    torch.manual_seed(0)
    return {"unet": (nets.UNet(1, 8, (1, 2), True, num_classes), (3, 1, 8, 8)),
            "unet-patch": (nets.UNet(1, 8, (1,), False, num_classes, patch=2), (3, 1, 8, 8)),
            "dit": (nets.DiT(1, patch=2, num_classes=num_classes, **TINY_DIT), (3, 1, 8, 8)),
            "dit-rgb": (nets.DiT(3, patch=4, num_classes=num_classes, **TINY_DIT), (3, 3, 8, 12)),
            "mlp": (nets.MLP(2, 16, 2, num_classes), (3, 2))}


def randomize(net, seed=1):
    """Non-zero weights everywhere (DiT starts at exactly 0, which would hide a wrong token order)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.parametrize("num_classes", [0, 5])
def test_every_backbone_maps_x_t_y_to_the_shape_of_x(num_classes):
    for name, (net, shape) in backbones(num_classes).items():
        randomize(net)
        x, t = torch.randn(shape), torch.tensor([0.0, 17.5, 999.0])  # t: float steps
        assert net.num_classes == num_classes, name
        out = net(x, t)
        assert out.shape == x.shape and torch.isfinite(out).all(), name
        if num_classes:
            y = torch.tensor([0, 4, 2])
            out_y = net(x, t, y)
            assert out_y.shape == x.shape and not torch.equal(out_y, out), name  # the label changes the output
            # the null label is the last row, and y = None means it
            assert net.embed.label.num_embeddings == num_classes + 1
            torch.testing.assert_close(net(x, t, torch.full((3,), num_classes)), out, rtol=0, atol=0)
        else:
            assert net.embed.label is None


def test_null_label_is_the_last_embedding_row():
    emb = nets.Embed(8, num_classes=3)
    t = torch.tensor([1.0, 2.0])
    base = emb.mlp(nets.timestep_embedding(t, 8))
    torch.testing.assert_close(emb(t), base + emb.label.weight[3], rtol=0, atol=0)
    torch.testing.assert_close(emb(t, torch.tensor([0, 2])), base + emb.label.weight[[0, 2]], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------- DiT
def test_dit_starts_at_zero_and_every_block_is_the_identity():
    torch.manual_seed(0)
    dit = nets.DiT(1, patch=4, num_classes=10, **TINY_DIT)
    x, t, y = torch.randn(4, 1, 28, 28), torch.rand(4) * 999, torch.tensor([1, 2, 3, 10])
    assert torch.equal(dit(x, t, y), torch.zeros_like(x))  # zero-initialised final layer
    c = dit.embed(t, y)
    h = torch.randn(4, 49, 16)
    for block in dit.blocks:  # adaLN-Zero: gates, shifts and scales start at 0
        assert torch.equal(block(h, c), h)
    # training moves it: the first gradient reaches the final layer only (the output does not depend on the rest
    # yet); after one step on the final layer the gates get theirs
    (dit(x, t, y) - x).pow(2).mean().backward()
    assert dit.final.weight.grad.abs().sum() > 0 and dit.blocks[0].ada[1].weight.grad.abs().sum() == 0
    with torch.no_grad():
        dit.final.weight -= 0.1 * dit.final.weight.grad
    dit.zero_grad()
    (dit(x, t, y) - x).pow(2).mean().backward()
    assert dit.blocks[0].ada[1].weight.grad.abs().sum() > 0


def test_position_embedding_is_the_2d_sin_cos_closed_form():
    h, w, dim = 3, 4, 8
    K = dim // 4
    pe = nets.pos_embedding_2d(h, w, dim)
    assert pe.shape == (h * w, dim)
    for i in range(h):
        for j in range(w):
            row = []
            for pos in (i, j):  # first half: the row, second half: the column
                row += [math.sin(pos * 10_000 ** (-k / K)) for k in range(K)]
                row += [math.cos(pos * 10_000 ** (-k / K)) for k in range(K)]
            torch.testing.assert_close(pe[i * w + j], torch.tensor(row), rtol=0, atol=1e-6)
    dit = nets.DiT(1, patch=2, **TINY_DIT)
    assert not any("pos" in k for k in dit.state_dict())  # fixed, not learned, not saved


def test_patchify_roundtrip_and_the_conv_reads_the_same_tokens():
    x = torch.randn(2, 3, 8, 12)
    for p in (1, 2, 4):
        tokens = nets.patchify(x, p)
        assert tokens.shape == (2, (8 // p) * (12 // p), 3 * p * p)
        assert torch.equal(nets.unpatchify(tokens, p, (3, 8, 12)), x)
    # token n = (i, j) in row-major order holds the C x p x p patch at rows i p.., columns j p..
    tokens = nets.patchify(x, 4)
    assert torch.equal(tokens[:, 1 * 3 + 2], x[:, :, 4:8, 8:12].reshape(2, -1))
    # the patch-embedding conv (stride p) is a linear map of exactly these tokens
    dit = randomize(nets.DiT(3, patch=4, **TINY_DIT))
    conv = dit.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, D]
    lin = tokens @ dit.patch_embed.weight.reshape(16, -1).T + dit.patch_embed.bias
    torch.testing.assert_close(conv, lin, rtol=1e-5, atol=1e-5)


def test_dit_registry_and_overrides():
    assert nets.DEFAULT_DIT in nets.DIT_MODELS and "DiT-S/2" in nets.DIT_MODELS
    config = dict(net="dit", dit_size="DiT-B/4", dit_depth=1, dit_width=0, dit_heads=0, dit_patch=7, dropout=0.0)
    assert nets.dit_config(config) == dict(depth=1, width=nets.DIT_SIZES["DiT-B"]["width"],
                                           heads=nets.DIT_SIZES["DiT-B"]["heads"], patch=7)
    net = nets.build(config, (1, 28, 28), 10)
    assert isinstance(net, nets.DiT) and len(net.blocks) == 1 and net.patch == 7 and net.num_classes == 10
    for bad in (dict(dit_size="DiT-Q/3"), dict(dit_patch=5), dict(dit_heads=7), dict(net="resnet")):
        base = dict(net="dit", ch=32, ch_mult="1,2,2", dropout=0.0, dit_size="DiT-T/4")
        with pytest.raises(ValueError):
            nets.validate({**base, **bad}, (1, 28, 28))


# ------------------------------------------------------------------------------------------- guidance
def test_guided_is_the_mix_of_one_batched_pass():
    net = randomize(nets.MLP(2, 16, 1, num_classes=3))
    calls = []

    def net_fn(x, t, y):
        calls.append(y.clone())
        return net(x, t, y)

    x, t, y = torch.randn(4, 2), torch.full((4,), 10.0), torch.tensor([0, 1, 2, 1])
    g = nets.guided(net_fn, x, t, y, 2.5, 3)
    assert len(calls) == 1 and calls[0].tolist() == [0, 1, 2, 1, 3, 3, 3, 3]
    out_c, out_u = net(x, t, y), net(x, t, torch.full((4,), 3))
    torch.testing.assert_close(g, out_u + 2.5 * (out_c - out_u), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------- configs and options
def test_options_are_declared_once_and_shared_by_ddpm_and_cfg():
    names = ["net", "ch", "ch_mult", "attn", "dropout", "patch", "dit_size", "dit_depth", "dit_width", "dit_heads",
             "dit_patch", "hidden", "depth"]
    aliases = [nets.Net, nets.Ch, nets.ChMult, nets.Attn, nets.Dropout, nets.Patch, nets.DitSize, nets.DitDepth,
               nets.DitWidth, nets.DitHeads, nets.DitPatch, nets.Hidden, nets.Depth]
    for fn in (ddpm.train, cfg.train):
        hints = typing.get_type_hints(fn, include_extras=True)
        for name, alias in zip(names, aliases):
            assert hints[name] == alias, (fn.__module__, name)


def test_nets_imports_without_typer():
    code = ("import sys; sys.modules['typer'] = None; import nets, torch; "
            "print(nets.DiT(1, patch=7, depth=1, width=16, heads=2)(torch.zeros(1, 1, 28, 28), torch.zeros(1)).shape)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "torch.Size([1, 1, 28, 28])" in r.stdout, r.stderr


TINY_TRAIN = dict(steps=2, batch_size=8, timesteps=20, warmup=1, device="cpu", net="dit", dit_size="DiT-T/7",
                  dit_depth=1, dit_width=16, dit_heads=2)


def test_dit_trains_and_samples_through_ddpm(tmp_path):
    ckpt = ddpm.train(out=str(tmp_path / "ddpm"), **TINY_TRAIN)
    model = ddpm.load(ckpt)
    assert isinstance(model.net, nets.DiT) and model.net.num_classes == 0 and model.net.patch == 7
    x_T = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x = ddpm.sample(model.eps, model.alpha_bar64, x_T, "dpm++2m", 3, x0_clip=1.0)
    assert x.shape == x_T.shape and torch.isfinite(x).all() and x.abs().max() <= 1
    assert model.net(x_T, torch.full((3,), 5.0)).abs().max() > 0  # trained away from the zero start


def test_dit_trains_and_samples_through_cfg(tmp_path):
    ckpt = cfg.train(out=str(tmp_path / "cfg"), **TINY_TRAIN)
    model = cfg.load(ckpt)
    assert isinstance(model.net, nets.DiT) and model.num_classes == model.net.num_classes == 10
    x = cfg.sample_cmd(ckpt=str(ckpt), label=3, n=4, steps=2, out=str(tmp_path / "s.npz"), device="cpu")
    assert x.shape == (4, 1, 28, 28) and torch.isfinite(x).all()


def test_checkpoint_without_net_in_its_config_loads_as_a_unet(tmp_path):
    """Checkpoints written before --net (and before num_classes was saved by ddpm.py) load as UNets."""
    ckpt = ddpm.train(steps=1, patch=1, ch=8, ch_mult="1", attn=False, batch_size=4, timesteps=20, warmup=1,
                      device="cpu", out=str(tmp_path / "new"))  # checkpoints before --patch were full resolution
    ck = torch.load(ckpt, weights_only=True)
    for k in ("net", "patch", "dit_size", "dit_depth", "dit_width", "dit_heads", "dit_patch"):
        del ck["config"][k]
    del ck["extra"]["num_classes"]
    old = tmp_path / "old.pt"
    torch.save(ck, old)
    a, b = ddpm.load(ckpt), ddpm.load(old)
    assert isinstance(b.net, nets.UNet) and b.net.num_classes == 0
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 15])
    assert torch.equal(a.eps(x, t), b.eps(x, t))


def test_dit_on_points_is_refused_in_one_line(tmp_path):
    for prog in ("ddpm.py", "cfg.py"):
        r = run_cli(prog, "train", "--data", "moons", "--net", "dit", "--steps", 2, "--out", tmp_path / prog)
        assert_one_line_error(r)
        assert "--net dit needs images" in r.stderr
