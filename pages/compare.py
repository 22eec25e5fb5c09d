"""Compare models: two to four runs of any families on the same kind of data, side by side:
their bounds, activity and disentanglement scores, samples drawn with shared noise,
reconstructions of the same inputs and traversals of each one's most informative latents.
The URL names the runs (`?runs=digits-vae,digits-tcvae`), so a link opens the comparison."""

import pandas as pd
import streamlit as st
import torch

from app import links
from app.runs import RunChoice, available_runs, run_slug
from app.state import activity_table, disentanglement_scores, load_data, load_model
from app.widgets import explain, show_image, show_table
from engine.diagnostics.activity import ACTIVE_THRESHOLD, GroupActivity
from engine.errors import AtlasError
from engine.images import labelled_rows
from engine.models.base import continuous_latents, posterior_means, reconstruct
from engine.randomness import random_stream
from engine.store import Run
from engine.traversal import decode_group, traversal_latents, traversal_range

MOST = 4
PARAM = "runs"

st.title("Compare models")
choices = [c for c in available_runs() if c.info.status != "broken"]
by_key = {c.key: c for c in choices}
if len(choices) < 2:
    st.info("Comparing needs at least two trained models; train another with `latent-atlas train --preset …`.")
    st.stop()


def same_data(a: RunChoice, b: RunChoice) -> bool:
    return a.info.dataset == b.info.dataset and a.info.input_shape == b.info.input_shape


def from_link(text: str) -> list[str]:
    """The run keys a link's comma-separated list names (by key, id or name: the demo first, then the
    newest run of that name); unknown ones are named in a warning."""
    keys, unknown = [], []
    for token in filter(None, (t.strip() for t in text.split(","))):
        found = next((c for c in choices if token in (c.key, c.info.id, run_slug(c.info.id))), None)
        if found is None:
            unknown.append(token)
        else:
            keys.append(found.key)
    if unknown:
        st.warning(f"The link names {', '.join(map(links.quoted, unknown))}, which are not models here; left out.")
    return list(dict.fromkeys(keys))[:MOST]


if "compare-runs" not in st.session_state:
    linked = from_link(st.query_params[PARAM]) if PARAM in st.query_params else []
    if not linked:  # the first two models, in the sidebar's order, that share their data
        pairs = ((a, b) for i, a in enumerate(choices) for b in choices[i + 1 :] if same_data(a, b))
        linked = [c.key for c in next(pairs, (choices[0], choices[1]))]
    st.session_state["compare-runs"] = linked
picked = st.multiselect(
    f"Models (two to {MOST})",
    list(by_key),
    format_func=lambda key: by_key[key].label,
    max_selections=MOST,
    key="compare-runs",
)
links.write(
    PARAM, ",".join(run_slug(by_key[k].info.id) if k.startswith("demo/") else by_key[k].info.id for k in picked)
)
if len(picked) < 2:
    st.info("Pick at least two models.")
    st.stop()
runs = [by_key[k] for k in picked]
shapes = {tuple(c.info.input_shape or ()) for c in runs}
if len(shapes) > 1:
    listed = "; ".join(f"{run_slug(c.info.id)}: {c.info.dataset} {tuple(c.info.input_shape or ())}" for c in runs)
    st.info(f"These models take inputs of different shapes ({listed}); compare models of the same kind of data.")
    st.stop()
models = {c.key: load_model(str(c.dir), None).model for c in runs}
names = {c.key: run_slug(c.info.id) for c in runs}
first = runs[0]
data = load_data(str(first.dir), "test")
images = data.kind == "image"

c1, c2, c3 = st.columns(3)
temperature = c1.slider("Temperature", 0.1, 1.5, 1.0, 0.1, key="compare-temp")
seed = int(c2.number_input("Seed", 0, 10_000, 0, key="compare-seed"))
n = c3.slider("Images per row", 4, 12, 8, key="compare-n")

# ---- numbers -------------------------------------------------------------------------------------------
st.subheader("Bounds, activity and scores")


def latest_test_elbo(choice: RunChoice) -> float | None:
    series = Run.from_dir(choice.dir, readonly=True).metrics.scalars(["test/elbo"])
    return float(series["test/elbo"][1][-1]) if "test/elbo" in series else None


rows = []
for c in runs:
    model = models[c.key]
    activity = activity_table(str(c.dir), None)
    active = sum(int((s["mean_variance"] > ACTIVE_THRESHOLD).sum()) for s in activity.values())
    total = sum(len(s["mean_variance"]) for s in activity.values())
    row = {
        "model": names[c.key],
        "family": c.info.family,
        "data": c.info.dataset,
        "parameters": sum(p.numel() for p in model.parameters()),
        "test ELBO (nats, at training)": latest_test_elbo(c),
        "active units": f"{active} of {total}",
    }
    if sum(g.size for g in model.latent_groups) <= 256 and any(col.is_categorical for col in data.labels.values()):
        try:
            scores = disentanglement_scores(str(c.dir), None, None, False)
            row.update({"MIG": round(scores["mig"], 3), "SAP": round(scores["sap"], 3)})
        except AtlasError as err:
            row["MIG"] = f"not scored: {err}"
    rows.append(row)
show_table(pd.DataFrame(rows), "compare.csv", key="compare-table")
explain(
    "The test ELBO each run logged at its last evaluation (the Home page computes its IWAE bound); active units "
    f"have Var_x E[z|x] > {ACTIVE_THRESHOLD} over the test inputs; MIG and SAP score all the model's latents (at "
    "most 256) against the data's categorical labels, as on the Latent activity page."
)

if not images:
    st.stop()

# ---- samples and reconstructions ---------------------------------------------------------------------
st.subheader("Samples")
sample_rows = []
with torch.no_grad():
    for c in runs:
        with random_stream(seed):  # models whose latents have the same shape draw the same noise
            sample_rows.append(models[c.key].sample(n, temperature=temperature).cpu())
show_image(labelled_rows(sample_rows, [names[c.key] for c in runs], data.value_range), "compare-samples.png")
st.subheader("Reconstructions of the same test inputs")
x = data.batch(torch.arange(min(n, len(data))))
recon_rows = [x]
with torch.no_grad():
    for c in runs:
        model = models[c.key]
        recon_rows.append(reconstruct(model, x.to(next(model.parameters()).device)).cpu())
show_image(
    labelled_rows(recon_rows, ["input"] + [names[c.key] for c in runs], data.value_range),
    "compare-reconstructions.png",
)

# ---- traversals ---------------------------------------------------------------------------------------
st.subheader("Each model's most informative latents")
steps = 9
for c in runs:
    model = models[c.key]
    if not continuous_latents(model):
        st.caption(f"{names[c.key]}: its latents are discrete codes, which have no line to traverse.")
        continue
    activity = activity_table(str(c.dir), None)
    ranked = sorted(
        ((float(kl), group, d) for group, s in activity.items() for d, kl in enumerate(s["kl"])), reverse=True
    )[:3]
    with torch.no_grad():
        base = {name: m[0] for name, m in posterior_means(model, x[:1].to(next(model.parameters()).device)).items()}
        grid_rows, labels = [], []
        for kl, group, d in ranked:
            act = GroupActivity(**{k: torch.from_numpy(v) for k, v in activity[group].items()})
            low, high = traversal_range("posterior", act)
            z = traversal_latents(base[group].cpu(), [d], low, high, steps)[0]
            grid_rows.append(decode_group(model, base, group, z.to(base[group].device)).cpu())
            labels.append(f"{group}[{d}] {kl:.1f} nats")
    show_image(
        labelled_rows(grid_rows, labels, data.value_range, label_width=150),
        f"compare-traversal-{names[c.key]}.png",
        caption=names[c.key],
        key=f"traversal-{c.key}",
    )
explain(
    "For each model, its three latent dimensions with the largest KL (the most information about the input), "
    "each moved over ±2 sd of its aggregate posterior from the first test input's posterior mean, the others held."
)
