"""consistency.py: the boundary condition, Gaussian data (whose consistency function is known in closed form) through
the sampler and the losses, the teacher's ODE step against ddpm.py's DDIM, the level schedules, and the commands."""
import math
import subprocess

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import consistency as cm
import ddpm
import nets
from conftest import assert_one_line_error, run_app

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------- Gaussian data
# Data x_0 ~ N(mu, s^2 I): x_sigma ~ N(mu, (s^2 + sigma^2) I), the denoiser is D(x, sigma) = mu + s^2 / (s^2 + sigma^2)
# (x - mu), and along the ODE dx/dsigma = (x - D) / sigma = sigma (x - mu) / (s^2 + sigma^2) the quantity
# (x - mu) / sqrt(s^2 + sigma^2) is constant, so the consistency function (the point at sigma_min) is
#     f*(x, sigma) = mu + sqrt((s^2 + sigma_min^2) / (s^2 + sigma^2)) (x - mu).
def gaussian_denoiser(mu, s):
    return lambda x, sigma: mu + s ** 2 / (s ** 2 + cm.bcast(sigma, x) ** 2) * (x - mu)


def gaussian_f(mu, s, sigma_min):
    return lambda x, sigma: mu + ((s ** 2 + sigma_min ** 2) / (s ** 2 + cm.bcast(sigma, x) ** 2)).sqrt() * (x - mu)


def tiny_model(D=2, sigma_min=cm.SIGMA_MIN, sigma_data=1.0, seed=0):
    torch.manual_seed(seed)
    return cm.Consistency(nets.MLP(D, 16, 1), cm.schedule_log_sigma(), sigma_min, 80.0, sigma_data)


@given(st.floats(1e-3, 0.5), st.floats(0.2, 2.0), st.integers(0, 10_000))
@settings(max_examples=15)
def test_boundary_condition_holds_exactly_for_any_network(sigma_min, sigma_data, seed):
    model = tiny_model(sigma_min=sigma_min, sigma_data=sigma_data, seed=seed)
    x = torch.randn(8, 2) * 3
    assert torch.equal(model(x, torch.full((8,), sigma_min)), x)  # f(x, sigma_min) = x
    assert not torch.allclose(model(x, torch.full((8,), sigma_min + 1)), x)  # the net is used
    c_skip, c_out, c_in = cm.scalings(torch.tensor(sigma_min + 1.0, dtype=torch.float64), sigma_min, sigma_data)
    sd2 = sigma_data ** 2  # Song et al. appendix C at sigma = sigma_min + 1
    assert math.isclose(c_skip, sd2 / (1 + sd2)) and math.isclose(c_in, 1 / math.sqrt((sigma_min + 1) ** 2 + sd2))
    assert math.isclose(c_out, sigma_data / math.sqrt(sd2 + (sigma_min + 1) ** 2))


def test_the_parameterization_is_ddpm_v_prediction_so_a_teacher_initialized_student_is_its_denoiser():
    torch.manual_seed(0)
    teacher = ddpm.DDPM(nets.MLP(2, 16, 1), prediction="v")
    log_sigma = cm.schedule_log_sigma()
    student = cm.Consistency(teacher.net, log_sigma, 1e-9, 80.0, 1.0)  # sigma_min ~ 0: f = EDM's denoiser
    t = torch.tensor([0, 3, 100, 500, 999])
    sigma = log_sigma[t].exp().float()
    torch.testing.assert_close(student.time(sigma), t.float(), atol=1e-3, rtol=0)  # the teacher's own steps
    x = torch.randn(5, 2) * (1 + sigma[:, None])
    torch.testing.assert_close(student(x, sigma), cm.teacher_denoiser(teacher)(x, sigma), atol=1e-5, rtol=1e-4)


@given(st.floats(-2, 2), st.floats(0.2, 1.5), st.floats(0.05, 0.6), st.integers(0, 10_000))
@settings(max_examples=8)
def test_exact_consistency_function_samples_the_data_in_one_and_two_steps(mu, s, sigma_min, seed):
    g = torch.Generator().manual_seed(seed)
    f = gaussian_f(mu, s, sigma_min)
    sigma_max, n = 40.0, 40_000
    x_T = mu + math.sqrt(s ** 2 + sigma_max ** 2) * torch.randn(n, 1, generator=g, dtype=torch.float64)  # exact marginal
    std = math.sqrt(s ** 2 + sigma_min ** 2)  # the data at sigma_min: N(mu, s^2 + sigma_min^2)
    for sigmas in ([sigma_max], [sigma_max, 1.0], [sigma_max, 2.0, 0.7]):
        x = cm.sample(f, x_T, sigmas, generator=g, sigma_min=sigma_min)
        assert abs(x.mean() - mu) < 4 * std / math.sqrt(n), sigmas
        assert abs(x.std() / std - 1) < 4 / math.sqrt(2 * n), sigmas
    # from x_T ~ N(0, sigma_max^2) (what generate draws), one call gives exactly mu (1 - r) and std r sigma_max
    r = math.sqrt((s ** 2 + sigma_min ** 2) / (s ** 2 + sigma_max ** 2))
    x = cm.sample(f, sigma_max * torch.randn(n, 1, generator=g, dtype=torch.float64), [sigma_max], sigma_min=sigma_min)
    assert abs(x.mean() - mu * (1 - r)) < 4 * r * sigma_max / math.sqrt(n) and abs(x.std() / (r * sigma_max) - 1) < 0.03


def test_sample_calls_f_once_per_level_and_renoises_to_each_level():
    seen = []

    def f(x, sigma):
        seen.append((x.clone(), sigma.clone()))
        return torch.zeros_like(x)  # every call returns the origin 0: the next input is pure re-noise

    x_T = torch.randn(20_000, 1, dtype=torch.float64)
    cm.sample(f, x_T, [10.0, 3.0, 0.5], generator=torch.Generator().manual_seed(0), sigma_min=0.3)
    assert [float(s[0]) for _, s in seen] == [10.0, 3.0, 0.5] and torch.equal(seen[0][0], x_T)
    for (x, _), level in zip(seen[1:], (3.0, 0.5)):
        assert abs(x.std() / math.sqrt(level ** 2 - 0.3 ** 2) - 1) < 0.03  # sqrt(sigma^2 - sigma_min^2) z


@pytest.mark.parametrize("solver", cm.SOLVERS)
def test_teacher_steps_follow_the_exact_gaussian_trajectory(solver):
    mu, s = 0.7, 0.4
    D, exact = gaussian_denoiser(mu, s), lambda x, a, b: mu + math.sqrt((s ** 2 + b ** 2) / (s ** 2 + a ** 2)) * (x - mu)
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    errors = []
    for h in (0.1, 0.05, 0.025):  # one step from sigma = 1 to 1 - h: local error O(h^2) (Euler), O(h^3) (Heun)
        a, b = torch.full((7,), 1.0, dtype=torch.float64), torch.full((7,), 1.0 - h, dtype=torch.float64)
        errors.append((cm.ode_step(D, x, a, b, solver) - exact(x, 1.0, 1.0 - h)).abs().max().item())
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    lo, hi = (3.3, 4.7) if solver == "euler" else (6.5, 10)
    assert all(lo < r < hi for r in ratios), (solver, errors, ratios)


@pytest.mark.parametrize("prediction", ["v", "eps"])
def test_the_euler_teacher_step_is_ddpms_ddim_step_between_the_same_levels(prediction):
    torch.manual_seed(1)
    teacher = ddpm.DDPM(nets.MLP(2, 16, 1), prediction=prediction).eval()
    alpha_bar = teacher.alpha_bar64
    log_sigma = 0.5 * torch.log((1 - alpha_bar) / alpha_bar)
    t, s = 600, 420
    x_t = torch.randn(6, 2)
    seen = []

    def eps_fn(x, step):  # ddpm.py's DDIM over ts = [t, s]: its second call sees x_s
        seen.append(x.clone())
        return teacher.eps(x, step)

    ddpm.sample_ddim(eps_fn, alpha_bar, x_t, [t, s], eta=0.0)
    x_s = seen[1]
    sig = lambda k: torch.full((6,), log_sigma[k].exp().item())  # noqa: E731
    x_sigma = cm.ode_step(cm.teacher_denoiser(teacher), x_t / alpha_bar[t].sqrt().float(), sig(t), sig(s), "euler")
    torch.testing.assert_close(x_sigma, x_s / alpha_bar[s].sqrt().float(), atol=1e-5, rtol=1e-5)  # x_t / sqrt(ab)


def test_cd_loss_of_the_exact_consistency_function_with_an_exact_teacher_is_near_zero():
    mu, s, sigma_min = 0.5, 0.6, 0.01
    sigmas = cm.karras_sigmas(200, sigma_min, 80.0)
    x = mu + s * torch.randn(4000, 1, dtype=torch.float64)
    f_star, D = gaussian_f(mu, s, sigma_min), gaussian_denoiser(mu, s)
    exact = cm.cd_loss(f_star, f_star, D, x, sigmas, "heun", "l2", torch.Generator().manual_seed(0)).mean()
    wrong = cm.cd_loss(lambda x, sig: x, lambda x, sig: x, D, x, sigmas, "heun", "l2",
                       torch.Generator().manual_seed(0)).mean()  # the identity is not consistent
    assert exact < 1e-6 and wrong > 1e-2, (exact, wrong)


def test_cd_target_gets_no_gradient_and_follows_the_ema_of_the_student():
    student = tiny_model()
    target = tiny_model(seed=1).requires_grad_(False)
    D = gaussian_denoiser(0.0, 1.0)
    loss = cm.cd_loss(student, target, D, torch.randn(32, 2), cm.karras_sigmas(18), "euler").mean()
    loss.backward()
    assert all(p.grad is None for p in target.parameters())
    assert all(p.grad is not None for p in student.net.parameters())
    before = [p.clone() for p in target.parameters()]
    cm.update_target(target, student, 0.9)
    for b, t, m in zip(before, target.parameters(), student.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * m)  # theta- <- mu theta- + (1 - mu) theta


def test_ct_loss_uses_the_same_z_at_both_levels_the_weight_and_a_stopped_target():
    model = tiny_model()
    x, sigmas = torch.randn(16, 2), cm.karras_sigmas(11)
    probs = cm.level_probs(sigmas)
    torch.manual_seed(5)
    loss = cm.ct_loss(model, x, sigmas, probs, "pseudo-huber", torch.Generator().manual_seed(3))
    loss.mean().backward()
    grads = [p.grad.clone() for p in model.net.parameters()]
    model.zero_grad()
    n = torch.multinomial(probs.float(), 16, replacement=True, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(5)
    z = torch.randn_like(x)
    sig, sig_next = sigmas.float()[n], sigmas.float()[n + 1]
    target = model(x + sig[:, None] * z, sig).detach()
    by_hand = cm.distance(model(x + sig_next[:, None] * z, sig_next), target) / (sig_next - sig)
    torch.testing.assert_close(loss, by_hand)
    by_hand.mean().backward()
    for a, p in zip(grads, model.net.parameters()):
        torch.testing.assert_close(a, p.grad)


# ------------------------------------------------------------------------------------------- levels and distances
@given(st.integers(2, 60), st.floats(1e-3, 0.1), st.floats(5, 100), st.sampled_from([1.0, 3.0, 7.0]))
@settings(max_examples=15)
def test_karras_levels_are_uniform_in_sigma_to_the_1_over_rho(n, lo, hi, rho):
    sig = cm.karras_sigmas(n, lo, hi, rho)
    assert len(sig) == n and math.isclose(sig[0], lo) and math.isclose(sig[-1], hi) and (sig.diff() > 0).all()
    root = sig ** (1 / rho)
    torch.testing.assert_close(root.diff(), torch.full((n - 1,), (hi ** (1 / rho) - lo ** (1 / rho)) / (n - 1),
                                                        dtype=torch.float64))


@given(st.integers(1, 40), st.integers(0, 6), st.integers(1, 50), st.integers(0, 2000))
def test_the_ct_curriculum_doubles_every_k_prime_steps_up_to_s1(s0, doublings, every, k):
    s1 = s0 * 2 ** doublings
    N = cm.ct_levels(k, every, s0, s1)
    assert cm.ct_levels(0, every, s0, s1) == s0 + 1
    assert cm.ct_levels(k - k % every, every, s0, s1) == N  # constant between doublings
    assert cm.ct_levels(k + every, every, s0, s1) - 1 == min(2 * (N - 1), s1)  # doubles, capped at s1
    assert s0 + 1 <= N <= s1 + 1


@pytest.mark.parametrize("p_mean, p_std", [(cm.P_MEAN, cm.P_STD), (-2.5, 1.2)])
def test_level_probabilities_are_the_lognormal_mass_between_levels(p_mean, p_std):
    sigmas = cm.karras_sigmas(41)
    p = cm.level_probs(sigmas, p_mean, p_std)
    assert p.shape == (40,) and math.isclose(p.sum().item(), 1.0) and (p > 0).all()
    g = torch.Generator().manual_seed(0)
    log_sigma = p_mean + p_std * torch.randn(2_000_000, generator=g, dtype=torch.float64)
    inside = log_sigma[(log_sigma >= sigmas.log()[0]) & (log_sigma < sigmas.log()[-1])]
    counts = torch.bucketize(inside, sigmas.log(), right=True) - 1
    empirical = torch.bincount(counts, minlength=40).double() / len(inside)
    assert (empirical - p).abs().max() < 3e-3


@given(st.integers(2, 3000), st.floats(0.02, 0.05), st.floats(10, 100), st.integers(0, 999))
@settings(max_examples=15)
def test_pseudo_huber_is_quadratic_near_zero_and_linear_far_with_c_from_the_dimension(D, small, big, seed):
    u = torch.nn.functional.normalize(torch.randn(1, D, generator=torch.Generator().manual_seed(seed),
                                                  dtype=torch.float64), dim=1)
    c = 0.00054 * math.sqrt(D)
    zero = torch.zeros_like(u)
    near, far = cm.distance(small * c * u, zero), cm.distance(big * c * u, zero)
    assert math.isclose(near.item(), (small * c) ** 2 / (2 * c), rel_tol=2e-3)  # ||d||^2 / 2c
    assert math.isclose(far.item(), big * c - c, rel_tol=1 / big ** 2)  # ||d|| - c
    assert math.isclose(cm.distance(3 * u, zero, "l2").item(), 9 / D, rel_tol=1e-6)


def test_sampling_levels_and_time_axis():
    assert cm.sampling_sigmas(1) == [80.0] and cm.sampling_sigmas(2) == [80.0, 1.0]
    torch.testing.assert_close(torch.tensor(cm.sampling_sigmas(4)), torch.tensor([80.0, 1.0, 0.3 ** 0.5, 0.3]))
    assert cm.sampling_sigmas(3, sigma_min=0.5) == [80.0, 1.0, 0.75]  # above sigma_min
    model = tiny_model()
    t = model.time(torch.tensor([1e-3, 2e-3, 0.01, 1.0, 80.0, 200.0]))
    assert (t.diff() > 0).all() and t[1] < 0 < t[3] and t[-1] > 999  # extrapolated past the schedule's ends


# ------------------------------------------------------------------------------------------- commands
def cli(*args):
    """consistency.py's command line in this process: (exit code, stdout, stderr)."""
    return run_app(cm.app, *args)


@pytest.fixture(scope="module")
def grid_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("cm") / "teacher"
    return ddpm.train(data="grid25", steps=30, hidden=32, depth=1, batch_size=64, out=str(out), device="cpu")


TINY_CD = dict(data="grid25", batch_size=16, levels=6, device="cpu")


def test_points_cd_starts_from_the_teacher_and_sample(grid_teacher, tmp_path):
    path = cm.train(teacher=str(grid_teacher), steps=1, lr=1e-12, out=str(tmp_path / "cd"), **TINY_CD)
    ck, teacher = torch.load(path, weights_only=True), torch.load(grid_teacher, weights_only=True)
    assert ck["config"]["hidden"] == 32 and ck["config"]["depth"] == 1  # the teacher's network, not the defaults
    for k, v in teacher["ema"].items():
        if k.startswith("net."):
            torch.testing.assert_close(ck["models"]["target"][k], v, atol=1e-9, rtol=0)
    model = cm.load(path)
    alpha_bar = ddpm.load(grid_teacher).alpha_bar64
    assert math.isclose(model.sigma_min, ((1 - alpha_bar[0]) / alpha_bar[0]).sqrt().item(), rel_tol=1e-6)
    for steps in (1, 2):
        code, out, err = cli("sample", "--ckpt", path, "--n", 50, "--steps", steps, "--out", tmp_path / "s.npz")
        assert code == 0 and f"{steps} network call" in out, err
        x = np.load(tmp_path / "s.npz")["x"]
        assert x.shape == (50, 2) and np.isfinite(x).all()
    code, out, err = cli("sample", "--ckpt", path, "--n", 5, "--sigmas", "20,1.5,0.3", "--out", tmp_path / "s.png")
    assert code == 0 and "3 network call(s) each at sigma = 20, 1.5, 0.3" in out and (tmp_path / "s.png").is_file()
    import data
    assert model.box == pytest.approx(ddpm.points_box(data.load("grid25").x))  # saved by train

    model.forward = lambda x, sigma, y=None: 1e3 * x  # a consistency function whose x_0 lies far off the data
    for steps in (1, 2):  # every call's x_0 is clamped to the train set's box, so the samples lie in it
        x = model.normalize(cm.generate(model, 40, generator=torch.Generator().manual_seed(0), steps=steps))
        assert float(x.abs().max()) <= model.box + 1e-5
    model.box = None
    assert float(model.normalize(cm.generate(model, 40, generator=torch.Generator().manual_seed(0))).abs().max()) > 10


def test_cd_resume_is_exact_target_included(grid_teacher, tmp_path):
    kw = dict(teacher=str(grid_teacher), **TINY_CD)
    a = cm.train(steps=6, out=str(tmp_path / "a"), **kw)
    cm.train(steps=3, out=str(tmp_path / "b"), **kw)
    b = cm.train(steps=6, out=str(tmp_path / "b"), resume=True, **kw)
    A, B = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for part in ("model", "target"):
        assert all(torch.equal(A["models"][part][k], B["models"][part][k]) for k in A["models"][part]), part
    assert all(torch.equal(A["ema"][k], B["ema"][k]) for k in A["ema"])
    assert any(not torch.equal(A["models"]["target"][k], v) for k, v in A["models"]["model"].items())  # it lags

TINY_IMG = ["--ch", 8, "--ch-mult", "1,2", "--attn", "--batch-size", 8, "--device", "cpu"]


def test_ct_draws_its_levels_with_trains_p_mean_and_p_std(monkeypatch, tmp_path):
    seen = []
    level_probs = cm.level_probs
    monkeypatch.setattr(cm, "level_probs", lambda s, *a: seen.append(a) or level_probs(s, *a))
    cm.train(data="grid25", steps=2, hidden=8, depth=1, p_mean=-2.5, p_std=1.2, out=str(tmp_path / "ct"), device="cpu")
    assert seen == [(-2.5, 1.2)] * 2


@pytest.mark.filterwarnings("ignore:.*covariance is singular")
def test_mnist5k_ct_and_cd_train_and_sample(tmp_path):
    code, _, err = cli("train", "--steps", 2, *TINY_IMG, "--out", tmp_path / "ct")
    assert code == 0 and (tmp_path / "ct" / "samples.png").is_file(), err
    teacher = ddpm.train(steps=2, ch=8, ch_mult="1,2", attn=False, batch_size=8, out=str(tmp_path / "t"),
                         device="cpu")
    code, _, err = cli("train", "--teacher", teacher, "--steps", 2, "--batch-size", 8, "--device", "cpu",
                       "--out", tmp_path / "cd")
    assert code == 0, err
    for run in ("ct", "cd"):
        code, out, err = cli("sample", "--ckpt", tmp_path / run / "ckpt.pt", "--n", 4, "--steps", 2,
                             "--out", tmp_path / "s.npz")
        assert code == 0, err
        x = np.load(tmp_path / "s.npz")["x"]
        assert x.shape == (4, 1, 28, 28) and x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("args", [
    ["sample", "--steps", 0], ["sample", "--n", -1], ["sample", "--sigmas", "1,2"], ["sample", "--sigmas", "500"],
    ["sample", "--sigmas", "a,b"], ["train", "--data", "grid25", "--loss", "lpips"],
    ["train", "--data", "grid25", "--solver", "rk4"], ["train", "--data", "grid25", "--levels", 1],
    ["train", "--data", "grid25", "--target-decay", 1.0], ["train", "--data", "grid25", "--ct-start", 0],
    ["train", "--data", "grid25", "--sigma-min", 0], ["train", "--data", "grid25", "--p-std", 0], ["train", "--data", "grid25", "--teacher", "nope.pt"],
    ["train", "--data", "moons", "--teacher", "TEACHER"], ["train", "--data", "grid25", "--teacher", "CORRUPT"],
])
def test_bad_input_is_one_line_and_exit_2(args, grid_teacher, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    args = [{"TEACHER": grid_teacher, "CORRUPT": corrupt}.get(a, a) for a in args]
    if args[0] == "train":
        extra = ["--out", tmp_path / "run", "--steps", 1]
    else:
        extra = ["--ckpt", cm.train(teacher=str(grid_teacher), steps=1, out=str(tmp_path / "cd"), **TINY_CD)]
    code, _, err = cli(*args, *extra)
    assert_one_line_error(subprocess.CompletedProcess(args, code, "", err))
