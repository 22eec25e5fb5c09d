// The latent map's scatter in a Streamlit (v1) component frame: draws the Plotly figure,
// shows the hovered point's thumbnail from the sprite sheets, and sends the global ids
// (customdata[0]) of a box, lasso or click selection back to Python.
//
// Arguments from Python (app/components/latent_scatter/__init__.py):
//   figure:    URL of the figure's JSON; fetched again only when it changes
//   sprites:   URL of the sprite manifest (sheets, tile size, layout, ids), or null
//   selection: per trace, the positions of the selected points, applied to a new figure
//   height:    the frame's height in px

const THUMB_PX = 96; // thumbnails are shown about this large, in whole pixels per tile pixel

const plot = document.getElementById("plot");
const thumb = document.getElementById("thumb");
let shown = { figure: null, sprites: null }; // URLs drawn (or being fetched)
let atlas = null; // the sprite manifest, with `tileOf`: global id -> tile number (or -1)
let sentIds = null; // the selection last sent, as a string, so that it is sent once
let drawing = false; // Plotly re-selects while it draws a new figure: not the user's doing

function toStreamlit(type, data) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...data }, "*");
}

function pointId(point) {
  const c = point.customdata;
  return Math.round(typeof c === "number" ? c : c[0]);
}

function sendSelection(points) {
  if (drawing) return;
  const ids = [...new Set(points.map(pointId))].sort((a, b) => a - b);
  const key = ids.join(",");
  if (key === sentIds) return;
  sentIds = key;
  toStreamlit("streamlit:setComponentValue", { value: { ids }, dataType: "json" });
}

async function drawFigure(url, selection) {
  const fig = await (await fetch(url)).json();
  if (url !== shown.figure) return; // a newer figure was asked for meanwhile
  fig.data.forEach((trace, i) => {
    trace.selectedpoints = selection.some((s) => s.length) ? selection[i] || [] : undefined;
  });
  fig.layout.clickmode = "event+select"; // a click selects the point, like a box or lasso
  fig.layout.selectionrevision = url; // the selection comes from Python with each new figure
  const first = !plot.on;
  drawing = true;
  try {
    await Plotly.react(plot, fig.data, fig.layout, { displaylogo: false, responsive: true });
  } finally {
    drawing = false;
  }
  if (first) {
    plot.on("plotly_hover", showThumb);
    plot.on("plotly_unhover", () => (thumb.hidden = true));
    plot.on("plotly_selected", (e) => e && sendSelection(e.points));
    plot.on("plotly_deselect", () => sendSelection([]));
  }
}

async function loadSprites(url) {
  const manifest = await (await fetch(url)).json();
  if (url !== shown.sprites) return;
  const lookup = manifest.ids && new Map(manifest.ids.map((id, k) => [id, k]));
  manifest.tileOf = (id) => (lookup ? lookup.get(id) ?? -1 : id < manifest.count ? id : -1);
  for (const sheet of manifest.sheets) new Image().src = sheet.url; // fetched before the first hover
  atlas = manifest;
}

// Tile k: its sheet, left and top px, as SpriteLayout (engine/projection/sprites.py) lays tiles out.
function tileOffsets(k) {
  const sheet = Math.floor(k / atlas.per_sheet);
  const within = k % atlas.per_sheet;
  return [sheet, (within % atlas.cols) * atlas.tile_w, Math.floor(within / atlas.cols) * atlas.tile_h];
}

function showThumb(event) {
  const id = pointId(event.points[0]);
  const k = atlas ? atlas.tileOf(id) : -1;
  thumb.dataset.id = id;
  if (k < 0) { // no sprites (yet), or a point of a subsample's complement
    thumb.hidden = true;
    return;
  }
  const [sheet, left, top] = tileOffsets(k);
  const scale = Math.max(1, Math.round(THUMB_PX / Math.max(atlas.tile_h, atlas.tile_w)));
  const { url, width, height } = atlas.sheets[sheet];
  Object.assign(thumb.style, {
    width: `${atlas.tile_w * scale}px`,
    height: `${atlas.tile_h * scale}px`,
    backgroundImage: `url("${url}")`,
    backgroundSize: `${width * scale}px ${height * scale}px`,
    backgroundPosition: `${-left * scale}px ${-top * scale}px`,
  });
  thumb.dataset.tile = `${sheet},${left},${top}`;
  // Above and to the left of the cursor (Plotly's label sits to its right), inside the frame.
  const w = atlas.tile_w * scale, h = atlas.tile_h * scale, gap = 14;
  const x = event.event ? event.event.clientX : 0, y = event.event ? event.event.clientY : 0;
  thumb.style.left = `${x - w - gap >= 0 ? x - w - gap : x + gap}px`;
  thumb.style.top = `${Math.max(0, Math.min(y - h - gap, window.innerHeight - h))}px`;
  thumb.hidden = false;
}

window.addEventListener("message", (event) => {
  if (event.data.type !== "streamlit:render") return;
  const { figure, sprites, selection, height } = event.data.args;
  toStreamlit("streamlit:setFrameHeight", { height });
  if (sprites !== shown.sprites) {
    shown.sprites = sprites;
    atlas = null;
    if (sprites) loadSprites(sprites);
  }
  if (figure !== shown.figure) {
    shown.figure = figure;
    drawFigure(figure, selection);
  }
});
toStreamlit("streamlit:componentReady", { apiVersion: 1 });
