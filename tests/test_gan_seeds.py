"""scripts/gan_seeds.py (many seeds of the point GAN stacked in one tensor): the stacked runs are independent and its
Adam is torch's Adam, run by run, so its seed statistics are those of separate runs."""
import sys
from pathlib import Path

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import gan_seeds  # noqa: E402


@settings(max_examples=10)
@given(st.integers(0, 10_000), st.lists(st.sampled_from([1e-3, 3e-3, 1e-2]), min_size=3, max_size=3),
       st.lists(st.sampled_from([0.0, 0.5, 0.9]), min_size=3, max_size=3))
def test_stacked_adam_is_torch_adam_for_each_run(seed, lrs, beta1s):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4, 5), (3, 1, 5)]  # [runs, in, out] and a bias [runs, 1, out]
    p = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    m, v = [torch.zeros_like(t) for t in p], [torch.zeros_like(t) for t in p]
    alone = [[t[i].clone().requires_grad_(True) for t in p] for i in range(3)]  # run i on its own
    opts = [torch.optim.Adam(alone[i], lrs[i], betas=(beta1s[i], 0.999)) for i in range(3)]
    for t in range(1, 8):
        grads = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
        for i in range(3):
            for q, gr in zip(alone[i], grads):
                q.grad = gr[i].clone()
            opts[i].step()
        gan_seeds.adam_(p, grads, m, v, t, torch.tensor(lrs, dtype=torch.float64),
                        torch.tensor(beta1s, dtype=torch.float64), 0.999)
    for i in range(3):
        for stacked, q in zip(p, alone[i]):
            assert torch.allclose(stacked[i], q.detach(), rtol=1e-10, atol=1e-12)


def test_stacked_runs_do_not_see_each_other():
    g = torch.Generator().manual_seed(0)
    G = gan_seeds.StackedG(3, 4, 8, 2, g, "cpu")
    D = gan_seeds.StackedD(3, 8, 2, 2, g, "cpu")
    z = torch.randn(3, 16, 4, generator=g)
    out = D(G(z))  # [runs, 16 / pack]
    assert out.shape == (3, 8)
    grads = torch.autograd.grad(out[0].sum(), G.p + D.p)  # run 0's output: no gradient into runs 1 and 2
    assert all(gr[1:].abs().max() == 0 for gr in grads)
    assert sum(gr[0].abs().max() > 0 for gr in grads) >= len(grads) - 2  # (BatchNorm cancels G's 2 hidden biases)
    z2 = z.clone()
    z2[1:] = torch.randn(2, 16, 4, generator=g)  # other runs' inputs (and BatchNorm batches) change run 0 not at all
    assert torch.allclose(D(G(z2))[0], out[0])
