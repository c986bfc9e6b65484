"""Mutation check of the test suite: break one formula on purpose, run the tests that should notice, restore.

Each mutant replaces one exact snippet of a source file (it must occur exactly once) in a scratch copy of the
repository, so the working tree is never touched and the check can run beside other work. A mutant is *caught* when
its tests fail; a *survivor* is a formula the suite does not pin.

    python scripts/mutants.py                      # every mutant below (about 5 minutes on 2 cores)
    python scripts/mutants.py --only ddpm          # the mutants whose name starts with "ddpm"
    python scripts/mutants.py --rev HEAD           # the last commit, not the working tree
    python scripts/mutants.py --list
    python scripts/mutants.py --file ddpm.py --find "a * b" --replace "a + b" --tests tests/test_ddpm.py  # ad hoc
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name: (file, original snippet, mutated snippet, tests that must fail)
MUTANTS: dict[str, tuple[str, str, str, str]] = {}


def add(name: str, file: str, find: str, replace: str, tests: str) -> None:
    MUTANTS[name] = (file, find, replace, tests)


# ----------------------------------------------------------------------------------------------------- the mutants
# One block per file; each mutant names the tests that must catch it.
# same seed, same model (the contract test runs each file twice from different global RNG states)
SAME = "tests/test_contract.py::test_same_seed_same_model_and_resume_is_exact"
for f in ("vae", "cfg"):
    add(f"{f}-seed-after-build", f"{f}.py", "    training.seed_everything(seed)  # the initial weights depend on --seed alone\n", "",
        f"{SAME}[{f}]")
add("training-traceback-on-bad-steps", "training.py", 'check(steps > 0, f"--steps must be positive, got {steps}")',
    "assert steps > 0", "tests/test_contract.py::test_bad_input_is_one_line_and_exit_2[vae]")
add("training-resume-skips-optimizer", "training.py", "            o.load_state_dict(ck[\"opts\"][k])\n", "            pass\n",
    f"{SAME}[ddpm]")
EMA_T = "tests/test_data_training.py::test_ema_is_the_warmed_up_average_of_the_weights_after_each_step"
add("training-ema-no-warmup", "training.py", "d = min(decay, (1 + k) / (10 + k))", "d = decay", EMA_T)
add("training-ema-lerp-weight", "training.py", "torch._foreach_lerp_(avg, cur, 1 - d)", "torch._foreach_lerp_(avg, cur, d)", EMA_T)
add("training-ema-count-stuck", "training.py", "                        self.ema_n += 1\n", "", EMA_T)
add("training-ema-count-not-resumed", "training.py", '            self.ema_n = int(ck["ema_n"])\n', "", EMA_T)
# issue 20: the EMA's first update copies (its own foreach update now), the progress bar every 0.25 s, not per step
add("training-ema-first-not-copied", "training.py", "            if self.ema_n == 0:\n                torch._foreach_copy_(avg, cur)\n            else:\n                self._ema_avg(avg, cur)\n",
    "            self._ema_avg(avg, cur)\n", "tests/test_data_training.py::test_the_first_ema_update_copies_the_weights_and_counts_on_the_host")
add("training-progress-every-step", "training.py", "if time.monotonic() - shown > 0.25 or s + 1 == self.steps or interrupted:",
    "if True:", "tests/test_data_training.py::test_progress_bar_is_redrawn_a_few_times_a_second_not_every_step")

# flow.py's point path on [B, d] (issue 20): the LU matrix as a linear map, ActNorm over the batch, the per-kind defaults
T_PT = "tests/test_flow.py::test_point_layers_are_the_1x1_convolution_layers_on_b_d_1_1"
add("flow-point-mix-transposed", "flow.py", "return (F.linear(x, w) if x.dim() == 2", "return (F.linear(x, w.T) if x.dim() == 2", T_PT)
add("flow-point-mix-inverse-transposed", "flow.py", "return F.linear(y, w_inv) if y.dim() == 2", "return F.linear(y, w_inv.T) if y.dim() == 2", T_PT)
add("flow-actnorm-stats-over-features", "flow.py", "over = (0,) + tuple(range(2, x.dim()))  # batch and pixels", "over = tuple(range(x.dim()))", T_PT)
add("flow-actnorm-logdet-pixels", "flow.py", "log_det = x[0, 0].numel() * self.log_s.sum()  # H W (1 for points)",
    "log_det = self.log_s.sum()  # H W (1 for points)", "tests/test_flow.py::test_log_det_equals_log_abs_det_of_autograd_jacobian")
add("flow-point-label-emb-dropped", "flow.py", "out = self.net[1:](self.net[0](x_masked) + e.view(*e.shape, *[1] * (x_masked.dim() - 2)))",
    "out = self.net[1:](self.net[0](x_masked) + (e.view(*e.shape, 1, 1) if x_masked.dim() == 4 else 0))",
    "tests/test_flow.py::test_conditional_flow_uses_the_label_in_every_coupling_and_the_base")
add("flow-defaults-override-options", "flow.py", "config[k] = v if config[k] is None else config[k]", "config[k] = v",
    "tests/test_flow.py::test_point_and_image_defaults_and_explicit_options_win")
add("flow-point-layers-ignore-switches", "flow.py", "layers = ([ActNorm(C, ndim)] if actnorm else []) + ([InvConv1x1(C)] if C > 1 and lu else [])",
    "layers = [ActNorm(C, ndim)] + ([InvConv1x1(C)] if C > 1 else [])",
    "tests/test_flow.py::test_point_flow_variants_invert_and_log_det_is_the_jacobians")


# gan.py: the gradient penalty at the interpolates, per packed output; WGAN-GP's own defaults
GP = "tests/test_gan.py::test_gradient_penalty_is_taken_at_the_interpolates"
add("gan-gp-interpolate-swapped", "gan.py", "eps * real + (1 - eps) * fake.detach()", "eps * fake.detach() + (1 - eps) * real", GP)
add("gan-gp-at-real-points", "gan.py", "eps * real + (1 - eps) * fake.detach()", "real", GP)
add("gan-gp-squared-norm", "gan.py", "(grad.norm(dim=1) - 1).pow(2).mean()", "(grad.pow(2).sum(1) - 1).pow(2).mean()", GP)
add("gan-gp-norm-per-sample", "gan.py", "grad = grad.reshape(outputs, -1)  # [B, ...] -> [outputs, k * dims of one sample]",
    "grad = grad.reshape(grad.shape[0], -1)", GP)
add("gan-wgan-gp-paper-defaults-off", "gan.py", 'WGAN_GP = dict(beta1=0.0, beta2=0.9, n_critic=5, r1=0.0)',
    'WGAN_GP = dict(r1=0.0)', "tests/test_gan.py::test_wgan_gp_takes_the_papers_n_critic_and_adam_betas_unless_set")

# ebm.py: the grid likelihood in data space, the base measure, the box check
EBM_NLL = "tests/test_ebm.py::test_nll_is_the_gaussians_in_data_space"
BOX = "tests/test_ebm.py::test_mass_outside_the_box_is_measured_and_warned"
MALA_T = "tests/test_ebm.py::test_mala_keeps_a_gaussian_exactly_where_ula_inflates_it"
MALA_STEP_T = "tests/test_ebm.py::test_mala_is_the_stated_step"
add("ebm-mala-no-proposal-correction", "ebm.py", "log_alpha = E - E_y + log_q(x, y, grad_y) - log_q(y, x, grad)", "log_alpha = E - E_y", f"{MALA_T} {MALA_STEP_T}")
add("ebm-mala-correction-swapped", "ebm.py", "log_alpha = E - E_y + log_q(x, y, grad_y) - log_q(y, x, grad)", "log_alpha = E - E_y + log_q(y, x, grad) - log_q(x, y, grad_y)", f"{MALA_T} {MALA_STEP_T}")
add("ebm-mala-accept-all", "ebm.py", "accept = u.log() < log_alpha  # [B]", "accept = u.log() < float('inf')  # [B]", f"{MALA_T} {MALA_STEP_T}")
add("ebm-mala-stale-gradient", "ebm.py", "torch.where(keep, grad_y, grad)", "grad", MALA_T)
add("ebm-mala-q-variance", "ebm.py", ".flatten(1).sum(1) / (4 * h)", ".flatten(1).sum(1) / (2 * h)", f"{MALA_T} {MALA_STEP_T}")
add("ebm-nll-no-log-jacobian", "ebm.py", "return self(self.normalize(x)) + log_z + self.scale.log().sum()",
    "return self(self.normalize(x)) + log_z", EBM_NLL)
add("ebm-nll-log-jacobian-sign", "ebm.py", "return self(self.normalize(x)) + log_z + self.scale.log().sum()",
    "return self(self.normalize(x)) + log_z - self.scale.log().sum()", EBM_NLL)
add("ebm-base-measure-factor", "ebm.py", "(x ** 2).flatten(1).sum(1) / (2 * self.base_std ** 2)",
    "(x ** 2).flatten(1).sum(1) / (self.base_std ** 2)", EBM_NLL)
add("ebm-normalize-inverted", "ebm.py", "return (x - self.shift) / self.scale", "return (x - self.shift) * self.scale", EBM_NLL)
add("ebm-cell-area", "ebm.py", "torch.cartesian_prod(u, u)) + 2 * math.log(h)).float()",
    "torch.cartesian_prod(u, u)) + math.log(h)).float()", EBM_NLL)
add("ebm-ring-mask", "ebm.py", "ring = grid[grid.abs().amax(1) > box]", "ring = grid[grid.abs().amin(1) > box]", BOX)
add("ebm-ring-cell-area", "ebm.py", "log_ring = _sum_exp_neg_E(energy_fn, ring) + 2 * math.log(h)",
    "log_ring = _sum_exp_neg_E(energy_fn, ring) + math.log(h)", BOX)
add("ebm-no-warning", "ebm.py", "        if check and (lost := mass_outside(", "        if False and (lost := mass_outside(", BOX)

# ddpm.py: units, the prior and decoder terms, the bound two-sided (Monte Carlo of its definition), DDIM's sigma,
# v-prediction and the min-SNR weights, the stratified estimator, the float64 schedule
add("ddpm-bpd-no-ln2", "ddpm.py", "return nats / (D * math.log(2))", "return nats / D", "tests/test_ddpm.py::test_bits_per_dim_hand_values")
add("ddpm-bpd-log256", "ddpm.py", "return nats / (D * math.log(2))", "return nats / (D * math.log(256))", "tests/test_ddpm.py::test_bits_per_dim_hand_values")
add("ddpm-prior-m-not-squared", "ddpm.py", "m2 = alpha_bar_T * x_0 ** 2", "m2 = alpha_bar_T.sqrt() * x_0 ** 2", "tests/test_ddpm.py::test_prior_term_is_kl_to_standard_normal")
add("ddpm-prior-logv-sign", "ddpm.py", "(-alpha_bar_T - torch.log1p(-alpha_bar_T))", "(-alpha_bar_T + torch.log1p(-alpha_bar_T))", "tests/test_ddpm.py::test_prior_term_is_kl_to_standard_normal")
add("ddpm-prior-no-half", "ddpm.py", "return 0.5 * (m2.flatten(1).sum(1)", "return (m2.flatten(1).sum(1)", "tests/test_ddpm.py::test_prior_term_hand_value")
add("ddpm-prior-dropped", "ddpm.py", "        return L + L_T\n", "        return L\n", "tests/test_ddpm.py::test_vlb_terms_by_hand")
add("ddpm-prior-at-ab1", "ddpm.py", "L_T = prior_kl(x0, ab[-1])", "L_T = prior_kl(x0, ab[-2])", "tests/test_ddpm.py::test_vlb_terms_by_hand")
add("ddpm-ddim-sigma-no-ratio", "ddpm.py", "(1 - alpha_bar_t / alpha_bar_s)).sqrt()", "(1 - alpha_bar_t)).sqrt()", "tests/test_ddpm.py::test_ddim_sigma_is_eta_times_posterior_std")
add("ddpm-ddim-sigma-eta-squared", "ddpm.py", "return eta * ((1 - alpha_bar_s)", "return eta ** 2 * ((1 - alpha_bar_s)", "tests/test_ddpm.py::test_ddim_sigma_is_eta_times_posterior_std")
add("ddpm-ddim-sigma-flipped", "ddpm.py", "((1 - alpha_bar_s) / (1 - alpha_bar_t) *", "((1 - alpha_bar_t) / (1 - alpha_bar_s) *", "tests/test_ddpm.py::test_ddim_sigma_eta1_consecutive_is_beta_tilde")
add("ddpm-ancestral-is-deterministic", "ddpm.py", "return sample_ddim(eps_fn, alpha_bar, x_T, ts, generator, x0_clip, eta=1.0)", "return sample_ddim(eps_fn, alpha_bar, x_T, ts, generator, x0_clip)", "tests/test_ddpm.py::test_stochastic_step_mean_and_spread")
add("ddpm-ddim-dir-no-sigma", "ddpm.py", "dir_xt = (1 - ab_s - sigma ** 2)", "dir_xt = (1 - ab_s)", "tests/test_ddpm.py::test_stochastic_step_mean_and_spread")
add("ddpm-ddim-noise-variance", "ddpm.py", "x = x + sigma * torch.randn(", "x = x + sigma ** 2 * torch.randn(", "tests/test_ddpm.py::test_stochastic_step_mean_and_spread")
add("ddpm-v-target-sign", "ddpm.py", "target = ab_.sqrt() * eps - (1 - ab_).sqrt() * x_0", "target = ab_.sqrt() * eps + (1 - ab_).sqrt() * x_0", "tests/test_ddpm.py::test_loss_target_and_min_snr_weight")
add("ddpm-v-target-swapped", "ddpm.py", "target = ab_.sqrt() * eps - (1 - ab_).sqrt() * x_0", "target = (1 - ab_).sqrt() * eps - ab_.sqrt() * x_0", "tests/test_ddpm.py::test_loss_target_and_min_snr_weight")
add("ddpm-v-to-eps-sign", "ddpm.py", "return ab.sqrt() * out + (1 - ab).sqrt() * x_t", "return ab.sqrt() * out - (1 - ab).sqrt() * x_t", "tests/test_ddpm.py::test_v_prediction_converts_to_eps")
add("ddpm-v-to-eps-swapped", "ddpm.py", "return ab.sqrt() * out + (1 - ab).sqrt() * x_t", "return (1 - ab).sqrt() * out + ab.sqrt() * x_t", "tests/test_ddpm.py::test_v_prediction_converts_to_eps")
add('ddpm-minsnr-v-as-eps', 'ddpm.py', '(snr + 1 if self.prediction == "v" else snr)', '(snr if self.prediction == "v" else snr)', 'tests/test_ddpm.py::test_loss_target_and_min_snr_weight')
add('ddpm-minsnr-eps-as-v', 'ddpm.py', '(snr + 1 if self.prediction == "v" else snr)', '(snr + 1 if self.prediction == "v" else snr + 1)', 'tests/test_ddpm.py::test_loss_target_and_min_snr_weight')
add("ddpm-minsnr-clamp-min", "ddpm.py", "snr.clamp(max=self.min_snr)", "snr.clamp(min=self.min_snr)", "tests/test_ddpm.py::test_loss_target_and_min_snr_weight")
add("ddpm-minsnr-snr-inverted", "ddpm.py", "snr = ab / (1 - ab)", "snr = (1 - ab) / ab", "tests/test_ddpm.py::test_loss_target_and_min_snr_weight")
add("ddpm-lognormal-mean-sign", "ddpm.py", "torch.searchsorted(log_sigma, self.p_mean + 1.2 *", "torch.searchsorted(log_sigma, -self.p_mean + 1.2 *", "tests/test_ddpm.py::test_lognormal_t_sampling_matches_edm_noise_levels")
add("ddpm-lognormal-std", "ddpm.py", "torch.searchsorted(log_sigma, self.p_mean + 1.2 *", "torch.searchsorted(log_sigma, self.p_mean + 2.0 *", "tests/test_ddpm.py::test_lognormal_t_sampling_matches_edm_noise_levels")
add("ddpm-lognormal-mean-fixed", "ddpm.py", "torch.searchsorted(log_sigma, self.p_mean + 1.2 *", "torch.searchsorted(log_sigma, -1.2 + 1.2 *", "tests/test_ddpm.py::test_lognormal_t_sampling_matches_edm_noise_levels")
add("ddpm-t-uniform-inverted", "ddpm.py", "uniform = torch.rand(x_0.shape[0], device=x_0.device) < self.t_uniform", "uniform = torch.rand(x_0.shape[0], device=x_0.device) > self.t_uniform", "tests/test_ddpm.py::test_lognormal_t_sampling_matches_edm_noise_levels")
add("ddpm-t-uniform-not-saved", "ddpm.py", "                 config.get(\"t_uniform\", 0.0))", "                 0.0)", "tests/test_ddpm.py::test_t_uniform_is_saved_and_rebuilt")
add("ddpm-lognormal-sigma-squared", "ddpm.py", "log_sigma = 0.5 * torch.log((1 - ab) / ab)", "log_sigma = torch.log((1 - ab) / ab)", "tests/test_ddpm.py::test_lognormal_t_sampling_matches_edm_noise_levels")
add("ddpm-decoder-bin-width-upper", "ddpm.py", "normal.cdf(x_0 + 1 / 255)", "normal.cdf(x_0 + 2 / 255)", "tests/test_ddpm.py::test_discretized_decoder_bins")
add("ddpm-decoder-bin-width-lower", "ddpm.py", "normal.cdf(x_0 - 1 / 255)", "normal.cdf(x_0 - 0.5 / 255)", "tests/test_ddpm.py::test_discretized_decoder_bins")
add("ddpm-decoder-no-upper-tail", "ddpm.py", "torch.where(x_0 > 0.999,", "torch.where(x_0 > 1.5,", "tests/test_ddpm.py::test_discretized_decoder_bins")
add("ddpm-decoder-no-lower-tail", "ddpm.py", "torch.where(x_0 < -0.999,", "torch.where(x_0 < -1.5,", "tests/test_ddpm.py::test_discretized_decoder_bins")
add("ddpm-decoder-tail-too-wide", "ddpm.py", "torch.where(x_0 > 0.999,", "torch.where(x_0 > 0.99,", "tests/test_ddpm.py::test_discretized_decoder_bins")
add("ddpm-strata-weight", "ddpm.py", "(T - 1) / n_t", "T / n_t", "tests/test_ddpm.py::test_stratified_sum_over_t_is_unbiased")
add("ddpm-strata-midpoint", "ddpm.py", "u * (edges[1:] - edges[:-1])", "0.5 * (edges[1:] - edges[:-1])", "tests/test_ddpm.py::test_stratified_sum_over_t_is_unbiased")
add("ddpm-strata-edges", "ddpm.py", "edges = torch.linspace(1, T, n_t + 1)", "edges = torch.linspace(1, T - 1, n_t + 1)", "tests/test_ddpm.py::test_stratified_sum_over_t_is_unbiased")
add("ddpm-strata-no-L0", "ddpm.py", "ts, weight = [0] + (edges", "ts, weight = (edges", "tests/test_ddpm.py::test_stratified_sum_over_t_is_unbiased")
add("ddpm-vlb-kl-factor", "ddpm.py", ".flatten(1).sum(1) / (2 * var)", ".flatten(1).sum(1) / var", "tests/test_ddpm.py::test_vlb_equals_monte_carlo_of_its_definition")
add("ddpm-vlb-decoder-std", "ddpm.py", "decoder_nll(x0, x0_hat, betas[0].sqrt(), discrete)", "decoder_nll(x0, x0_hat, betas[1].sqrt(), discrete)", "tests/test_ddpm.py::test_vlb_equals_monte_carlo_of_its_definition")
add("ddpm-vlb-xt-variance", "ddpm.py", "x_t = ab[t_].sqrt() * x0 + (1 - ab[t_]).sqrt() * eps", "x_t = ab[t_].sqrt() * x0 + (1 - ab[t_]) * eps", "tests/test_ddpm.py::test_vlb_equals_monte_carlo_of_its_definition")
add("ddpm-x0-from-eps", "ddpm.py", "return (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()", "return (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar", "tests/test_ddpm.py::test_vlb_equals_monte_carlo_of_its_definition")
add("ddpm-vlb-too-tight", "ddpm.py", "mu_p, _ = posterior(ab[t_], ab_s, x_t, x0_hat)", "mu_p, _ = posterior(ab[t_], ab_s, x_t, 0.5 * (x0 + x0_hat))", "tests/test_ddpm.py::test_vlb_equals_monte_carlo_of_its_definition")
add("ddpm-vlb-float32-schedule", "ddpm.py", "betas, ab = self.betas64.to(x_0.device), self.alpha_bar64.to(x_0.device)", "betas, ab = self.betas.double(), self.alpha_bar.double()", "tests/test_ddpm.py::test_vlb_of_float32_model_keeps_float64_schedule")
KARRAS = "tests/test_ddpm.py::test_karras_spacing_is_eq5_rounded_to_the_nearest_step"
add("ddpm-karras-rho-ignored", "ddpm.py", "grid = rho * np.log(np.linspace(s_max, s_min, steps))", "grid = np.log(np.linspace(s_max ** rho, s_min ** rho, steps))", KARRAS)
add("ddpm-karras-root-not-applied", "ddpm.py", "np.exp(log_sigma[-1] / rho), np.exp(log_sigma[0] / rho)", "np.exp(log_sigma[-1]), np.exp(log_sigma[0])", KARRAS)
add("ddpm-karras-shifted", "ddpm.py", "grid = rho * np.log(np.linspace(s_max, s_min, steps))", "grid = rho * np.log(np.linspace(s_max, s_min, steps + 1)[1:])", KARRAS)
add("ddpm-karras-is-lambda", "ddpm.py", '    if spacing == "karras":  # eq. 5', '    if spacing == "no-such":  # eq. 5', KARRAS)
AUTO = 'return "karras" if len(shape) == 3 and method == "dpm++2m" else "lambda"'
add("ddpm-images-default-spacing-lambda", "ddpm.py", AUTO, 'return "lambda"', "tests/test_ddpm.py::test_generate_images_clip_and_refusals")
add("ddpm-points-default-spacing-karras", "ddpm.py", AUTO, 'return "karras" if method == "dpm++2m" else "lambda"', "tests/test_ddpm.py::test_generate_is_x_T_then_sample_then_denormalize")
add("ddpm-ddim-default-spacing-karras", "ddpm.py", AUTO, 'return "karras" if len(shape) == 3 else "lambda"', "tests/test_ddpm.py::test_generate_images_clip_and_refusals")


# fm.py: the path and target, t sampling, the OT coupling, the three ODE steps, the likelihood (trace, Hutchinson,
# direction, prior, dequantization, bits/dim, data-space Jacobian), straightness, guidance, label dropout, reflow
T_FM = "tests/test_fm.py"
LOSS = f"{T_FM}::test_loss_is_the_straight_path_target"
ORDER = f"{T_FM}::test_error_falls_2x_for_euler_and_4x_for_heun_when_steps_double"
BYHAND = f"{T_FM}::test_one_step_on_a_linear_ode_by_hand"
CALLS_T = f"{T_FM}::test_network_calls_are_counted"
GAUSS_LL = f"{T_FM}::test_log_likelihood_of_the_exact_velocity_is_the_gaussian_density"
HUTCH = f"{T_FM}::test_divergence_exact_trace_and_hutchinson_mean_over_every_probe"
HUTCH_LL = f"{T_FM}::test_hutchinson_log_likelihood_is_unbiased"
add("fm-path-swapped", "fm.py", "return (1 - t) * x_0 + t * x_1", "return t * x_0 + (1 - t) * x_1", LOSS)
add("fm-target-sign", "fm.py", "return x_1 - x_0\n", "return x_0 - x_1\n", LOSS)
add("fm-time-scale", "fm.py", "return self.net(x, TIME_SCALE * t, y)", "return self.net(x, t, y)", LOSS)
add("fm-loss-sum-dims", "fm.py", "target(x_0, x_1)) ** 2).flatten(1).mean(1), t", "target(x_0, x_1)) ** 2).flatten(1).sum(1), t", LOSS)
add("fm-logit-normal-scale", "fm.py", "torch.sigmoid(m + s * torch.randn(n,", "torch.sigmoid(m + 2 * torch.randn(n,", f"{T_FM}::test_t_sampling_distributions")
add("fm-logit-normal-no-mean", "fm.py", "torch.sigmoid(m + s * torch.randn(n,", "torch.sigmoid(s * torch.randn(n,", f"{T_FM}::test_t_sampling_distributions")
add("fm-t-mean-not-rebuilt", "fm.py", 'config.get("t_mean", 0.0), config.get("t_std", 1.0), config.get("t_uniform", 0.0))', '0.0, config.get("t_std", 1.0), config.get("t_uniform", 0.0))', f"{T_FM}::test_bench_toy_recipe_is_saved_and_rebuilt")
add("fm-t-uniform-inverted", "fm.py", "mix = torch.rand(n, generator=generator, device=where) < uniform", "mix = torch.rand(n, generator=generator, device=where) > uniform", f"{T_FM}::test_t_sampling_distributions")
add("fm-t-uniform-not-rebuilt", "fm.py", 'config.get("t_std", 1.0), config.get("t_uniform", 0.0))', 'config.get("t_std", 1.0), 0.0)', f"{T_FM}::test_bench_toy_recipe_is_saved_and_rebuilt")
add("fm-loss-ignores-t-uniform", "fm.py", "                         uniform=self.t_uniform)", "                         uniform=0.0)", f"{T_FM}::test_t_sampling_distributions")
add("fm-loss-ignores-t-mean", "fm.py", "m=self.t_mean, s=self.t_std,", "s=self.t_std,", f"{T_FM}::test_t_sampling_distributions")
add("fm-ot-maximize", "fm.py", "linear_sum_assignment(cost.cpu().numpy())", "linear_sum_assignment(cost.cpu().numpy(), maximize=True)", f"{T_FM}::test_ot_coupling_is_the_optimal_permutation")
add("fm-ot-unsquared", "fm.py", "x_0.flatten(1).double()) ** 2", "x_0.flatten(1).double())", f"{T_FM}::test_ot_coupling_is_the_optimal_permutation")
add("fm-ot-not-applied", "fm.py", 'if self.coupling == "ot":', "if False:", f"{T_FM}::test_loss_draws_noise_then_couples_then_t")
add("fm-euler-end-slope", "fm.py", "return x + h * f(x, t)\n", "return x + h * f(x, t + h)\n", f"{BYHAND} {CALLS_T}")
add("fm-midpoint-full-step", "fm.py", "return x + h * f(x + h / 2 * f(x, t), t + h / 2)", "return x + h * f(x + h * f(x, t), t + h / 2)", BYHAND)
add("fm-midpoint-time", "fm.py", "return x + h * f(x + h / 2 * f(x, t), t + h / 2)", "return x + h * f(x + h / 2 * f(x, t), t)", f"{ORDER} {CALLS_T}")
add("fm-heun-corrector-only", "fm.py", "return x + h / 2 * (d1 + d2)", "return x + h * d2", BYHAND)
add("fm-heun-predictor-time", "fm.py", "d2 = f(x + h * d1, t + h)", "d2 = f(x + h * d1, t)", f"{ORDER} {CALLS_T}")
add("fm-heun-calls", "fm.py", 'CALLS = {"euler": 1, "midpoint": 2, "heun": 2}', 'CALLS = {"euler": 1, "midpoint": 2, "heun": 1}', CALLS_T)
add("fm-exact-divergence-index", "fm.py", "div = div + g.flatten(1)[:, i]", "div = div + g.flatten(1)[:, 0]", HUTCH)
add("fm-hutchinson-no-probe", "fm.py", "(eps_J * eps).flatten(1).sum(1)", "eps_J.flatten(1).sum(1)", f"{HUTCH} {HUTCH_LL}")
add("fm-hutchinson-not-rademacher", "fm.py", "eps = (2.0 * eps - 1).to(x_1.device, dtype)", "eps = (1.0 * eps).to(x_1.device, dtype)", HUTCH_LL)
add("fm-llh-divergence-sign", "fm.py", "- 0.5 * D * math.log(2 * math.pi) + l_0", "- 0.5 * D * math.log(2 * math.pi) - l_0", GAUSS_LL)
add("fm-llh-forward-in-time", "fm.py", "z = integrate(f, z, time_grid(steps, spacing)[::-1], method)", "z = integrate(f, z, time_grid(steps, spacing), method)", GAUSS_LL)
add("fm-logit-grid-one-sided", "fm.py", "torch.linspace(-lam, lam, steps - 1,", "torch.linspace(-lam, 0.0, steps - 1,", f"{T_FM}::test_time_grids")
add("fm-llh-prior-per-example", "fm.py", "- 0.5 * D * math.log(2 * math.pi) + l_0", "- 0.5 * math.log(2 * math.pi) + l_0", GAUSS_LL)
add("fm-dequantize-not-centred", "fm.py", "return x + (u - 0.5) / 127.5", "return x + u / 127.5", f"{T_FM}::test_dequantization_and_bits_per_dim_are_flows_protocol")
add("fm-bpd-bin-width", "fm.py", "(-log_p_z + D * math.log(127.5))", "(-log_p_z + D * math.log(256))", f"{T_FM}::test_dequantization_and_bits_per_dim_are_flows_protocol")
add("fm-points-jacobian-sign", "fm.py", "float(-logp.mean() + model.scale.log().sum().cpu())", "float(-logp.mean() - model.scale.log().sum().cpu())", f"{T_FM}::test_likelihood_in_data_space")
add("fm-images-not-dequantized", "fm.py", "z = dequantize(xb, g).to(dev) if images", "z = xb.to(dev) if images", f"{T_FM}::test_likelihood_in_data_space")
add("fm-straightness-no-spread", "fm.py", "return float((sq - dist).mean()), float(dist.mean())", "return float(sq.mean()), float(dist.mean())", f"{T_FM}::test_straightness_against_the_gaussian_flow")
add("fm-guidance-wrong-null", "fm.py", "nets.guided(model.velocity, x, t, y_c, s, model.num_classes)", "nets.guided(model.velocity, x, t, y_c, s, model.num_classes - 1)", f"{T_FM}::test_guided_velocity_mixes_conditional_and_null")
add("fm-label-dropout-inverted", "fm.py", "torch.rand(y.shape, device=y.device) < p_uncond", "torch.rand(y.shape, device=y.device) > p_uncond", f"{T_FM}::test_label_dropout_rate_is_p_uncond")
add("fm-generate-x0-before-labels", "fm.py", "        y_b = (torch.randint(C, (b,), generator=generator, device=where) if y is None else y[i:i + b]) if C else None\n        x_0 = torch.randn((b, *model.shape), generator=generator, device=where).to(dev)\n",
    "        x_0 = torch.randn((b, *model.shape), generator=generator, device=where).to(dev)\n        y_b = (torch.randint(C, (b,), generator=generator, device=where) if y is None else y[i:i + b]) if C else None\n",
    f"{T_FM}::test_generate_draws_labels_then_x_0_per_batch_and_refuses_bad_labels")
add("fm-reflow-fresh-noise", "fm.py", "x_0, x_1 = (x[:, 0], x[:, 1]) if pairs", "x_0, x_1 = (None, x[:, 1]) if pairs", f"{T_FM}::test_points_sample_nll_reflow")
add("fm-reflow-from-scratch", "fm.py", "    model.load_state_dict(base.state_dict())  # Liu et al. start the k+1-th flow from the k-th\n", "", f"{T_FM}::test_points_sample_nll_reflow")
add("fm-seed-after-build", "fm.py", "    training.seed_everything(seed)  # the initial weights depend on --seed alone\n", "", f"{SAME}[fm]")
add("fm-train-not-dequantized", "fm.py", "(None, dequantize(x) if images else model.normalize(x))", "(None, x if images else model.normalize(x))", f"{T_FM}::test_mnist5k_train_sample_nll_reflow_and_labels")

# consistency.py: the boundary condition and scalings, the teacher's parameterization and time axis, the Karras levels,
# the CT curriculum and level probabilities, the teacher's ODE step (Euler = DDIM, Heun), the sampler's re-noising,
# pseudo-Huber, CT's shared z, weight and stop-gradient, CD's step direction and EMA target, the start from the teacher
T_CM = "tests/test_consistency.py"
BOUND = f"{T_CM}::test_boundary_condition_holds_exactly_for_any_network"
PARAM = f"{T_CM}::test_the_parameterization_is_ddpm_v_prediction_so_a_teacher_initialized_student_is_its_denoiser"
GAUSS_CM = f"{T_CM}::test_exact_consistency_function_samples_the_data_in_one_and_two_steps"
TRAJ = f"{T_CM}::test_teacher_steps_follow_the_exact_gaussian_trajectory"
DDIM_CM = f"{T_CM}::test_the_euler_teacher_step_is_ddpms_ddim_step_between_the_same_levels"
CT_T = f"{T_CM}::test_ct_loss_uses_the_same_z_at_both_levels_the_weight_and_a_stopped_target"
CD_ZERO = f"{T_CM}::test_cd_loss_of_the_exact_consistency_function_with_an_exact_teacher_is_near_zero"
add("cm-c-skip-unshifted", "consistency.py", "c_skip = 1 / (1 + ((sigma - sigma_min) / sigma_data) ** 2)", "c_skip = 1 / (1 + (sigma / sigma_data) ** 2)", BOUND)
add("cm-c-out-unshifted", "consistency.py", "c_out = sigma_data * (sigma - sigma_min) /", "c_out = sigma_data * sigma /", BOUND)
add("cm-c-in-unit-sigma-data", "consistency.py", "return c_skip, c_out, 1 / (sigma ** 2 + sigma_data ** 2).sqrt()", "return c_skip, c_out, 1 / (sigma ** 2 + 1).sqrt()", BOUND)
add("cm-network-sign", "consistency.py", "F = -self.net(c_in * x, self.time(sigma), y)", "F = self.net(c_in * x, self.time(sigma), y)", PARAM)
add("cm-time-off-by-one", "consistency.py", "return ((i - 1) + (log_sigma", "return (i + (log_sigma", f"{PARAM} {T_CM}::test_sampling_levels_and_time_axis")
add("cm-karras-rho", "consistency.py", "i * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho))) ** rho", "i * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho))) ** (rho - 1)", f"{T_CM}::test_karras_levels_are_uniform_in_sigma_to_the_1_over_rho")
add("cm-ct-levels-uncapped", "consistency.py", "return min(s0 * 2 ** (k // double_every), s1) + 1", "return s0 * 2 ** (k // double_every) + 1", f"{T_CM}::test_the_ct_curriculum_doubles_every_k_prime_steps_up_to_s1")
add("cm-ct-p-mean-not-passed", "consistency.py", "level_probs(ct_sigmas, p_mean, p_std), loss)", "level_probs(ct_sigmas), loss)", f"{T_CM}::test_ct_draws_its_levels_with_trains_p_mean_and_p_std")
add("cm-level-probs-default-mean", "consistency.py", "cdf = torch.erf((sigmas.double().log() - p_mean)", "cdf = torch.erf((sigmas.double().log() - P_MEAN)", f"{T_CM}::test_level_probabilities_are_the_lognormal_mass_between_levels")
add("cm-level-probs-no-sqrt2", "consistency.py", "(math.sqrt(2) * p_std))", "p_std)", f"{T_CM}::test_level_probabilities_are_the_lognormal_mass_between_levels")
add("cm-sample-renoise-full-sigma", "consistency.py", "x_hat = x + math.sqrt(sigma ** 2 - sigma_min ** 2) * z", "x_hat = x + sigma * z", f"{GAUSS_CM} {T_CM}::test_sample_calls_f_once_per_level_and_renoises_to_each_level")
add("cm-sample-no-renoise", "consistency.py", "x_hat = x + math.sqrt(sigma ** 2 - sigma_min ** 2) * z", "x_hat = x", GAUSS_CM)
add("cm-heun-corrector-only", "consistency.py", "return x + (s_next - s) * (d + d_next) / 2", "return x + (s_next - s) * d_next", f"{TRAJ}[heun]")
add("cm-euler-step-size", "consistency.py", "x_euler = x + (s_next - s) * d", "x_euler = x - s_next * d", f"{TRAJ} {DDIM_CM}")
add("cm-log-sigma-squared", "consistency.py", "return 0.5 * torch.log((1 - alpha_bar) / alpha_bar)", "return torch.log((1 - alpha_bar) / alpha_bar)", f"{DDIM_CM} {PARAM}")
add("cm-teacher-unscaled-input", "consistency.py", "    x_t = ab.sqrt() * x\n", "    x_t = x\n", f"{DDIM_CM} {PARAM}")
add("cm-pseudo-huber-c", "consistency.py", "c = 0.00054 * math.sqrt(diff.shape[1])", "c = 0.00054 * diff.shape[1]", f"{T_CM}::test_pseudo_huber_is_quadratic_near_zero_and_linear_far_with_c_from_the_dimension")
add("cm-ct-fresh-z", "consistency.py", "target = f(x + bcast(sigma, x) * z, sigma)", "target = f(x + bcast(sigma, x) * torch.randn_like(z), sigma)", CT_T)
add("cm-ct-no-weight", "consistency.py", "lam = 1 / (sigma_next - sigma)", "lam = 1.0", CT_T)
add("cm-ct-target-gradient", "consistency.py", "    with torch.no_grad():\n        target = f(x + bcast(sigma, x) * z, sigma)", "    if True:\n        target = f(x + bcast(sigma, x) * z, sigma)", CT_T)
add("cm-cd-step-upwards", "consistency.py", "x_hat = ode_step(denoise, x_next, sigma_next, sigma, solver)", "x_hat = ode_step(denoise, x_next, sigma_next, sigma_next * 1.5, solver)", CD_ZERO)
add("cm-target-ema-weight", "consistency.py", "torch._foreach_lerp_(t, m, 1 - mu)", "torch._foreach_lerp_(t, m, mu)", f"{T_CM}::test_cd_target_gets_no_gradient_and_follows_the_ema_of_the_student")
add("cm-cd-from-scratch", "consistency.py", "            model.net.load_state_dict(ddpm_model.net.state_dict())  # start from the teacher (Song et al.'s code does)\n", "            pass\n", f"{T_CM}::test_points_cd_starts_from_the_teacher_and_sample")
add("cm-seed-after-build", "consistency.py", "    training.seed_everything(seed)  # the initial weights depend on --seed alone\n", "", f"{SAME}[consistency]")
add("cm-generate-no-clamp", "consistency.py", "return x_0 if box is None else x_0.clamp(-box, box)", "return x_0", f"{T_CM}::test_mnist5k_ct_and_cd_train_and_sample")

# score.py: the DSM loss in closed form for Gaussian data (pins the sigma^2 weight), Algorithm 1's Langevin step
# fid.py: precision/recall by hand (the k-th neighbour), rank-one Frechet distances, the KID kernel and its warning
add("score-dsm-weight-one", "score.py", "0.5 * ((s * (score_fn(x_tilde, sigma).float() - target)) ** 2)", "0.5 * ((score_fn(x_tilde, sigma).float() - target) ** 2)", "tests/test_score.py::test_dsm_loss_equals_its_closed_form_for_gaussian_data")
add("score-dsm-weight-sigma", "score.py", "0.5 * ((s * (score_fn(x_tilde, sigma).float() - target)) ** 2)", "0.5 * ((s.sqrt() * (score_fn(x_tilde, sigma).float() - target)) ** 2)", "tests/test_score.py::test_dsm_loss_equals_its_closed_form_for_gaussian_data")
add("score-dsm-half", "score.py", "return 0.5 * ((s * (score_fn", "return 1.0 * ((s * (score_fn", "tests/test_score.py::test_dsm_loss_equals_its_closed_form_for_gaussian_data")
add("score-dsm-sum-dims", "score.py", ".flatten(1).sum(1).mean()", ".flatten(1).mean(1).mean()", "tests/test_score.py::test_dsm_loss_equals_its_closed_form_for_gaussian_data")
add("score-target-sign", "score.py", "return x + s * z, -z / s", "return x + s * z, z / s", "tests/test_score.py::test_dsm_loss_equals_its_closed_form_for_gaussian_data")
add("score-target-scale", "score.py", "return x + s * z, -z / s", "return x + s * z, -z / s ** 2", "tests/test_score.py::test_dsm_loss_equals_its_closed_form_for_gaussian_data")
add("score-perturb-variance", "score.py", "return x + s * z, -z / s", "return x + s ** 2 * z, -z / s", "tests/test_score.py::test_dsm_loss_equals_its_closed_form_for_gaussian_data")
add("score-level-choice", "score.py", "sigma = sigmas[i].to(x.device)", "sigma = sigmas[i // 2].to(x.device)", "tests/test_score.py::test_dsm_loss_equals_its_closed_form_for_gaussian_data")
add("score-dsm-weight-exact-score", "score.py", "0.5 * ((s * (score_fn(x_tilde, sigma).float() - target)) ** 2)", "0.5 * ((score_fn(x_tilde, sigma).float() - target) ** 2)", "tests/test_score.py::test_dsm_loss_of_the_exact_score")
add("score-langevin-drift", "score.py", "x = x + alpha / 2 * score_fn(x, sigma_b)", "x = x + alpha * score_fn(x, sigma_b)", "tests/test_score.py::test_annealed_langevin_steps_are_algorithm_1")
add("score-langevin-noise", "score.py", "+ alpha.sqrt() * z", "+ (2 * alpha).sqrt() * z", "tests/test_score.py::test_annealed_langevin_steps_are_algorithm_1")
add("score-langevin-official-convention", "score.py", "x = x + alpha / 2 * score_fn(x, sigma_b) + alpha.sqrt() * z", "x = x + alpha * score_fn(x, sigma_b) + (2 * alpha).sqrt() * z", "tests/test_score.py::test_annealed_langevin_steps_are_algorithm_1")
add("score-langevin-schedule", "score.py", "alpha = eps * sigma ** 2 / sigmas[-1] ** 2", "alpha = eps * sigma / sigmas[-1]", "tests/test_score.py::test_annealed_langevin_steps_are_algorithm_1")
add("score-langevin-level-sigma", "score.py", "sigma_b = sigma.expand(x.shape[0])", "sigma_b = sigmas[-1].expand(x.shape[0])", "tests/test_score.py::test_annealed_langevin_steps_are_algorithm_1")
add("ddpm-points-box-not-saved", "ddpm.py", 'config["box"] = points_box(ds.x)', "pass", "tests/test_ddpm.py::test_points_x0_is_clamped_to_the_saved_train_box")
add("ddpm-points-box-unused", "ddpm.py", "return model.box", "return None", "tests/test_ddpm.py::test_points_x0_is_clamped_to_the_saved_train_box")
add("ddpm-points-box-range", "ddpm.py", "return float(((x - x.mean(0)) / x.std(0)).abs().max())", "return float((x - x.mean(0)).abs().max())", "tests/test_ddpm.py::test_points_x0_is_clamped_to_the_saved_train_box")
add("cfg-points-box-not-saved", "cfg.py", 'config["box"] = ddpm.points_box(ds.x)', "pass", "tests/test_cfg.py::test_train_writes_a_labelled_checkpoint")
add("cfg-points-box-unused", "cfg.py", "clip = ddpm.x0_box(model, x0_clip)", "clip = x0_clip if len(model.shape) == 3 else None", "tests/test_cfg.py::test_generate_draws_labels_then_x_T_per_batch")
add("ldm-points-box-not-saved", "ldm.py", 'config["box"] = float(latents.x.abs().max())', "pass", "tests/test_ldm.py::test_points_commands_smoke")
add("ldm-points-box-unused", "ldm.py", "x0_clip = 1.0  # points", "pass  # points", "tests/test_ldm.py::test_points_commands_smoke")
add("fm-points-box-not-saved", "fm.py", 'config["box"] = float(((ds.x - ds.x.mean(0)) / ds.x.std(0)).abs().max())', "pass", "tests/test_fm.py::test_points_generate_clamps_the_endpoint_to_the_saved_box")
add("fm-points-box-unused", "fm.py", "v_fn = clamped_velocity(v_fn, model.box)", "pass", "tests/test_fm.py::test_points_generate_clamps_the_endpoint_to_the_saved_box")
add("fm-clamp-no-division", "fm.py", "v + (x_1.clamp(-box, box) - x_1) / rest.clamp(min=1e-12)", "v + (x_1.clamp(-box, box) - x_1)", "tests/test_fm.py::test_clamped_velocity_keeps_the_endpoint_in_the_box")
add("fm-bench-image-levels", "fm.py", '"images": {"t_sampling": "logit-normal", "t_std": 1.2}}', '"images": {"t_sampling": "logit-normal", "t_std": 1.0}}', "tests/test_fm.py::test_image_noise_levels_are_ddpm_s")
add("fm-default-t-std", "fm.py", "1.2 is ddpm.py's noise levels)\")] = 1.2,", "1.2 is ddpm.py's noise levels)\")] = 1.0,", "tests/test_fm.py::test_image_noise_levels_are_ddpm_s")
add("fm-default-t-uniform", "fm.py", 'or uniform (Lipman et al.)")] = "logit-normal",', 'or uniform (Lipman et al.)")] = "uniform",', "tests/test_fm.py::test_image_noise_levels_are_ddpm_s")
add("consistency-points-box-not-saved", "consistency.py", 'config["box"] = ddpm.points_box(ds.x)', "pass", "tests/test_consistency.py::test_points_cd_starts_from_the_teacher_and_sample")
add("consistency-points-box-unused", "consistency.py", "box = 1.0 if len(model.shape) == 3 else model.box", "box = 1.0 if len(model.shape) == 3 else None", "tests/test_consistency.py::test_points_cd_starts_from_the_teacher_and_sample")
add("score-clip-sign", "score.py", "return s + (d.clamp(-box, box) - d) / var", "return s + (d - d.clamp(-box, box)) / var", "tests/test_score.py::test_clip_denoised_keeps_the_tweedie_estimate_in_the_box")
add("score-clip-variance", "score.py", "return s + (d.clamp(-box, box) - d) / var", "return s + (d.clamp(-box, box) - d) / var.sqrt()", "tests/test_score.py::test_clip_denoised_keeps_the_tweedie_estimate_in_the_box")
add("score-clip-unused", "score.py", "score_fn = clip_denoised(model, model.box) if clip and model.box is not None else model", "score_fn = model", "tests/test_score.py::test_generate_clips_only_where_the_model_knows_its_box")
add("score-box-not-saved", "score.py", 'model.box = config["box"] = float(', "model.box = float(", "tests/test_score.py::test_points_sigma_max_follows_the_data_and_resume_is_exact")
add("score-tweedie", "score.py", "return x + sigma ** 2 * score_fn(x, sigma_b)", "return x + sigma * score_fn(x, sigma_b)", "tests/test_score.py::test_tweedie_step_is_the_posterior_mean")
add("fid-pr-k-minus-1", "fid.py", ".kthvalue(k + 1, dim=1)", ".kthvalue(k, dim=1)", "tests/test_fid.py::test_precision_recall_by_hand_pins_the_kth_neighbour")
add("fid-pr-k-plus-1", "fid.py", ".kthvalue(k + 1, dim=1)", ".kthvalue(k + 2, dim=1)", "tests/test_fid.py::test_precision_recall_by_hand_pins_the_kth_neighbour")
add("fid-pr-strict-ball", "fid.py", "<= radius).any(1)", "< radius).any(1)", "tests/test_fid.py::test_precision_recall_by_hand_pins_the_kth_neighbour")
add("fid-pr-swap", "fid.py", '{"precision": _manifold_fraction(fake, real, k),', '{"precision": _manifold_fraction(real, fake, k),', "tests/test_fid.py::test_precision_recall_by_hand_pins_the_kth_neighbour")
add("fid-fd-two-sqrt", "fid.py", "np.trace(sigma2) - 2 * tr_sqrt", "np.trace(sigma2) - tr_sqrt", "tests/test_fid.py::test_closed_form_for_diagonal_gaussians tests/test_fid.py::test_closed_form_for_rank_one_covariances")
add("fid-fd-mean-term", "fid.py", "value = diff @ diff + np.trace", "value = np.abs(diff).sum() + np.trace", "tests/test_fid.py::test_closed_form_for_diagonal_gaussians")
add("fid-factor-roundoff", "fid.py", "return U * torch.where(l > tol, l, 0.0).sqrt()", "return U * l.clamp_min(0).sqrt()", "tests/test_fid.py::test_closed_form_for_rank_one_covariances")
add("fid-sqrt-trace-roundoff", "fid.py", "torch.where(lam > tol, lam, 0.0).sqrt().sum()", "lam.clamp_min(0).sqrt().sum()", "tests/test_fid.py::test_closed_form_for_one_rank_one_covariance")
add("fid-factor-pivot", "fid.py", "if info == 0 and L.diagonal().square().min() > 100 * d * eps * S.diagonal().max():", "if info == 0:", "tests/test_fid.py::test_rank_one_by_hand")
add("fid-kid-no-div-d", "fid.py", "k = x @ y.T / d + 1", "k = x @ y.T + 1", "tests/test_fid.py::test_kid_by_hand_and_warns_when_a_subset_is_the_whole_set")
add("fid-kid-degree-2", "fid.py", "k = k * k * k", "k = k * k", "tests/test_fid.py::test_kid_by_hand_and_warns_when_a_subset_is_the_whole_set")
add("fid-kid-biased", "fid.py", "return k.sum() - np.trace(k) if unbiased else k.sum()", "return k.sum() if unbiased else k.sum()", "tests/test_fid.py::test_kid_by_hand_and_warns_when_a_subset_is_the_whole_set")
add("fid-kid-norm", "fid.py", "/ (m * (m - 1))", "/ m**2", "tests/test_fid.py::test_kid_by_hand_and_warns_when_a_subset_is_the_whole_set")
add("fid-kid-cross", "fid.py", "- 2 * kernel_sum(x, y, False) / m**2)", "- kernel_sum(x, y, False) / m**2)", "tests/test_fid.py::test_kid_by_hand_and_warns_when_a_subset_is_the_whole_set")
add("fid-kid-no-warning", "fid.py", "    if whole:\n        warnings.warn(", "    if False:\n        warnings.warn(", "tests/test_fid.py::test_kid_by_hand_and_warns_when_a_subset_is_the_whole_set")


# ldm.py: the LSGM bound's pieces (log q, the sampled z, the Jacobian of the scale, the prior on scaled latents), the
# scale factor and its use in encode/decode, bits/dim, the continuous L_0, the autoencoder's KL weight, stage 1 on
# --resume; vae.py's spatial latent (the KL and log q summed over [C, h, w])
T_LDM = "tests/test_ldm.py"
LSGM1 = f"{T_LDM}::test_lsgm_bound_with_a_standard_normal_prior_is_vaes_one_sample_bound"
INVAR = f"{T_LDM}::test_lsgm_bound_is_invariant_to_the_latent_scale"
UNIT = f"{T_LDM}::test_scaled_training_latents_have_unit_std_and_decode_inverts_the_scale"
LIK = f"{T_LDM}::test_likelihood_is_the_bound_with_the_ddpm_prior_in_bits_per_dim"
GEN = f"{T_LDM}::test_generate_is_decode_of_ddpm_sample"
add("ldm-jacobian-sign", "ldm.py", "prior_nll(self.scale_factor * z) - D_z * self.scale_factor.log()",
    "prior_nll(self.scale_factor * z) + D_z * self.scale_factor.log()", INVAR)
add("ldm-jacobian-one-dim", "ldm.py", "- D_z * self.scale_factor.log()", "- self.scale_factor.log()", INVAR)
add("ldm-prior-on-unscaled-z", "ldm.py", "prior_nll(self.scale_factor * z)", "prior_nll(z)", INVAR)
add("ldm-log-q-no-sigma", "ldm.py", "-0.5 * eps ** 2 - std.log() - 0.5 * LOG_2PI", "-0.5 * eps ** 2 - 0.5 * LOG_2PI", LSGM1)
add("ldm-log-q-sign", "ldm.py", "rec + log_q + prior}", "rec - log_q + prior}", LSGM1)
add("ldm-z-at-the-mean", "ldm.py", "z = mu + std * eps  # reparameterized", "z = mu  # reparameterized", LSGM1)
add("ldm-scale-not-inverted", "ldm.py", "s = 1 / mu.std().item()", "s = mu.std().item()", UNIT)
add("ldm-encode-unscaled", "ldm.py", "return self.scale_factor * self.ae.encode(x)[0]", "return self.ae.encode(x)[0]", UNIT)
add("ldm-decode-unscaled", "ldm.py", "return self.ae.mean(z / self.scale_factor)", "return self.ae.mean(z)", UNIT)
add("ldm-train-on-logvar", "ldm.py", "ae.encode(xb.to(dev))[0] for xb", "ae.encode(xb.to(dev))[1] for xb", UNIT)
add("ldm-bpd-no-log256", "ldm.py", "bpd = vae.bits_per_dim(-per[\"total\"] + D * math.log(256), D)", "bpd = vae.bits_per_dim(-per[\"total\"], D)", LIK)
add("ldm-prior-discrete-l0", "ldm.py", "n_t or None, discrete=False, generator=g)", "n_t or None, discrete=True, generator=g)", LIK)
add("ldm-latents-clipped", "ldm.py", "x0_clip=x0_clip, batch_size=batch_size)  # [n, *latent_shape]", "x0_clip=1.0, batch_size=batch_size)  # [n, *latent_shape]", GEN)
add("ldm-ae-beta-ignored", "ldm.py", "beta=ae_beta, steps=ae_steps", "beta=1.0, steps=ae_steps",
    f"{T_LDM}::test_checkpoint_carries_autoencoder_scale_and_ddpm_and_sample_rebuilds_them")
add("ldm-seed-after-build", "ldm.py", "    training.seed_everything(seed)  # the initial weights depend on --seed alone\n", "",
    f"{T_LDM}::test_stage_2_on_a_given_autoencoder_and_its_exact_resume")
add("ldm-stage-1-again-on-resume", "ldm.py", "if not ae and not (resume and ae_path.exists()", "if not ae and not (False",
    f"{SAME}[ldm]")
LDM_LABELS = "tests/test_ldm.py::test_labels_cfg_guidance_on_the_latent_ddpm"
add("ldm-labels-not-dropped", "ldm.py", "y = cfg.drop_labels(y, C, p_uncond) if C else None", "y = y if C else None", LDM_LABELS)
add("ldm-labels-guidance-ignored", "ldm.py", "y=y, guidance=guidance, method=method,", "y=y, guidance=1.0, method=method,", LDM_LABELS)
add("ldm-labels-unconditional-net", "ldm.py", "diffusion = cfg.build(config, ae.latent_shape, num_classes) if num_classes else", "diffusion = cfg.build(config, ae.latent_shape, num_classes) if False else", LDM_LABELS)
ELBO_S = f"{T_LDM}::test_spatial_vae_elbo_is_the_mean_of_its_one_sample_iwae"
add("vae-spatial-kl-not-flattened", "vae.py", "gaussian_kl(mu.flatten(1), logvar.flatten(1))", "gaussian_kl(mu, logvar)", ELBO_S)
add("vae-gaussian-overflow", "vae.py", "log_p = -0.5 * ((u - mu) * torch.exp(-log_sigma)) ** 2", "log_p = -0.5 * ((u - mu) / log_sigma.exp()) ** 2", "tests/test_vae.py::test_gaussian_decoder_is_the_normal_density_with_a_finite_gradient")
add("vae-gaussian-detached-scale", "vae.py", "log_p = -0.5 * ((u - mu) * torch.exp(-log_sigma)) ** 2", "log_p = -0.5 * ((u - mu) * torch.exp(-log_sigma).detach()) ** 2", "tests/test_vae.py::test_gaussian_decoder_is_the_normal_density_with_a_finite_gradient")
add("vae-sample-sigma-uncapped", "vae.py", "sigma = log_sigma.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX).exp()", "sigma = log_sigma.clamp(min=LOG_SCALE_MIN).exp()", "tests/test_vae.py::test_gaussian_decoder_is_the_normal_density_with_a_finite_gradient")
add("vae-logistic-uncapped", "vae.py", "inv_s = torch.exp(-log_s.clamp(max=LOG_SCALE_MAX))", "inv_s = torch.exp(-log_s)", "tests/test_vae.py::test_discretized_logistic_stays_finite_for_any_scale")
add("vae-gaussian-no-floor", "vae.py", "log_sigma = log_sigma.clamp(min=LOG_SCALE_MIN)", "log_sigma = log_sigma", "tests/test_vae.py::test_gaussian_decoder_is_the_normal_density_with_a_finite_gradient")
add("vae-spatial-sum-last-dim", "vae.py", "return a.flatten(-len(self.latent_shape)).sum(-1)", "return a.sum(-1)", ELBO_S)
add("vae-spatial-log-q-no-std", "vae.py", " - self.sum_latent(std.log())  # log N", "  # log N", ELBO_S)

# issue 19, conditional generation: the label used by every network, the CVAE's bounds per class, the conditional
# flow's base mean and its Bayes classifier, the projection discriminator's packed class term, the labels in training
TV, TF, TG = "tests/test_vae.py", "tests/test_flow.py", "tests/test_gan.py"
add("cond-vae-encoder-ignores-y", "vae.py", "out = self.encoder(u) if y is None else with_label(self.encoder, u, self.enc_label(self._check_y(y)))",
    "out = self.encoder(u)", f"{TV}::test_cvae_uses_the_label_in_both_networks")
add("cond-vae-decoder-ignores-y", "vae.py", "params = with_label(self.decoder, z_flat, e).to(z.dtype)",
    "params = self.decoder(z_flat).to(z.dtype)", f"{TV}::test_cvae_uses_the_label_in_both_networks")
add("cond-vae-iwae-drops-y", "vae.py", "log_w.append(self.log_px_given_z(x, z, y) + log_pz - log_qz)",
    "log_w.append(self.log_px_given_z(x, z) + log_pz - log_qz)", f"{TV}::test_cvae_elbo_le_iwae_le_log_p_x_given_y_for_every_class")
add("cond-vae-elbo-drops-y", "vae.py", "return self.log_px_given_z(x, z, y), gaussian_kl(", "return self.log_px_given_z(x, z), gaussian_kl(",
    f"{TV}::test_cvae_elbo_le_iwae_le_log_p_x_given_y_for_every_class")
add("cond-vae-labels-misaligned", "vae.py", "e = self.dec_label(self._check_y(y).expand(lead).reshape(-1))",
    "e = self.dec_label(self._check_y(y).repeat_interleave(len(z_flat) // len(y)))", f"{TV}::test_cvae_uses_the_label_in_both_networks")
add("cond-vae-bayes-no-prior", "vae.py", "for c in labels], 1) + self.log_py", "for c in labels], 1)",
    f"{TV}::test_cvae_bayes_classifier_is_bayes_rule_on_log_p_x_given_y")
add("cond-vae-bayes-not-normalized", "vae.py", "return log_pxy - torch.logsumexp(log_pxy, 1, keepdim=True)", "return log_pxy",
    f"{TV}::test_cvae_bayes_classifier_is_bayes_rule_on_log_p_x_given_y")
add("cond-vae-prior-not-from-data", "vae.py", "model.log_py.copy_(torch.bincount(ds.y, minlength=ds.num_classes).float().div(len(ds)).log())",
    "pass", f"{TV}::test_the_class_prior_is_the_training_frequencies")
add("cond-vae-train-without-y", "vae.py", 'log_px_z, kl = tr.models["model"](x, y=y if cond else None)', 'log_px_z, kl = tr.models["model"](x, y=None)',
    f"{TV}::test_cvae_commands_learn_the_label_and_classify")
add("cond-flow-coupling-ignores-label", "flow.py", "out = self.net[1:](self.net[0](x_masked) + e.view(*e.shape, *[1] * (x_masked.dim() - 2)))",
    "out = self.net(x_masked)", f"{TF}::test_conditional_flow_uses_the_label_in_every_coupling_and_the_base")
add("cond-flow-base-mean-not-subtracted", "flow.py", "else (z - self.base_mean(label), log_det)", "else (z, log_det)",
    f"{TF}::test_conditional_inverse_and_log_det")
add("cond-flow-base-mean-sign-in-inverse", "flow.py", "z = z if label is None else z + self.base_mean(label)",
    "z = z if label is None else z - self.base_mean(label)", f"{TF}::test_conditional_inverse_and_log_det")
add("cond-flow-sample-ignores-label", "flow.py", "return torch.cat([self.inverse(zb, lb) for zb, lb in zip(z.split(batch), labels)])",
    "return torch.cat([self.inverse(zb, None) for zb, lb in zip(z.split(batch), labels)])",
    f"{TF}::test_p_x_given_c_integrates_to_one_and_the_marginal_is_the_mixture")
add("cond-flow-marginal-is-max", "flow.py", "return torch.logsumexp(self.log_joint(x), 1)", "return self.log_joint(x).max(1).values",
    f"{TF}::test_p_x_given_c_integrates_to_one_and_the_marginal_is_the_mixture")
add("cond-flow-bayes-no-prior", "flow.py", "for c in range(self.num_classes)], 1) + self.log_pc", "for c in range(self.num_classes)], 1)",
    f"{TF}::test_p_x_given_c_integrates_to_one_and_the_marginal_is_the_mixture")
add("cond-flow-bayes-not-normalized", "flow.py", "return log_pxc - torch.logsumexp(log_pxc, 1, keepdim=True)", "return log_pxc",
    f"{TF}::test_p_x_given_c_integrates_to_one_and_the_marginal_is_the_mixture")
add("cond-flow-prior-not-from-data", "flow.py", "model.log_pc.copy_(torch.bincount(ds.y, minlength=ds.num_classes).float().div(len(ds)).log())",
    "pass", f"{TF}::test_the_class_prior_is_the_training_frequencies")
add("cond-flow-train-without-label", "flow.py", "c = c if cond else None  # conditional", "c = None  # conditional",
    f"{TF}::test_conditional_commands_learn_the_label_and_classify")
add("cond-flow-likelihood-drops-y", "flow.py", "per.append(-model.log_prob(xb, lb).cpu())", "per.append(-model.log_prob(xb).cpu())",
    f"{TF}::test_p_x_given_c_integrates_to_one_and_the_marginal_is_the_mixture")
add("cond-gan-mlpg-ignores-y", "gan.py", "h = self.net(z) if y is None else self.net[1:](self.net[0](z) + self.embed(y))", "h = self.net(z)",
    f"{TG}::test_conditional_generators_and_projection_discriminators_use_the_label")
add("cond-gan-convg-ignores-y", "gan.py", "x = self.net[1:](a + self.embed(y).view(a.shape))", "x = self.net[1:](a)",
    f"{TG}::test_conditional_generators_and_projection_discriminators_use_the_label")
add("cond-gan-projection-dropped", "gan.py", "return self.net[-1](phi).squeeze(1) + projection(phi, self.embed, y, self.pack)",
    "return self.net[-1](phi).squeeze(1)", f"{TG}::test_conditional_generators_and_projection_discriminators_use_the_label")
add("cond-gan-projection-one-slot", "gan.py", "slots = torch.arange(pack, device=y.device) * (embed.num_embeddings // pack)",
    "slots = torch.zeros(pack, dtype=torch.long, device=y.device)", f"{TG}::test_projection_discriminator_adds_y_transpose_V_phi_per_packed_slot")
add("cond-gan-projection-no-phi", "gan.py", "return (embed(y + slots).sum(1) * phi).sum(1)", "return embed(y + slots).sum((1, 2))",
    f"{TG}::test_projection_discriminator_adds_y_transpose_V_phi_per_packed_slot")
add("cond-gan-projection-no-sn", "gan.py", "self.embed = _sn(nn.Embedding(pack * num_classes, width), sn)",
    "self.embed = nn.Embedding(pack * num_classes, width)", f"{TG}::test_projection_discriminator_adds_y_transpose_V_phi_per_packed_slot")
add("cond-gan-critic-ignores-y", "gan.py", "critic = D_ if y is None else (lambda v, y=y: D_(v, y))", "critic = D_",
    f"{TG}::test_cgan_learns_the_label_with_packing_and_r1")
add("cond-gan-g-step-without-y", "gan.py", "device=tr.dev), y), y), loss)", "device=tr.dev), y), y.roll(1) if y is not None else y), loss)",
    f"{TG}::test_cgan_learns_the_label_with_packing_and_r1")


# bench.py: the conditional suite's per-class view
PER_CLASS = "tests/test_bench.py::test_per_class_accuracy_and_stratified_fid_by_hand"
add("bench-per-class-fid-all-reference", "bench.py", "fid.fid(ref.feats[(ref.y == c).numpy()], f[(y == c).numpy()])", "fid.fid(ref.feats, f[(y == c).numpy()])", PER_CLASS)
add("bench-per-class-accuracy-overall", "bench.py", "round(float(hit[y == c].mean()), 4)", "round(float(hit.mean()), 4)", PER_CLASS)
add("bench-per-class-worst-is-best", "bench.py", "classes[int(np.argmax(fids))]", "classes[int(np.argmin(fids))]", PER_CLASS)
T_REFINE = "tests/test_bench.py::test_plan_is_refined_from_the_first_snapshot"
add("bench-refine-rate-without-steps", "bench.py", "total = budget / (seconds / steps)  # seconds per step", "total = budget / seconds  # seconds per step", T_REFINE)
add("bench-refine-unbounded", "bench.py", 'total = min(3.0 * entry["steps"], max(0.6 * entry["steps"], total))', "total = total", T_REFINE)
add("bench-refine-every-time", "bench.py", 'if "first_steps" in entry or seconds <= 0:', "if seconds <= 0:", T_REFINE)
add("bench-step-ceiling-fixed", "bench.py", "return int(max(200_000, 200_000 * budget / 300))", "return 200_000", "tests/test_bench.py::test_step_ceiling_grows_with_the_budget")
add("bench-step-ceiling-old-plans-kept", "bench.py", "if key in self.plan and not (200_000 <= self.plan[key][\"steps\"] < max_steps(budget)):", "if key in self.plan:", "tests/test_bench.py::test_step_ceiling_grows_with_the_budget")
add("bench-clamp-steps-no-ceiling", "bench.py", "return int(min(max_steps(budget), max(10, total)))", "return int(max(10, total))", "tests/test_bench.py::test_step_ceiling_grows_with_the_budget")
add("bench-frontier-straight-toy-needs-hq", "bench_report.py", "toy_hq = data in TOYS and all(r.get(\"hq\") is not None for r in [base, *dd, *fm_rows] if r)", "toy_hq = data in TOYS", "tests/test_bench.py::test_frontier_claims_by_hand")
add("bench-guidance-without-labels", "bench.py", 'LABELLED = ("conditional", "guidance")', 'LABELLED = ("conditional",)', "tests/test_bench.py::test_conditional_suite_quick")
add("bench-defaults-without-labels", "bench.py", 'extra.update({k: opts[k] for k in fam.spec.get("conditional_options") or {} if k in opts})', "pass", "tests/test_bench.py::test_defaults_resolve_the_teacher_and_the_steps")
add("bench-guidance-200-samples", "bench.py", "1000 if labelled else 200", '1000 if key == "conditional" else 200', "tests/test_bench.py::test_suite_samples_ask_for_every_digit_equally_often")
add("bench-report-source-ignored", "bench_report.py", 'return {"given": "given", "defaults": "its defaults"}.get(', 'return {}.get(', "tests/test_bench.py::test_report_names_each_checkpoint_s_source")
add("bench-fid-noise-one-draw", "bench.py", "train.x[torch.randperm(len(train), generator=g)[:n]]", "train.x[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]]", "tests/test_bench.py::test_fid_noise_is_real_data_scored_like_samples")
add("bench-straight-no-noise", "bench_report.py", "close = lambda fid, ref: fid <= max(1.1 * ref, ref + 2 * noise)", "close = lambda fid, ref: fid <= 1.1 * ref", "tests/test_bench.py::test_frontier_claims_by_hand")
add("bench-probe-shared-folder", "bench.py", 'f"{fam.name}-{data}-{_key(key)}-{os.getpid()}"', 'f"{fam.name}-{data}"', "tests/test_bench.py::test_probes_side_by_side_do_not_share_a_folder")
# bench.py (issue 21): AUROC, the OOD sets, the anomaly row, the learning-curve chain, the frontier claims, the tiers
T_AUC, T_OOD, T_ROW = ("tests/test_bench.py::test_auroc_is_the_pair_count_with_half_ties",
                       "tests/test_bench.py::test_ood_sets_stay_on_the_8_bit_grid_and_keep_what_they_claim",
                       "tests/test_bench.py::test_anomaly_row_by_hand")
add("bench-auroc-ties-count-nothing", "bench.py", "ranks = rankdata(np.concatenate([a, b]))  # average ranks for ties",
    "ranks = rankdata(np.concatenate([a, b]), method='min')", T_AUC)
add("bench-auroc-wrong-u-offset", "bench.py", "(ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2)", "(ranks[len(a):].sum() - len(b) * len(b) / 2)", T_AUC)
add("bench-ood-one-permutation", "bench.py", "order = torch.rand(flat.shape, generator=g).argsort(1)", "order = torch.rand(flat.shape[1:], generator=g).argsort(0).expand_as(flat)", T_OOD)
add("bench-ood-flip-upside-down", "bench.py", '"flipped": x.flip(-1)', '"flipped": x.flip(-2)', T_OOD)
add("bench-ood-noise-off-grid", "bench.py", '"noise": torch.randint(0, 256, x.shape, generator=g).float() / 127.5 - 1', '"noise": torch.rand(x.shape, generator=g) * 2 - 1', T_OOD)
add("bench-anomaly-auroc-swapped", "bench.py", '**{f"auroc_{k}": auroc(scores["test"], scores[k]) for k in OOD}', '**{f"auroc_{k}": auroc(scores[k], scores["test"]) for k in OOD}', T_ROW)
T_CHAIN = "tests/test_bench.py::test_curve_snapshot_chain_is_the_same_run"
add("bench-chain-not-resumed", "bench.py", '**kw, **({"resume": True} if prev else {})', "**kw", T_CHAIN)
add("bench-chain-seconds-not-added", "bench.py", "            if sec < last:  # a new segment\n                total += last\n", "",
    "tests/test_bench.py::test_loop_seconds_counts_every_segment_and_sub_run")
T_FR = "tests/test_bench.py::test_frontier_claims_by_hand"
add("bench-frontier-within-50-percent", "bench_report.py", "fid <= max(1.1 * ref, ref + 2 * noise)", "fid <= max(1.5 * ref, ref + 2 * noise)", T_FR)
add("bench-frontier-consistency-toy-by-fd", "bench_report.py", "if base and cm and data in TOYS and", "if base and cm and False and", T_FR)
add("bench-frontier-consistency-toy-threshold", "bench_report.py", 'verdict = "holds" if best["hq"] >= base["hq"] / 1.5 else', 'verdict = "holds" if best["hq"] >= base["hq"] / 1.4 else', T_FR)
add("bench-frontier-straight-toy-by-fd", "bench_report.py", "toy_hq = data in TOYS and all(", "toy_hq = False and all(", T_FR)
add("bench-frontier-straight-toy-threshold", "bench_report.py", "return r[\"hq\"] >= min(ref / 1.1, ref - spread)", "return r[\"hq\"] >= min(ref / 1.05, ref - spread)", T_FR)
add("bench-frontier-straight-toy-no-spread", "bench_report.py", "return r[\"hq\"] >= min(ref / 1.1, ref - spread)", "return r[\"hq\"] >= ref / 1.1", T_FR)
add("bench-frontier-consistency-penalty", "bench_report.py", 'verdict = "holds" if best["fid"] <= 1.5 * base["fid"] else "does NOT hold"',
    'verdict = "holds" if best["fid"] <= 2 * base["fid"] else "does NOT hold"', T_FR)
add("bench-tradeoff-anomaly-by-rank", "bench_report.py", 'absolute = {"conditional": CONDITIONAL_TIERS, "anomaly": ANOMALY_TIERS}',
    'absolute = {"conditional": CONDITIONAL_TIERS}', "tests/test_bench.py::test_tradeoff_conditional_and_anomaly_columns_use_absolute_tiers")
add("bench-tradeoff-ddpm-conditional-own", "bench_report.py", 'CONDITIONAL_AS = {"ddpm": "cfg"}', "CONDITIONAL_AS = {}",
    "tests/test_bench.py::test_tradeoff_conditional_and_anomaly_columns_use_absolute_tiers")
add("bench-samplers-lesson-speed-off", "bench_report.py", '("consistency", "k-step", 1): "1000x"', '("consistency", "k-step", 1): "100x"',
    "tests/test_bench.py::test_samplers_table_has_every_family_and_the_lessons_speed")
# the per-example likelihoods (bench's anomaly scores): their mean is the reported NLL
T_PER = "tests/test_contract.py::test_same_seed_same_model_and_resume_is_exact"
add("ddpm-per-example-no-scale", "ddpm.py", 'out["per_example"] = (L + model.scale.log().sum()).cpu()', 'out["per_example"] = L.cpu()', f"{T_PER}[ddpm]")
add("fm-per-example-sign", "fm.py", 'out["per_example"] = -logp + model.scale.log().sum().cpu()', 'out["per_example"] = logp + model.scale.log().sum().cpu()', f"{T_PER}[fm]")
add("vae-per-example-elbo", "vae.py", 'res["nll_nats"], res["per_example"] = -res["iwae_nats"], -iw', 'res["nll_nats"], res["per_example"] = -res["iwae_nats"], -el', f"{T_PER}[vae]")


# ----------------------------------------------------------------------------------------------------- runner
def scratch_copy(rev: str | None = None) -> Path:
    """The tracked and untracked (not ignored) files of the repository, copied to a temporary folder; or, with
    `rev`, the files of that commit (so that edits in progress do not leak into the check)."""
    if rev:
        dst = Path(tempfile.mkdtemp(prefix="mutants-"))
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
        return dst
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    dst = Path(tempfile.mkdtemp(prefix="mutants-"))
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    return dst


def run_one(copy: Path, file: str, find: str, replace: str, tests: str) -> tuple[str, float]:
    """Apply the mutation in `copy`, run `tests`, restore. Returns ("caught" | "SURVIVED" | "error: ...", seconds)."""
    path = copy / file
    original = path.read_text()
    if original.count(find) != 1:
        return f"error: snippet occurs {original.count(find)} times in {file}", 0.0
    path.write_text(original.replace(find, replace))
    t0 = time.time()
    try:
        env = dict(os.environ, GENMODELS_QUIET="1", PYTHONWARNINGS="ignore")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", *tests.split()],
                              cwd=copy, capture_output=True, text=True, env=env, timeout=900)
    finally:
        path.write_text(original)
    dt = time.time() - t0
    if proc.returncode == 1:
        return "caught", dt
    if proc.returncode == 0:
        return "SURVIVED", dt
    return f"error: pytest exit {proc.returncode}: {proc.stdout[-300:]}", dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="run the mutants whose name starts with this")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--rev", help="check the files of this commit (e.g. HEAD) instead of the working tree")
    ap.add_argument("--file", help="ad hoc mutant: the file to change")
    ap.add_argument("--find", help="ad hoc mutant: the exact snippet to replace (must occur once)")
    ap.add_argument("--replace", help="ad hoc mutant: what to put instead")
    ap.add_argument("--tests", help="ad hoc mutant: the tests to run (pytest arguments)")
    a = ap.parse_args()
    if a.file:
        todo = {"ad-hoc": (a.file, a.find, a.replace, a.tests or "tests")}
    else:
        todo = {k: v for k, v in MUTANTS.items() if k.startswith(a.only)}
    if a.list:
        for k, (f, find, rep, tests) in todo.items():
            print(f"{k:32s} {f}: {find!r} -> {rep!r}  [{tests}]")
        return
    copy = scratch_copy(a.rev)
    survivors, errors = [], []
    try:
        for k, (f, find, rep, tests) in todo.items():
            verdict, dt = run_one(copy, f, find, rep, tests)
            print(f"{verdict:9s} {dt:6.1f} s  {k}", flush=True)
            (survivors if verdict == "SURVIVED" else errors if verdict.startswith("error") else []).append(k)
            if verdict.startswith("error"):
                print("          " + verdict, flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    print(f"{len(todo) - len(survivors) - len(errors)} of {len(todo)} caught; survivors: {survivors or 'none'}; "
          f"errors: {errors or 'none'}")
    sys.exit(1 if survivors or errors else 0)


if __name__ == "__main__":
    main()
