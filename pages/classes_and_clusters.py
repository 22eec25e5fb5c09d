"""Classes and clusters: what a model with a discrete latent y (GM-DGM, the SSVAE) learned
about the classes it was shown labels of, and about those it never was (seed001 ch. 2)."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from app.runs import available_runs
from app.state import current_model, load_data
from app.widgets import explain, require_model, show_figure, show_image, show_table
from engine.data.label_regimes import labelled_classes
from engine.diagnostics.semi_supervised import (
    class_report,
    entropy_densities,
    most_confident,
    regime_table,
    yz_grid,
)
from engine.images import image_grid, labelled_rows
from engine.models.semi_supervised import SemiSupervisedVAE
from engine.store import Run

st.title("Classes and clusters")
sel, loaded = current_model()
model = loaded.model
require_model(
    loaded,
    SemiSupervisedVAE,
    "a model with a **discrete latent y** trained from few labels (GM-DGM or the SSVAE of seed001 ch. 2): "
    "its classifier q(y|x) names a component for every input, some of them classes it saw labels of, "
    "the others clusters it found on its own.",
    "digits-gmdgm",
)
run_dir, run_id = str(sel.choice.dir), sel.choice.info.id
data = load_data(run_dir, "test")
options = loaded.spec.data["options"]
regime = options.get("label_regime") or "us"
k = model.config.components


@st.cache_data(max_entries=16, show_spinner="Classifying the test set…")
def report(run_dir: str, step: int | None):
    return class_report(model, data)


rep = report(run_dir, sel.step)
classes = rep.classes
seen = labelled_classes(np.arange(len(classes)), regime).tolist() if regime != "us" else []
c1, c2, c3, c4 = st.columns(4)
c1.metric("Cluster accuracy (majority mapping)", f"{100 * rep.accuracy.accuracy:.1f}%")
c2.metric("Label regime", {"us": "US", "ss": "SS", "sus": "SUS", "accidental-sus": "accidental SUS"}[regime])
c3.metric("Components used", f"{len(np.unique(rep.components))} / {k}")
c4.metric("Test inputs", f"{len(rep.labels):,}")
st.caption(model.config.summary())


# -- Figs 2.5, 2.6: confusion --------------------------------------------------------------------
def confusion() -> None:
    st.subheader("Which class does each input's component stand for?")
    per_class = rep.confusion / np.maximum(rep.confusion.sum(1, keepdims=True), 1)
    names = [f"{c}{' (labelled)' if i in seen else ''}" for i, c in enumerate(classes)]
    fig = go.Figure(
        go.Heatmap(
            z=per_class,
            x=[str(c) for c in classes],
            y=names,
            text=rep.confusion,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar=dict(title="share of the class"),
        )
    )
    fig.update_layout(
        height=460, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="predicted class", yaxis_title="true class"
    )
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    show_figure(fig, f"confusion-{run_id}.html", key="confusion")
    per_class_acc = np.diag(rep.confusion) / np.maximum(rep.confusion.sum(1), 1)
    if seen and len(seen) < len(classes):
        unseen = [i for i in range(len(classes)) if i not in seen]
        st.markdown(
            f"Accuracy on the classes that kept labels: **{100 * per_class_acc[seen].mean():.1f}%**; on the "
            f"classes that never had any: **{100 * per_class_acc[unseen].mean():.1f}%** (mean over classes)."
        )
    explain(
        "Every test input goes to its most probable component, argmax_y q(y|x). Each component then stands "
        "for the class most of its members belong to (the majority mapping of seed001 eq. 2.11; several "
        "components may stand for one class). A row is a true class, a column the class its inputs' "
        "components stand for; the colour is the share of the row, the number the count. A perfect model "
        "has everything on the diagonal. In the semi-unsupervised regime the question is whether the "
        "never-labelled classes (rows without '(labelled)') get components of their own, as GM-DGM's "
        "mixture prior lets them, or are absorbed into labelled classes, as happens to the SSVAE "
        "(Figs 2.5 and 2.6)."
    )


# -- Figs 2.1, 2.3a: the y x z grid ----------------------------------------------------------------
def generation_grid() -> None:
    st.subheader("Generate every value of y from shared noise")
    if data.kind != "image":
        st.info("This model was trained on a table, so there are no pictures to show.")
        return
    used = np.unique(rep.components)
    c1, c2, c3 = st.columns(3)
    rows = c1.slider("Rows (shared draws)", 1, 12, 6, key="yz-rows")
    only_used = c2.toggle("Only components that have test inputs", value=k > 12, key="yz-used")
    seed = int(c3.number_input("Seed", 0, 10_000, 0, key="yz-seed"))
    columns = used.tolist() if only_used else list(range(k))
    columns = columns[:48]
    grid = yz_grid(model, rows, columns, seed=seed)
    picture = image_grid(grid, nrow=len(columns), value_range=data.value_range)
    show_image(picture, f"yz-grid-{run_id}.png", target_width=min(1100, 64 * len(columns)), key="yz-grid")
    mapped = [classes[rep.accuracy.mapping[c]] if c in rep.accuracy.mapping else "-" for c in columns]
    st.caption("Columns, left to right: " + ", ".join(f"y={c}→{m}" for c, m in zip(columns, mapped)))
    explain(
        "Each column decodes one value of y; each row shares one draw of the noise. For the SSVAE the "
        "row's z* ~ N(0, I) is the same in every column and y enters the decoder (Figs 2.1, 2.3a). For "
        "GM-DGM z depends on y, z = mu_y + sigma_y eps*, and the row shares the standardised draw eps*. A "
        "model whose y means the class shows one class per column and the row's style across it. An "
        "SSVAE trained without labels often shows the wrong roles: y changes the stroke and z the digit. "
        "The caption gives each column's component and the class the majority mapping assigns it."
    )


# -- Fig 2.3b: most confident inputs -------------------------------------------------------------
def confident_inputs() -> None:
    st.subheader("The inputs each component is surest of")
    if data.kind != "image":
        return
    best = most_confident(rep.probs, 20)
    c1, c2 = st.columns(2)
    per = c1.slider("Inputs per component", 4, 20, 10, key="confident-per")
    shown = (
        c2.slider("Components shown", 1, len(best), min(len(best), 20), key="confident-rows") if len(best) > 1 else 1
    )
    best = {c: members[:per] for c, members in best.items()}
    order = sorted(best, key=lambda c: (rep.accuracy.mapping.get(c, len(classes)), -len(best[c])))
    blank = torch.full((1, *data.shape), float(data.value_range[0]))
    images, labels = [], []
    for c in order[:shown]:
        x = data.batch(torch.as_tensor(best[c]))
        images.append(torch.cat([x, blank.expand(per - len(x), *data.shape)]) if len(x) < per else x)
        labels.append(f"y={c} -> {classes[rep.accuracy.mapping[c]]}")
    show_image(
        labelled_rows(images, labels, value_range=data.value_range, label_width=120),
        f"confident-{run_id}.png",
        key="confident",
    )
    explain(
        "Each row is a component with at least one test input; the row shows the inputs with the highest "
        "q(y = component | x), most confident first (Fig. 2.3b), and its label names the class the "
        "component stands for. Rows are sorted by that class, larger components first."
    )


# -- Fig 2.2: entropy of q(y|x) -------------------------------------------------------------------
def entropy_split() -> None:
    st.subheader("How sure is the classifier, on classes with and without labels?")
    split = seen if seen and len(seen) < len(classes) else list(range(len(classes) // 2))
    curves = entropy_densities(rep.entropy, rep.labels, split)
    fig = go.Figure(
        [
            go.Scatter(x=grid, y=density, mode="lines", name=name, fill="tozeroy")
            for name, (grid, density) in curves.items()
        ]
    )
    fig.update_layout(
        height=320,
        margin=dict(l=10, r=10, t=10, b=10),
        xaxis_title="entropy of q(y|x) (nats)",
        yaxis_title="density",
        legend=dict(orientation="h", y=-0.3),
    )
    show_figure(fig, f"entropy-{run_id}.html", key="entropy")
    means = {
        name: float(rep.entropy[np.isin(rep.labels, split) == (name == "labelled classes")].mean()) for name in curves
    }
    st.caption(" · ".join(f"mean over {name}: {v:.2f} nats" for name, v in means.items()))
    explain(
        "A Gaussian kernel density estimate of the entropy of q(y|x) over the test inputs, split into the "
        f"classes that kept labels ({', '.join(classes[i] for i in split)}) and the others (Fig. 2.2; in US and "
        "SS runs the split is the first half of the classes). A classifier that met a class only "
        "unlabelled is often less sure about it; the thesis sees that on Fashion-MNIST, not on MNIST."
    )


# -- Table 2.2: every run's accuracy by regime and model ------------------------------------------
def regime_by_model() -> None:
    st.subheader("Every GM-DGM and SSVAE run, by label regime")
    runs = []
    for choice in available_runs(kind=None):
        if choice.info.family not in ("gmdgm", "ssvae") or choice.info.status == "broken":
            continue
        config = Run.from_dir(choice.dir, readonly=True).config
        factor_acc = [v for name, v in choice.info.metrics.items() if name.startswith("test/acc/")]
        runs.append(
            {
                "model": choice.info.family,
                "regime": config["data"].get("options", {}).get("label_regime"),
                "accuracy": factor_acc[0] if factor_acc else None,
            }
        )
    show_table(pd.DataFrame(regime_table(runs)), "regime-by-model.csv", key="regimes")
    explain(
        "Test cluster accuracy (%, majority mapping) of every finished or running GM-DGM and SSVAE run the "
        "dashboard can see, as mean ± sd (number of runs), from the accuracy each run logged at its last "
        "evaluation; the thesis's Table 2.2 in the same layout. scripts/semi_unsupervised.py trains the "
        "full set (four seeds of each regime and model) and writes the table with k-means beside it."
    )


confusion()
generation_grid()
confident_inputs()
entropy_split()
regime_by_model()
