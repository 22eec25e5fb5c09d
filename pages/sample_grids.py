"""Sample grids: prior samples at several temperatures, and reconstructions."""

import pandas as pd
import streamlit as st
import torch

from app.state import current_model, load_data
from app.widgets import explain, show_image, show_table
from engine.images import labelled_rows
from engine.models.base import reconstruct, sample_conditions

st.title("Sample grids")
sel, loaded = current_model()
model, spec = loaded.model, loaded.spec
data = load_data(str(sel.choice.dir), "test")
is_image = data.kind == "image"
device = next(model.parameters()).device

st.subheader("Samples from the prior")
c1, c2, c3 = st.columns(3)
temperatures = c1.multiselect(
    "Temperatures (one row each)", [1.2, 1.0, 0.8, 0.6, 0.4, 0.2], default=[1.0, 0.8, 0.6, 0.4]
)
per_row = c2.slider("Samples per row", 4, 16, 10)
seed = c3.number_input(
    "Seed",
    min_value=0,
    max_value=2**31 - 1,
    value=0,
    step=1,
    help="The same seed draws the same latent noise, so a grid can be reproduced.",
)
conditions = {}
for name, values in sample_conditions(model).items():
    value = st.selectbox(f"Condition: {name}", ["any", *values])
    if value != "any":
        conditions[name] = value
if not sample_conditions(model):
    st.caption(
        "This model has no conditions to sample from (clusters or layers appear here for models that have them)."
    )

if not temperatures:
    st.info("Pick at least one temperature.")
else:
    temperatures = sorted(temperatures, reverse=True)
    with torch.no_grad():
        rows = []
        for t in temperatures:  # the same noise at every temperature: rows differ only in scale
            gen = torch.Generator(device=device).manual_seed(int(seed))
            rows.append(model.sample(per_row, temperature=t, generator=gen, **conditions).cpu())
    if is_image:
        grid = labelled_rows(rows, [f"T = {t:g}" for t in temperatures], value_range=data.value_range)
        show_image(grid, f"samples-{sel.choice.info.id}-seed{seed}.png", key="samples")
    else:
        names = [c.name for c in data.schema] if data.schema else [f"x{i}" for i in range(rows[0].shape[1])]
        table = pd.concat(
            [pd.DataFrame(r.numpy(), columns=names).assign(temperature=t) for t, r in zip(temperatures, rows)]
        )
        show_table(table, f"samples-{sel.choice.info.id}.csv", key="samples")
    explain(
        "Each row decodes latents drawn from the prior N(0, I) scaled by a **temperature** T: "
        "z = T·ε with the same noise ε in every row, so a column shows one draw getting more "
        "typical as T falls. Lower temperatures give cleaner but less varied samples; T = 1 is the "
        "model's actual prior. The images are the decoder's mean, not a noisy draw from p(x|z)."
    )

st.subheader("Reconstructions of test inputs")
c1, c2 = st.columns([1, 2])
mode = c1.radio("Inputs", ["random", "chosen"], horizontal=True)
if mode == "random":
    n_show = c2.slider("How many", 4, 16, 10, key="n_recon")
    gen = torch.Generator().manual_seed(int(seed))
    index = torch.randperm(len(data), generator=gen)[:n_show]
else:
    text = c2.text_input(f"Test example indices (0–{len(data) - 1}, comma separated)", "0, 1, 2, 3, 4, 5")
    try:
        index = torch.tensor([int(t) for t in text.replace(" ", "").split(",") if t])
        if len(index) == 0 or index.min() < 0 or index.max() >= len(data):
            raise ValueError
    except ValueError:
        st.error(f"Give whole numbers between 0 and {len(data) - 1}, separated by commas.")
        st.stop()
x = data.batch(index)
with torch.no_grad():
    x_hat = reconstruct(model, x.to(device)).cpu()
if is_image:
    grid = labelled_rows([x, x_hat], ["input", "reconstruction"], value_range=data.value_range)
    show_image(grid, f"reconstructions-{sel.choice.info.id}.png", key="recon")
else:
    names = [c.name for c in data.schema] if data.schema else [f"x{i}" for i in range(x.shape[1])]
    both = pd.concat(
        [
            pd.DataFrame(x.numpy(), columns=names).assign(kind="input", index=index.numpy()),
            pd.DataFrame(x_hat.numpy(), columns=names).assign(kind="reconstruction", index=index.numpy()),
        ]
    )
    show_table(both.sort_values(["index", "kind"]), f"reconstructions-{sel.choice.info.id}.csv", key="recon")
explain(
    "Top row: test inputs the model never saw in training (indices "
    f"{', '.join(map(str, index.tolist()[:8]))}{'…' if len(index) > 8 else ''}). Bottom row: the "
    "decoder's output for the encoder's mean latent of each input. What the reconstruction loses "
    "(fine strokes, exact colours) is what the latent code does not keep."
)
