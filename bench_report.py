"""bench_report.py: what bench.py writes from its rows of results.json.

The tables of results.md (per suite), the lesson's trade-off table (every cell a measured number with its tier
verdict), the lesson's claims and the frontier's claims checked one by one, and the figures: samples.png (every
model's samples), curves.png (quality against training seconds) and fid_vs_nfe.png (quality against network calls).
Every function is a function of the rows alone (samples.png also reads the samples bench cached under its runs
folder), so `python bench.py --report` rewrites all of it without training anything.

The names both halves use (the families, the toy sets, the suites, the OOD sets, the short snapshot) are defined here
and bench.py imports them; nothing here imports bench.py.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import data as datasets

if TYPE_CHECKING:
    from bench import Runs

TOYS = ("grid25", "ring8")
SUITES = ("toy", "mnist", "samplers", "guidance", "conditional", "anomaly")
# Every model file bench measures, in the order of the tables. Adding a family = a file with bench's surface + its
# name here. bench holds no per-family code: what to train, how to sample and score comes from the file's BENCH dict.
MODELS = ("vae", "gan", "flow", "ebm", "score", "ddpm", "cfg", "fm", "consistency", "ldm")
# The learning-curve snapshot (a fraction of the budget) that is the speed-of-convergence column (60 s of 300: the
# verdict budget of the toys before 2026-12-05 and of mnist5k before issue 21)
SHORT = 0.2
# The anomaly suite's out-of-distribution sets, made from the in-distribution test digits themselves
OOD = ("permuted", "flipped", "inverted", "noise")


def _fmt(v, spec=".3f", std=None):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    s = format(v, spec) if isinstance(v, float) else str(v)
    if std is not None and std > 0:
        s += " ± " + format(std, spec)
    return s


def _cols(r: dict, images: bool) -> list[str]:
    g = r.get
    nll = _fmt(g("nll_nats"), ".3f", g("nll_nats_std")) if g("nll_nats") is not None else \
        (_fmt(g("nll_bpd"), ".3f", g("nll_bpd_std")) + " bpd" if g("nll_bpd") is not None else "-")
    quality = ([_fmt(g("fid"), ".2f", g("fid_std")), _fmt(g("kid"), ".4f"), _fmt(g("is"), ".2f"),
                _fmt(g("classes"), ".1f")] if images else
               [_fmt(g("modes"), ".1f", g("modes_std")), _fmt(g("hq"), ".3f", g("hq_std")),
                _fmt(g("fid"), ".3f", g("fid_std"))])
    short = _fmt(g("short_fid"), ".2f") if images else _fmt(g("short_hq"), ".3f")  # speed of convergence
    return [r["data"], r["model"], r["sampler"], *quality, short, _fmt(g("precision"), ".3f"), _fmt(g("recall"), ".3f"), nll,
            _fmt(g("nfe"), ".0f"), _fmt(g("ms_per_sample"), ".3g"), _fmt(g("train_seconds"), ".1f"),
            _fmt(g("steps"), ".0f"), (r["status"] if r["status"] == "ok" else r["status"][:90]) +
            (f" ({r['warning'][:120]})" if g("warning") else "")]


def _header(images: bool) -> list[str]:
    q = ["FID", "KID", "IS", "classes"] if images else ["modes", "hq", "Frechet dist."]
    q.append(f"{'FID' if images else 'hq'} at {SHORT:g} of the budget")
    return ["data", "model", "sampler", *q, "precision", "recall", "NLL", "NFE", "ms/sample", "train s", "steps", "status"]


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    images = any(r["data"] not in TOYS for r in rows)
    t = Table(title=title)
    for h in _header(images):
        t.add_column(h, justify="left" if h in ("data", "model", "sampler", "status") else "right")
    for r in rows:
        t.add_row(*_cols(r, images))
    Console(width=200).print(t)


def md_table(header: list[str], body: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] +
                     ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body])


# The lesson's table (relative tiers), and the measured column each claim is checked against. The last two columns
# are the lesson's "Conditional gen." and "Likelihood for anomaly" rows (VAE / GAN / flow / EBM / diffusion).
LESSON = {  # family: (quality, diversity, stability, likelihood, sampling speed, conditional, anomaly)
    "vae": ("low (blurry)", "high", "high", "good (bound)", "fast", "yes", "approximate"),
    "gan": ("high (sharp)", "low (mode collapse)", "low", "none", "fast", "yes", "no"),
    "flow": ("medium", "high", "high", "exact", "slowish", "yes", "yes"),
    "ebm": ("medium", "medium", "low", "unnormalized", "slow", "-", "no"),
    "score": ("high", "high", "high", "none", "slow", "yes", "approximate"),
    "ddpm": ("high", "high", "high", "good (bound)", "slow", "yes", "approximate"),
}
FRONTIER = ("cfg", "fm", "consistency", "ldm")  # measured in the same columns; the lesson gives them no tier
CONDITIONAL_AS = {"ddpm": "cfg"}  # the lesson's conditional diffusion is classifier-free guidance (cfg.py)
TIER = {"low": 0, "none": 0, "slow": 0, "unnormalized": 0, "medium": 1, "slowish": 1, "high": 2, "good": 2,
        "exact": 2, "fast": 2, "yes": 2, "approximate": 1, "no": 0}
# absolute tiers of the last two columns (a rank says nothing about "can it do this"): label accuracy of the
# conditional samples (fid.py's classifier reads real test digits at 98%), mean AUROC over the OOD sets
CONDITIONAL_TIERS, ANOMALY_TIERS = (0.5, 0.8), (0.7, 0.9)  # below the first: no; from the second on: yes


def _tier(claim: str) -> int | None:
    return TIER.get(claim.split(" ")[0])


def claims(rows: list[dict]) -> list[str]:
    """The lesson's specific claims, each checked against the measured rows in one plain sentence."""
    ok = [r for r in rows if r["status"] == "ok" and r["suite"] in ("toy", "mnist")]
    out = []

    def best(model, data):
        c = [r for r in ok if r["model"] == model and r["data"] == data and r.get("fid") is not None]
        return min(c, key=lambda r: r["fid"]) if c else None

    for data in sorted({r["data"] for r in ok}, key=lambda d: (d not in TOYS, d)):
        fams = {m: best(m, data) for m in LESSON if best(m, data)}
        if len(fams) < 3:
            continue
        others = lambda m: [r for k, r in fams.items() if k != m]  # noqa: E731
        med = lambda m, key: float(np.median([r[key] for r in others(m) if r.get(key) is not None] or [float("nan")]))  # noqa: E731
        toy = data in TOYS
        K = len(datasets.MODES[data][0]) if toy else 10
        if "gan" in fams:
            g = fams["gan"]
            if toy:
                seeds_modes = (g.get("per_seed") or {}).get("modes") or [g["modes"]]
                collapsed = g["modes"] < min(K, med("gan", "modes"))  # drops more modes than the other families
                out.append(f"{data}: GAN mode collapse: {'holds' if collapsed else 'NOT observed'}: modes covered "
                           f"per seed {seeds_modes} of {K} (others' median {med('gan', 'modes'):.1f}).")
                out.append(f"{data}: GAN sharp samples: {'holds' if g['hq'] >= med('gan', 'hq') else 'does NOT hold'}: "
                           f"hq {g['hq']:.3f} vs the others' median {med('gan', 'hq'):.3f}.")
            else:
                out.append(f"{data}: GAN mode collapse: classes covered {g.get('classes', 0):.0f}/10, recall "
                           f"{g.get('recall', 0):.3f} (others' median {med('gan', 'recall'):.3f}).")
            if g.get("fid_std") is not None:
                cv = lambda r: r["fid_std"] / max(r["fid"], 1e-9)  # noqa: E731
                other_cv = float(np.median([cv(r) for r in others("gan") if r.get("fid_std") is not None]))
                out.append(f"{data}: GAN unstable: {'holds' if cv(g) > other_cv else 'does NOT hold'}: the spread of its "
                           f"Frechet distance over seeds is {100 * cv(g):.0f}% of the mean (others' median "
                           f"{100 * other_cv:.0f}%).")
        if "vae" in fams:
            v = fams["vae"]
            if toy:
                out.append(f"{data}: VAE blurry: {'holds' if v['hq'] < med('vae', 'hq') else 'does NOT hold'}: hq "
                           f"{v['hq']:.3f} vs the others' median {med('vae', 'hq'):.3f} (samples between the modes).")
            else:
                out.append(f"{data}: VAE blurry: precision {v.get('precision', 0):.3f} and FID {v['fid']:.1f} vs the "
                           f"others' median {med('vae', 'precision'):.3f} and {med('vae', 'fid'):.1f}.")
        key = "nll_nats" if toy else "nll_bpd"
        nlls = {m: r[key] for m, r in fams.items() if r.get(key) is not None}
        if "flow" in nlls and len(nlls) > 1:
            order = sorted(nlls, key=nlls.get)
            out.append(f"{data}: likelihoods ({'nats' if toy else 'bits/dim'}, lower is better; flow exact, VAE and DDPM "
                       f"upper bounds{', EBM grid integration' if toy else ''}): " +
                       ", ".join(f"{m} {nlls[m]:.3f}" for m in order) +
                       f". VAE good likelihood: {'holds' if 'vae' in nlls and order.index('vae') <= 1 else 'does NOT hold' if 'vae' in nlls else 'n/a'}.")
        one_shot = [fams[m]["ms_per_sample"] for m in ("gan", "vae") if m in fams]
        for m, what in (("ebm", "EBM slow sampling"), ("ddpm", "diffusion slow sampling"), ("score", "score model slow sampling"),
                        ("flow", "flow slowish")):
            rs = [r for r in ok if r["model"] == m and r["data"] == data and r.get("ms_per_sample")]
            if not rs or not one_shot:
                continue
            slowest = max(rs, key=lambda r: r["ms_per_sample"])
            ratio = slowest["ms_per_sample"] / max(min(one_shot), 1e-9)
            limit = 3 if m == "flow" else 10  # "slowish" vs "slow": 3x / 10x the fastest one-shot generator
            out.append(f"{data}: {what}: {'holds' if ratio > limit else 'does NOT hold'} (> {limit}x): {slowest['sampler']} takes "
                       f"{slowest['ms_per_sample']:.3g} ms per sample (NFE {slowest['nfe']:.0f}), {ratio:.0f}x the "
                       f"fastest one-shot generator (GAN/VAE, {min(one_shot):.3g} ms).")
        if "ddpm" in fams:
            d = fams["ddpm"]
            qkey, better = ("hq", max) if toy else ("fid", min)
            vals = {m: r.get(qkey) for m, r in fams.items() if r.get(qkey) is not None}
            order = sorted(vals, key=vals.get, reverse=better is max)  # best first
            rank = lambda m: order.index(m) + 1 if m in order else None  # noqa: E731
            top_third = math.ceil(len(order) / 3)
            verdict = "n/a" if rank("ddpm") is None else "holds" if rank("ddpm") <= top_third else "does NOT hold"
            out.append(f"{data}: diffusion high quality: {verdict}: DDPM ({d['sampler']}) {qkey} "
                       f"{vals.get('ddpm', float('nan')):.3f}, rank {rank('ddpm')}/{len(order)}; best is {order[0]} "
                       f"({vals[order[0]]:.3f})" + (f"; the score model ranks {rank('score')}" if rank("score") else "") + ".")
    return out


def tradeoff(rows: list[dict]) -> tuple[str, list[str]]:
    """The lesson's table filled with measured numbers: for each family its best row per data set, each column
    ranked among the families measured (top third = high, bottom third = low), compared with the lesson's tier;
    conditional and anomaly from those suites' rows, with absolute tiers (CONDITIONAL_TIERS, ANOMALY_TIERS)."""
    everyone = tuple(LESSON) + FRONTIER
    ok = [r for r in rows if r["status"] == "ok" and r["suite"] in ("toy", "mnist") and r["model"] in everyone]
    cond, anom = {}, {}
    for r in rows:
        if r["status"] == "ok" and r["suite"] == "conditional" and r.get("accuracy") is not None:
            k = (r["data"], r["model"])
            cond[k] = max(cond.get(k, 0.0), r["accuracy"])
        if r["status"] == "ok" and r["suite"] == "anomaly" and r.get("auroc_mean") is not None:
            anom[(r["data"], r["model"])] = r
    cond_of = lambda r: cond.get((r["data"], CONDITIONAL_AS.get(r["model"], r["model"])))  # noqa: E731
    notes, body = [], []
    columns = [  # name, row -> measured value (higher is better), formatter
        ("quality", lambda r: (r.get("hq") if r["data"] in TOYS else -r["fid"] if r.get("fid") is not None else None),
         lambda r: (f"FID {r['fid']:.2f}" if r["data"] not in TOYS else f"hq {r.get('hq', 0):.3f}, FD {r['fid']:.3f}")),
        ("diversity", lambda r: (r.get("modes", 0) + 1e-3 * r.get("recall", 0))
         if r["data"] in TOYS else r.get("recall"),
         lambda r: (f"modes {r.get('modes', 0):.1f}/{len(datasets.MODES[r['data']][0])}, recall {r.get('recall', 0):.2f}"
                    if r["data"] in TOYS else f"recall {r.get('recall', 0):.2f}")),
        ("stability", lambda r: -(r.get("fid_std", 0) / max(r["fid"], 1e-9)) if r.get("fid_std") is not None else None,
         lambda r: f"FD/FID spread {100 * r.get('fid_std', 0) / max(r['fid'], 1e-9):.0f}% over {r['seeds']} seeds"),
        ("likelihood", lambda r: (-r["nll_nats"] if r.get("nll_nats") is not None else
                                  -r["nll_bpd"] if r.get("nll_bpd") is not None else None),
         lambda r: (f"{r['nll_nats']:.2f} nats" if r.get("nll_nats") is not None else f"{r['nll_bpd']:.2f} bpd")),
        ("sampling speed", lambda r: -r["ms_per_sample"] if r.get("ms_per_sample") is not None else None,
         lambda r: f"{r['ms_per_sample']:.3f} ms, NFE {r['nfe']:.0f}"),
        ("conditional", cond_of,
         lambda r: f"label accuracy {cond_of(r):.2f}" + (f" ({CONDITIONAL_AS[r['model']]}.py)"
                                                          if r["model"] in CONDITIONAL_AS else "")),
        ("anomaly", lambda r: (anom.get((r["data"], r["model"])) or {}).get("auroc_mean"),
         lambda r: "AUROC " + " / ".join(f"{anom[(r['data'], r['model'])]['auroc_' + k]:.2f}" for k in OOD) +
         f", mean {anom[(r['data'], r['model'])]['auroc_mean']:.2f}"),
    ]
    absolute = {"conditional": CONDITIONAL_TIERS, "anomaly": ANOMALY_TIERS}
    for data in sorted({r["data"] for r in ok}, key=lambda d: (d not in TOYS, d)):
        best = {}
        for r in ok:
            if r["data"] == data and r.get("fid") is not None:
                if r["model"] not in best or r["fid"] < best[r["model"]]["fid"]:
                    best[r["model"]] = r
        fams = [f for f in everyone if f in best]
        cells = {f: [] for f in fams}
        for ci, (name, value, fmt) in enumerate(columns):
            vals = {f: value(best[f]) for f in fams}
            have = [f for f in fams if vals[f] is not None]
            ranked = sorted(have, key=lambda f: -vals[f])
            for f in fams:
                claim = LESSON[f][ci] if f in LESSON else "-"
                if vals[f] is None:
                    cells[f].append(f"lesson: {claim}; measured: none")
                    continue
                rank, k = ranked.index(f), len(ranked)
                if name in absolute:
                    lo, hi = absolute[name]
                    tier, k_ok = (2 if vals[f] >= hi else 0 if vals[f] < lo else 1), True
                    where = ""
                else:
                    tier, k_ok = (2 if rank < k / 3 else 0 if rank >= 2 * k / 3 else 1), k >= 3
                    where = f" (rank {rank + 1}/{k})"
                want = _tier(claim)
                verdict = "" if want is None or not k_ok else "agrees" if tier == want else \
                    "CONTRADICTS" if abs(tier - want) == 2 else "partly"
                cells[f].append(f"lesson: {claim}; measured: {fmt(best[f])}{where} {verdict}".strip())
                if verdict == "CONTRADICTS":
                    notes.append(f"{data}: {f} {name}: the lesson says {claim}, but it measures "
                                 f"{fmt(best[f])}{where}.")
        for f in fams:
            body.append([data, f"{f} ({best[f]['sampler']})", *cells[f]])
    header = ["data", "family (sampler)", "quality", "diversity", "stability (seed spread)", "likelihood",
              "sampling speed", "conditional generation", "likelihood for anomaly (AUROC " + " / ".join(OOD) + ")"]
    return md_table(header, body), notes


def _g(v) -> str:
    """A number in 3 significant digits, or "-" where a seed-mean curve point has none (a seed without metrics)."""
    return "-" if v is None else f"{v:.3g}"


def _calls(n, rows: list[dict]) -> str:
    """The fewest network calls that came close enough, or, where none of `rows` did, how far they were tried."""
    return f"{n:g}" if n is not None else f"none of their settings (up to {max(r['nfe'] for r in rows):.0f})"


def frontier_claims(rows: list[dict]) -> list[str]:
    """The lesson's frontier claims, each checked against the measured rows in one plain sentence."""
    out = []
    ok = [r for r in rows if r["status"] == "ok"]
    # "flow matching trains faster": fm against ddpm along the learning curves (same budget, same data)
    for data in sorted({r["data"] for r in ok if r.get("curve")}, key=lambda d: (d not in TOYS, d)):
        c = {r["model"]: r["curve"] for r in ok if r["data"] == data and r.get("curve") and r["suite"] in ("toy", "mnist")}
        if "fm" in c and "ddpm" in c and len(c["fm"]) == len(c["ddpm"]):
            key, better = ("hq", lambda a, b: a > b) if data in TOYS else ("fid", lambda a, b: a < b)
            pairs = [(p["frac"], p["sec"], p.get(key), q["sec"], q.get(key)) for p, q in zip(c["fm"], c["ddpm"])]
            wins = sum(better(a, b) for _, _, a, _, b in pairs if a is not None and b is not None)
            verdict = "holds" if wins == len(pairs) else "partly" if wins else "does NOT hold"
            out.append(f"{data}: flow matching trains faster: {verdict}: {key} of fm vs ddpm along the same budget: " +
                       "; ".join(f"{_g(a)} vs {_g(b)} at {sa:.0f} s / {sb:.0f} s" for _, sa, a, sb, b in pairs) + ".")
    srows = [r for r in ok if r["suite"] == "samplers" and r.get("fid") is not None]
    for data in sorted({r["data"] for r in srows}, key=lambda d: (d not in TOYS, d)):
        rd = [r for r in srows if r["data"] == data]
        base = next((r for r in rd if r["model"] == "ddpm" and r["sampler"] == "ddpm-1000"), None)
        dd = [r for r in rd if r["model"] == "ddpm" and _method(r) in ("ddim", "dpm++2m") and r.get("eta", 0) == 0]
        fm_rows = [r for r in rd if r["model"] == "fm"]
        toy_hq = data in TOYS and all(r.get("hq") is not None for r in [base, *dd, *fm_rows] if r)
        if base and dd and fm_rows and toy_hq:  # the same claim on 2-D points by hq (the FD sees only 2 moments)
            # "as close" mirrored for a higher-is-better score: hq >= ref / 1.1, or within 2 binomial std of it
            hq_ref = max(r["hq"] for r in fm_rows)
            def close(r: dict, ref: float) -> bool:
                spread = 2 * math.sqrt(ref * (1 - ref) / r["n_samples"]) if r.get("n_samples") else 0.0
                return r["hq"] >= min(ref / 1.1, ref - spread)
            need = lambda rs, ref: min((r["nfe"] for r in rs if close(r, ref)), default=None)  # noqa: E731
            n_fm, n_dd = need(fm_rows, hq_ref), need(dd, base["hq"])
            verdict = "n/a" if n_fm is None or n_dd is None else "holds" if n_fm < n_dd else "does NOT hold"
            out.append(f"{data}: straighter trajectories, fewer ODE steps (on 2-D points by hq, as close = at least "
                       f"the reference / 1.1, or 2 binomial std below it): {verdict}: fm.py's ODE comes as close to "
                       f"its best hq ({hq_ref:.3f}) at {_calls(n_fm, fm_rows)} network calls; ddpm.py's deterministic "
                       f"samplers (DDIM eta 0, DPM-Solver++) come as close to DDPM 1000's hq ({base['hq']:.3f}) at "
                       f"{_calls(n_dd, dd)} calls. "
                       "fm Euler: " + ", ".join(
                           f"{r['nfe']:.0f} calls hq {r['hq']:.3f}" for r in sorted(fm_rows, key=lambda r: r["nfe"])
                           if _method(r) == "euler") + ".")
        elif base and dd and fm_rows:  # "straighter trajectories (fewer ODE steps)"
            fm_ref = min(r["fid"] for r in fm_rows)
            noise = max((r.get("fid_real_std") or 0.0 for r in rd), default=0.0)  # FID's spread by chance at this n
            close = lambda fid, ref: fid <= max(1.1 * ref, ref + 2 * noise)  # noqa: E731
            need = lambda rs, ref: min((r["nfe"] for r in rs if close(r["fid"], ref)), default=None)  # noqa: E731
            n_fm, n_dd = need(fm_rows, fm_ref), need(dd, base["fid"])
            verdict = "n/a" if n_fm is None or n_dd is None else "holds" if n_fm < n_dd else "does NOT hold"
            within = "10%" + (f" (or 2 std of real data's FID at this n, {2 * noise:.3g})" if noise else "")
            out.append(f"{data}: straighter trajectories, fewer ODE steps: {verdict}: fm.py's ODE comes within {within} of "
                       f"its best FID ({fm_ref:.3g}) at {_calls(n_fm, fm_rows)} network calls; ddpm.py's deterministic "
                       f"samplers (DDIM eta 0, DPM-Solver++) come as close to DDPM 1000 ({base['fid']:.3g}) at "
                       f"{_calls(n_dd, dd)} calls. fm Euler: " + ", ".join(f"{r['nfe']:.0f} calls FID {r['fid']:.3g}"
                                                          for r in sorted(fm_rows, key=lambda r: r["nfe"])
                                                          if _method(r) == "euler") + ".")
        cm = sorted((r for r in rd if r["model"] == "consistency"), key=lambda r: r["nfe"])
        if base and cm and data in TOYS and base.get("hq") is not None and all(r.get("hq") is not None for r in cm):
            # on 2-D points the Frechet distance compares only means and covariances (samples spread between the
            # modes can match it): judge the penalty by hq, the toys' quality column, mirrored: hq >= DDPM's / 1.5
            best = max(cm, key=lambda r: r["hq"])
            verdict = "holds" if best["hq"] >= base["hq"] / 1.5 else "does NOT hold"
            out.append(f"{data}: consistency models, 1-4 steps with a moderate quality penalty (on 2-D points by hq, "
                       f"taken as at least DDPM 1000's / 1.5): {verdict}: " + ", ".join(
                           f"{r['nfe']:.0f} call(s) hq {r['hq']:.3f} (FD {r['fid']:.3g})" for r in cm) +
                       f" against DDPM 1000's hq {base['hq']:.3f} (FD {base['fid']:.3g}).")
        elif base and cm:  # "consistency: 1-4 steps with a moderate FID penalty"
            best = min(cm, key=lambda r: r["fid"])
            verdict = "holds" if best["fid"] <= 1.5 * base["fid"] else "does NOT hold"
            out.append(f"{data}: consistency models, 1-4 steps with a moderate FID penalty (taken as at most +50% "
                       f"over DDPM 1000): {verdict}: " + ", ".join(
                           f"{r['nfe']:.0f} call(s) FID {r['fid']:.2f} ({100 * (r['fid'] / base['fid'] - 1):+.0f}%)"
                           for r in cm) + f" against DDPM 1000's {base['fid']:.2f}.")
        plain = lambda r: not r.get("eta") and r.get("spacing") != "karras"  # noqa: E731  (deterministic, lambda)
        lat = {(_method(r), r.get("sampler_steps")): r for r in rd if r["model"] == "ldm" and plain(r)}
        pix = {(_method(r), r.get("sampler_steps")): r for r in rd if r["model"] == "ddpm" and plain(r)}
        same = [k for k in lat if k in pix]
        if same:  # "latent diffusion cuts the per-step cost 16-64x" (~3200x with DDIM-50 against DDPM 1000)
            k = same[0]
            ratio = (pix[k]["ms_per_sample"] / pix[k]["nfe"]) / (lat[k]["ms_per_sample"] / lat[k]["nfe"])
            verdict = "holds" if ratio >= 16 else "does NOT hold"
            e2e = (f"; end to end, ldm DDIM-50 is {base['ms_per_sample'] / lat[('ddim', 50)]['ms_per_sample']:.0f}x "
                   f"faster than pixel DDPM 1000 (the lesson: ~3200x)") if base and ("ddim", 50) in lat else ""
            out.append(f"{data}: latent diffusion cuts the per-step cost 16-64x: {verdict}: one {k[0]} step costs "
                       f"{ratio:.1f}x less in the latent space (ms per sample / NFE, the decoder included){e2e}.")
    return out


def _made_by(r: dict) -> str:
    """How a setting suite's checkpoint was trained: on the suite's budget, given (--ckpt) or at its defaults."""
    if r.get("budget_s"):
        return f"{r['budget_s']:g} s budget"
    return {"given": "given", "defaults": "its defaults"}.get(r.get("checkpoint_from"), "its defaults or given")


def write_markdown(rows: list[dict], out: Path) -> None:
    runs_seen = []
    for r in rows:
        if r.get("run") and r["run"] not in runs_seen:
            runs_seen.append(r["run"])
    parts = ["# bench.py results", "", "Produced by (one line per command whose rows are below):", ""]
    parts += [f"- `{m['command']}` on {m['machine']}; started {m['when']}, wall time {m['wall_s']} s; {m['load']}; "
              f"model files (sha1 of their content): " + ", ".join(f"{k}.py {v}" for k, v in m.get("code_sha1", {}).items())
              for m in runs_seen]
    parts += ["", "Each model is trained for the same wall-clock budget of training loop (steps = budget / measured "
             "seconds per step); `train s` is the loop time actually spent. Numbers are the mean (± the standard "
             "deviation over seeds, the measured training stability). NFE = network calls per sample, counted "
             "through the network while sampling (EBM: energy gradients, i.e. forward + backward). NLL: nats per "
             "point on the toys (flow exact, VAE IWAE bound, DDPM variational bound, EBM grid integration of exp(-E)); "
             "bits/dim on images (flow exact with uniform dequantization, VAE IWAE with the discretized-logistic "
             "decoder, DDPM variational bound with the discretized decoder)."]
    for suite in SUITES:
        srows = [r for r in rows if r["suite"] == suite]
        if not srows:
            continue
        for data in sorted({r["data"] for r in srows}, key=lambda d: (d not in TOYS, d)):
            d_rows = [r for r in srows if r["data"] == data]
            images = data not in TOYS
            budgets = {r.get("budget_s") for r in d_rows}
            firsts = {}
            for r in d_rows:
                firsts.setdefault(r["model"], r)
            trained = (f"Budget {budgets.pop():g} s per model" if len(budgets) == 1 and None not in budgets else
                       "Checkpoints: " + "; ".join(
                           f"{m} `{r.get('checkpoint', '-')}` ({r.get('steps') or '-'} steps, {_made_by(r)})"
                           for m, r in firsts.items()))
            parts += ["", f"## {suite}: {data}", "",
                      f"{trained}, {d_rows[0]['seeds']} seed(s), {d_rows[0].get('n_samples', '-')} samples against "
                      f"{d_rows[0].get('reference', '-')}.", ""]
            if suite == "samplers":
                parts.append(samplers_markdown(d_rows))
            elif suite == "guidance":
                parts.append(md_table(["model", "guidance scale s (= 1 + w)", "FID" if images else "Frechet dist.",
                                       "precision", "recall", "label accuracy", "IS", "NFE", "status"],
                                      [[r["model"], _fmt(r.get("guidance"), ".3g"), _fmt(r.get("fid"), ".3f"),
                                        _fmt(r.get("precision"), ".3f"), _fmt(r.get("recall"), ".3f"),
                                        _fmt(r.get("accuracy"), ".3f"), _fmt(r.get("is"), ".2f"), _fmt(r.get("nfe"), ".0f"),
                                        r["status"]] for r in d_rows]))
            elif suite == "anomaly":
                parts.append("AUROC of each family's score (-log p, its bound, or the EBM's energy: higher = less "
                             "likely) at ranking the OOD versions of the same test digits above the digits: 1 = "
                             "perfect, 0.5 = chance, below 0.5 = the model finds the OOD images MORE likely.\n")
                parts.append(anomaly_markdown(d_rows))
            elif suite == "conditional":
                parts.append(md_table(["model", "setting", "label accuracy", "FID" if images else "Frechet dist.",
                                       "per-class FID: mean / worst (class)", "generative classifier", "precision",
                                       "recall", "NFE", "steps", "status"],
                                      [[r["model"], r["sampler"], _fmt(r.get("accuracy"), ".3f"),
                                        _fmt(r.get("fid"), ".3f"),
                                        f"{_fmt(r.get('fid_class_mean'), '.2f')} / {_fmt(r.get('fid_class_worst'), '.2f')}"
                                        f" ({r.get('fid_class_worst_label', '-')})",
                                        _fmt(r.get("classifier_accuracy"), ".3f"), _fmt(r.get("precision"), ".3f"),
                                        _fmt(r.get("recall"), ".3f"), _fmt(r.get("nfe"), ".0f"),
                                        _fmt(r.get("steps"), ".0f"), r["status"]] for r in d_rows]))
            else:
                parts.append(md_table(_header(images), [_cols(r, images) for r in d_rows]))
    table, notes = tradeoff(rows)
    if table.count("\n") > 1:
        parts += ["", "## The lesson's trade-off table, measured", "",
                  "Each cell: the lesson's claim, the measured number, its rank among the families measured on that "
                  "data set (best first; tiers: top third high, bottom third low) and whether they agree. Quality: the "
                  "high-quality fraction hq (toys: samples within 3 std of a mode, PacGAN) or FID; diversity: modes "
                  "covered (toys; ties broken by recall) or recall; "
                  "stability: spread of FD/FID over seeds relative to its mean; likelihood: test NLL; speed: ms per "
                  "sample on this CPU; conditional: label accuracy of the conditional suite (absolute tiers: yes from "
                  f"{CONDITIONAL_TIERS[1]:.0%}, no below {CONDITIONAL_TIERS[0]:.0%}); anomaly: AUROC of the anomaly "
                  f"suite (yes from {ANOMALY_TIERS[1]:g}, no below {ANOMALY_TIERS[0]:g}). cfg, fm, consistency and "
                  "ldm are not in the lesson's table: measured and ranked, no verdict.", "", table, ""]
        parts += ["### The lesson's claims, one by one", ""] + [f"- {c}" for c in claims(rows) + frontier_claims(rows)]
        parts += [""]
        parts += ["### Where the measurement contradicts the lesson (opposite tier)", ""]
        parts += [f"- {n}" for n in notes] or ["- nothing ranked opposite to the lesson's tier in this run."]
    parts += ["", "Rows whose status is not `ok` name why (a family whose file is missing or fails to import is "
              "`not available`)."]
    (out / "results.md").write_text("\n".join(parts) + "\n")


# The lesson's sampler table: its speed column, keyed by (family, method, steps) ("k-step": consistency.py's sampler)
LESSON_SPEED = {("ddpm", "ddpm", 1000): "1x", ("ddpm", "ddim", 50): "20x", ("ddpm", "ddim", 20): "50x",
                ("ddpm", "dpm++2m", 15): "67x", ("consistency", "k-step", 4): "250x",
                ("consistency", "k-step", 1): "1000x", ("ldm", "ddim", 50): "3200x"}


def _method(r: dict) -> str:
    return r.get("method") or "k-step"  # consistency.py's settings name only the steps


def samplers_markdown(rows: list[dict]) -> str:
    """The lesson's sampler table: every family's sampler settings against DDPM 1000 (speed end to end, decoder
    included, and FID), beside the lesson's speed column."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("fid") is not None]
    base = next((r for r in ok if r["sampler"] == "ddpm-1000"), None)
    if base is None:
        return md_table(["sampler", "status"], [[r["sampler"], r["status"]] for r in rows])
    body = []
    names = {"dpm++2m": "DPM-Solver++(2M)", "k-step": "consistency"}
    for r in ok:
        speed = base["ms_per_sample"] / r["ms_per_sample"]
        drop = r["fid"] - base["fid"]
        method = names.get(_method(r), _method(r).upper() if _method(r) in ("ddpm", "ddim") else _method(r))
        steps = r.get("sampler_steps")
        extra = (f", eta {r['eta']:g}" if _method(r) == "ddim" and r.get("eta") is not None else "") + \
            (f", {r['spacing']}" + (f" rho {r['rho']:g}" if r.get("rho") else "") if r.get("spacing") else "")
        body.append([method if r["model"] == base["model"] else f"{r['model']}.py {method}",  # another family's solver
                     f"{steps}{extra}", f"{r['nfe']:.0f}", f"{speed:.1f}x",
                     LESSON_SPEED.get((r["model"], _method(r), steps), "-"),
                     f"{r['fid']:.2f} ({drop:+.2f}, {100 * drop / base['fid']:+.0f}%)",
                     _fmt(r.get("confident"), ".2f"), f"{r['precision']:.3f} / {r['recall']:.3f}",
                     f"{r['ms_per_sample']:.2f}"])
    return md_table(["Method", "Steps", "NFE", "Relative speed (measured, end to end)", "Lesson's speed",
                     f"{'FID' if rows[0]['data'] not in TOYS else 'Frechet dist.'} (change vs DDPM 1000)",
                     "classifier > 90% sure", "precision / recall", "ms/sample"], body)


def anomaly_markdown(rows: list[dict]) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    return md_table(["model", "score (mean on test digits)", *[f"AUROC {k}" for k in OOD], "AUROC mean",
                     "mean score: " + " / ".join(OOD), "n per set", "ms / example"],
                    [[r["model"], f"{r['score']}: {r['score_test']:.3f}", *[_fmt(r[f"auroc_{k}"], ".3f") for k in OOD],
                      _fmt(r["auroc_mean"], ".3f"), " / ".join(_fmt(r[f"score_{k}"], ".3g") for k in OOD),
                      str(r["n_samples"]), _fmt(r.get("ms_per_example"), ".3g")] for r in ok] +
                    [[r["model"], r["status"], *["-"] * (len(OOD) + 4)] for r in rows if r["status"] != "ok"])


def _finish_axes(ax, data: str, xlabel: str, ylabel: str, title: str) -> None:
    """Log x (and log FID on images), labels, a small legend and a light grid."""
    ax.set_xscale("log")
    if data not in TOYS:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)


def write_figures(rows: list[dict], out: Path, runs: Runs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = {(r["data"], r["model"]): r["budget_s"] for r in rows
              if r["status"] == "ok" and r["suite"] in ("toy", "mnist")}  # (data, model) -> the row's budget
    pairs = sorted(budget)
    data_names = sorted({d for d, _ in pairs}, key=lambda d: (d not in TOYS, d))
    models = sorted({m for _, m in pairs}, key=lambda m: (MODELS.index(m.split("+")[0]) if m.split("+")[0] in MODELS
                                                          else len(MODELS), m))  # variants beside their family
    if data_names and models:
        fig, axes = plt.subplots(len(data_names), len(models), figsize=(1.6 * len(models), 1.7 * len(data_names)),
                                 dpi=50, squeeze=False)  # small: the figure is committed
        for i, d in enumerate(data_names):
            ref = datasets.load(d, "test").x[:1000] if d in TOYS else None
            for j, m in enumerate(models):
                ax = axes[i][j]
                ax.set_xticks([])
                ax.set_yticks([])
                x = runs.cached_samples(d, m, budget[d, m]) if (d, m) in budget else None
                if j == 0:
                    ax.set_ylabel(d, fontsize=8)
                if i == 0:
                    ax.set_title(m, fontsize=9)
                if x is None:
                    ax.text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=8, transform=ax.transAxes)
                    continue
                if x.dim() == 2:
                    ax.scatter(ref[:500, 0], ref[:500, 1], s=0.5, c="0.75")
                    ax.scatter(x[:600, 0], x[:600, 1], s=0.5, c="tab:blue")
                    lim = 5.5 if d == "grid25" else 1.6
                    ax.set_xlim(-lim, lim)
                    ax.set_ylim(-lim, lim)
                    ax.set_aspect("equal")
                else:
                    ax.imshow(datasets.image_grid(x.clamp(-1, 1), 6)[..., 0], cmap="gray")
        fig.tight_layout()
        fig.savefig(out / "samples.png")
        plt.close(fig)
    srows = [r for r in rows if r["suite"] == "samplers" and r["status"] == "ok" and r.get("fid") is not None]
    sdata = sorted({r["data"] for r in srows}, key=lambda d: (d not in TOYS, d))
    if srows:
        fig, axes = plt.subplots(1, len(sdata), figsize=(5 * len(sdata), 3.6), dpi=80, squeeze=False)
        for ax, d in zip(axes[0], sdata):
            rd = [r for r in srows if r["data"] == d]
            dd = [r for r in rd if r["model"] == "ddpm"]
            for label, sel, style in (("DDIM eta 0", lambda r: _method(r) == "ddim" and r["eta"] == 0, "o-"),
                                      ("DDIM eta 1", lambda r: _method(r) == "ddim" and r["eta"] == 1, "s-"),
                                      ("DPM-Solver++(2M), lambda", lambda r: _method(r) == "dpm++2m" and
                                       r.get("spacing") != "karras", "^-"),
                                      ("DPM-Solver++(2M), karras", lambda r: _method(r) == "dpm++2m" and
                                       r.get("spacing") == "karras", "v-"),
                                      ("DDPM ancestral", lambda r: _method(r) == "ddpm", "k*")):
                pts = sorted((r["nfe"], r["fid"]) for r in dd if sel(r))
                if pts:
                    ax.plot(*zip(*pts), style, label=f"ddpm.py {label}", ms=5)
            for m, method in sorted({(r["model"], _method(r)) for r in rd if r["model"] != "ddpm"}):  # other families
                pts = sorted((r["nfe"], r["fid"]) for r in rd if (r["model"], _method(r)) == (m, method))
                ax.plot(*zip(*pts), "x--", label=f"{m}.py {method}", ms=5)
            _finish_axes(ax, d, "network calls per sample (NFE)",
                         "FID (fid.py MNIST features)" if d not in TOYS else "Frechet distance (coordinates)",
                         f"Samplers on {d}: quality against NFE (n = {rd[0]['n_samples']})")
        fig.tight_layout()
        fig.savefig(out / "fid_vs_nfe.png")
        plt.close(fig)
    crows = [r for r in rows if r["status"] == "ok" and r["suite"] in ("toy", "mnist") and r.get("curve")]
    cdata = sorted({r["data"] for r in crows}, key=lambda d: (d not in TOYS, d))
    if crows:  # the learning curves: quality against seconds of training, every family, one panel per data set
        fig, axes = plt.subplots(1, len(cdata), figsize=(5 * len(cdata), 3.6), dpi=80, squeeze=False)
        for ax, d in zip(axes[0], cdata):
            for r in sorted((r for r in crows if r["data"] == d), key=lambda r: r["model"]):
                key = "hq" if d in TOYS else "fid"
                pts = [(p["sec"], p[key]) for p in r["curve"] if p.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), "o-" if r["model"].split("+")[0] in ("ddpm", "fm", "ldm", "consistency")
                            else "x--", label=f"{r['model']} ({r['curve_sampler']})", ms=4)
            _finish_axes(ax, d, "seconds of training (this CPU)",
                         "FID (fid.py MNIST features), lower is better" if d not in TOYS else
                         "high-quality fraction hq, higher is better",
                         f"Learning curves on {d} (mean of {crows[0]['seeds']} seed(s))")
        fig.tight_layout()
        fig.savefig(out / "curves.png")
        plt.close(fig)
