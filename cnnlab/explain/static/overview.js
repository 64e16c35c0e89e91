/* cnnlab explain: the overview, every layer in order with every channel as a heat map.
 *
 * Large layers stay fast: a layer shows its first CX.FIRST_TILES channels until the user
 * asks for all of them, and a heat map is painted only when it scrolls into view
 * (IntersectionObserver), once per image.
 */
"use strict";

CX.FIRST_TILES = 24;     // channels shown per layer before "show all"
CX.expanded = {};        // layer index -> true when the user asked for all channels
CX.scales = {};          // layer index -> largest |value| (the layer's colour scale)
CX.scaleMode = "layer";  // "layer": one scale per layer (channels comparable); "channel"

/** What a layer does, in a few words: "3×3 conv, stride 1, same padding, ReLU". */
CX.describe = function (L) {
  const a = L.args || {};
  const pair = (v) => (Array.isArray(v) ? (v[0] === v[1] ? `${v[0]}` : `${v[0]}×${v[1]}`) : `${v}`);
  const size = (v) => (Array.isArray(v) ? `${v[0]}×${v[1]}` : `${v}×${v}`);
  const act = L.activation ? `, ${L.activation}` : "";
  switch (L.kind) {
    case "input": return "the image, normalised";
    case "conv": return `${size(a.kernel_size)} kernels, stride ${pair(a.strides || 1)}, ` +
      `${a.padding || "valid"} padding${act}`;
    case "pool": return `${size(a.pool_size || 2)} window, stride ${pair(a.strides || a.pool_size || 2)}` +
      (a.padding === "same" ? ", same padding" : "");
    case "dense": return `${L.output_shape[0]} units${act}`;
    case "bn": return "per channel: (x − μ) / √(σ² + ε) · γ + β";
    case "act": return L.activation ? `${L.activation}: ${CX.ACT_FORMULA[L.activation] || ""}` : "linear";
    case "flatten": return "(H, W, C) → one vector";
    case "gap": return L.gap.kind === "max" ? "largest value of each channel" : "mean of each channel";
    case "dropout": return "identity when predicting (drops values only while training)";
    case "pad": return "adds zeros around the image";
    default: return "composite layer: its output";
  }
};

/** The colour scale of layer li: largest |value| of the layer (or of the channel). */
CX.scaleOf = function (li, c) {
  const L = CX.layer(li);
  if (CX.scaleMode === "channel") return CX.absMax(L.out, c);
  if (!(li in CX.scales)) CX.scales[li] = CX.absMax(L.out);
  return CX.scales[li];
};

/* ---- lazy painting ---------------------------------------------------------------- */

CX.observer = null;

CX.paintTile = function (canvas) {
  const li = +canvas.dataset.li, c = +canvas.dataset.ch, L = CX.layer(li);
  if (L.kind === "input") {
    if (!CX.inputRange) CX.inputRange = CX.range(L.out);
    CX.paint(canvas, L.out, c, CX.inputRange, L.channel_names[c]);
  } else {
    CX.paint(canvas, L.out, c, CX.scaleOf(li, c));
  }
  canvas.dataset.painted = "1";
};

CX.watch = function (canvas) {
  if (!CX.observer) {
    CX.observer = new IntersectionObserver((entries) => {
      for (const e of entries) {
        if (e.isIntersecting) {
          CX.observer.unobserve(e.target);
          CX.paintTile(e.target);
        }
      }
    }, { rootMargin: "300px" });
  }
  CX.observer.observe(canvas);
};

/* ---- building the page ------------------------------------------------------------ */

/** (y, x) of the map pixel under a mouse event on a canvas of H x W (inside its border). */
CX.pixelAt = function (ev, canvas, H, W) {
  const r = canvas.getBoundingClientRect();
  const fx = (ev.clientX - r.left - canvas.clientLeft) / canvas.clientWidth;
  const fy = (ev.clientY - r.top - canvas.clientTop) / canvas.clientHeight;
  const x = Math.min(W - 1, Math.max(0, Math.floor(fx * W)));
  const y = Math.min(H - 1, Math.max(0, Math.floor(fy * H)));
  return [y, x];
};

CX.tile = function (li, c, label) {
  const L = CX.layer(li);
  const [, H, W] = L.out.shape;
  const canvas = CX.el("canvas", { width: W, height: H, dataset: { li, ch: c },
    "aria-label": `${L.name} channel ${c}` });
  canvas.addEventListener("click", (ev) => {
    const [y, x] = CX.pixelAt(ev, canvas, H, W);
    CX.select({ li, ch: c, y, x });
  });
  canvas.addEventListener("mousemove", (ev) => {
    const [y, x] = CX.pixelAt(ev, canvas, H, W);
    canvas.title = `${L.name}, channel ${c}, row ${y}, column ${x}: ${CX.fmt(CX.at(L.out, c, y, x))}`;
  });
  CX.watch(canvas);
  return CX.el("figure", { class: "tile", dataset: { li, ch: c } },
    CX.el("div", { class: "map" }, canvas), CX.el("figcaption", {}, label));
};

/** A vector (Flatten, Dense, pooling to (C,)) as a strip of cells; click one for its arithmetic. */
CX.strip = function (li) {
  const L = CX.layer(li), n = L.out.n;
  const cols = n <= 32 ? n : n <= 2048 ? 64 : 256;
  const rows = Math.ceil(n / cols);
  const cell = Math.max(2, Math.min(22, Math.floor(540 / cols)));
  const canvas = CX.el("canvas", { width: cols, height: rows, class: "strip", dataset: { li },
    style: { width: `${cols * cell}px`, height: `${rows * cell}px` } });
  const m = CX.scaleOf(li, null);
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(cols, rows), v = CX.arr(L.out);
  for (let i = 0; i < cols * rows; i++) {
    const j = i < n ? Math.max(0, Math.min(255, Math.round((m > 0 ? v[i] / m : 0) * 127.5 + 127.5))) : -1;
    for (let k = 0; k < 3; k++) img.data[i * 4 + k] = j < 0 ? 255 : CX.LUT[j * 3 + k];
    img.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  const unitAt = (ev) => {
    const [y, x] = CX.pixelAt(ev, canvas, rows, cols);
    return Math.min(n - 1, y * cols + x);
  };
  canvas.addEventListener("click", (ev) => CX.select({ li, unit: unitAt(ev) }));
  canvas.addEventListener("mousemove", (ev) => {
    const u = unitAt(ev);
    canvas.title = `${L.name}[${u}] = ${CX.fmt(v[u])}`;
  });
  return CX.el("div", { class: "map strip-wrap", dataset: { li, cols } }, canvas);
};

/** The last layer's outputs per class (logits), as bars around zero. */
CX.logitBars = function (li) {
  const L = CX.layer(li), v = CX.arr(L.out), classes = CX.payload.model.classes;
  const m = CX.absMax(L.out) || 1;
  return CX.el("div", { class: "bars logits" }, [...v].map((z, j) =>
    CX.el("div", { class: "bar-row", dataset: { li, unit: j }, onclick: () => CX.select({ li, unit: j }) },
      CX.el("span", { class: "bar-label" }, classes[j] ?? j),
      CX.el("span", { class: "bar-track centred" },
        CX.el("span", { class: "bar " + (z < 0 ? "neg" : "pos"),
          style: { width: `${Math.abs(z) / m * 50}%`, [z < 0 ? "right" : "left"]: "50%" } })),
      CX.num(z, null, 3))));
};

/** The class probabilities as bars (the output step: softmax or sigmoid of the logits). */
CX.probBars = function () {
  const P = CX.payload, li = P.layers.length;
  const order = [...P.probabilities.keys()];
  if (order.length > 20) order.sort((a, b) => P.probabilities[b] - P.probabilities[a]).splice(10);
  return CX.el("div", { class: "bars probs" }, order.map((j) => {
    const p = P.probabilities[j];
    return CX.el("div", { class: "bar-row" + (j === P.prediction.index ? " best" : ""),
      dataset: { li, unit: j }, onclick: () => CX.select({ li, unit: j }) },
    CX.el("span", { class: "bar-label" }, P.model.classes[j] ?? j),
    CX.el("span", { class: "bar-track" }, CX.el("span", { class: "bar prob", style: { width: `${p * 100}%` } })),
    CX.el("span", { class: "num", "data-value": CX.exact(p) }, `${(p * 100).toFixed(1)}%`));
  }));
};

CX.layerHead = function (li) {
  const L = CX.layer(li);
  return CX.el("header", { class: "layer-head" },
    CX.el("div", { class: "lname" }, L.name, CX.el("span", { class: "ltype" }, L.type)),
    CX.el("div", { class: "ldesc" }, CX.describe(L)),
    CX.el("div", { class: "lmeta" },
      CX.el("span", { title: "output shape (height, width, channels)" }, CX.shapeText(L.output_shape)),
      L.params ? CX.el("span", { title: L.formula }, CX.plural(L.params, "param")) : null,
      CX.el("span", { title: "receptive field: the input pixels (per axis) one output can see" },
        L.receptive_field ? `RF ${L.receptive_field}×${L.receptive_field}` : "RF whole image")),
    L.params ? CX.el("div", { class: "lformula" }, L.formula) : null);
};

CX.layerBody = function (li) {
  const L = CX.layer(li);
  const last = li === CX.payload.layers.length - 1;
  if (!CX.isImage(L.out)) return last ? CX.logitBars(li) : CX.strip(li);
  const C = L.out.shape[0];
  const shown = CX.expanded[li] ? C : Math.min(C, CX.FIRST_TILES);
  const tiles = [];
  if (L.kind === "input") {
    tiles.push(CX.el("figure", { class: "tile image" },
      CX.el("div", { class: "map" }, CX.el("img", { src: CX.payload.image.png, alt: "input image" })),
      CX.el("figcaption", {}, "image")));
  }
  for (let c = 0; c < shown; c++) tiles.push(CX.tile(li, c, L.channel_names ? L.channel_names[c] : c));
  if (shown < C) {
    tiles.push(CX.el("button", { class: "more", onclick: () => {
      CX.expanded[li] = true;
      CX.rerenderLayer(li);
    } }, `show all ${C} channels`));
  }
  return CX.el("div", { class: "tiles" }, tiles);
};

CX.layerSection = function (li) {
  const L = CX.layer(li);
  return CX.el("section", { class: `layer kind-${L.kind}`, id: `layer-${li}`, dataset: { li, kind: L.kind } },
    CX.layerHead(li), CX.layerBody(li));
};

CX.outputSection = function () {
  const P = CX.payload, li = P.layers.length, act = P.model.output_activation || "none";
  return CX.el("section", { class: "layer kind-output", id: `layer-${li}`, dataset: { li, kind: "output" } },
    CX.el("header", { class: "layer-head" },
      CX.el("div", { class: "lname" }, "output", CX.el("span", { class: "ltype" }, act)),
      CX.el("div", { class: "ldesc" }, act === "sigmoid" ? "probability = 1 / (1 + e^−logit)" :
        "probabilities = e^logit / Σ e^logit"),
      CX.el("div", { class: "lmeta" }, CX.el("span", {}, CX.plural(P.model.classes.length, "class", "classes")))),
    CX.probBars());
};

CX.rerenderLayer = function (li) {
  const old = document.getElementById(`layer-${li}`);
  old.replaceWith(CX.layerSection(li));
  if (CX.sel) CX.highlight(CX.sel);
};

CX.renderOverview = function () {
  const root = document.getElementById("overview");
  if (CX.observer) CX.observer.disconnect();
  CX.scales = {};
  CX.inputRange = null;
  root.replaceChildren(...CX.payload.layers.map((_, li) => CX.layerSection(li)), CX.outputSection());
};

/* ---- highlighting the selected neuron and what it sees ---------------------------- */

CX.clearMarks = function () {
  document.querySelectorAll("#overview .mark").forEach((m) => m.remove());
  document.querySelectorAll("#overview .selected").forEach((m) => m.classList.remove("selected"));
};

/** A box over rows y0..y0+h-1, columns x0..x0+w-1 of a map of H x W (clipped to the map). */
CX.box = function (mapEl, H, W, y0, x0, h, w, cls) {
  const y1 = Math.min(H, y0 + h), x1 = Math.min(W, x0 + w);
  y0 = Math.max(0, y0);
  x0 = Math.max(0, x0);
  if (y1 <= y0 || x1 <= x0) return;
  mapEl.append(CX.el("div", { class: "mark " + cls, style: {
    top: `${y0 / H * 100}%`, left: `${x0 / W * 100}%`,
    height: `${(y1 - y0) / H * 100}%`, width: `${(x1 - x0) / W * 100}%` } }));
};

CX.tileMap = (li, c) => document.querySelector(`#layer-${li} figure.tile[data-ch="${c}"] .map`);

/** Mark cell u of a layer drawn as a strip. */
CX.markUnit = function (li, u, cls) {
  const wrap = document.querySelector(`#layer-${li} .strip-wrap`);
  if (!wrap) return;
  const cols = +wrap.dataset.cols, rows = Math.ceil(CX.layer(li).out.n / cols);
  CX.box(wrap, rows, cols, Math.floor(u / cols), u % cols, 1, 1, cls);
};

/** Mark input i of a flat layer: a strip cell, or (through Flatten) the pixel it came from. */
CX.markInput = function (li, i, cls) {
  const L = CX.layer(li);
  if (CX.isImage(L.out)) {  // a global pooling's input: the whole channel
    const m = CX.tileMap(li, i), [, H, W] = L.out.shape;
    if (m) CX.box(m, H, W, 0, 0, H, W, cls);
    return;
  }
  CX.markUnit(li, i, cls);
  if (L.kind === "flatten" && li > 0 && CX.isImage(CX.layer(li - 1).out)) {
    const [, H, W] = CX.layer(li - 1).out.shape, c = Math.floor(i / (H * W));
    const m = CX.tileMap(li - 1, c);
    if (m) CX.box(m, H, W, Math.floor(i / W) % H, i % W, 1, 1, cls);
  }
};

/** The input window (top-left corner and size, in input pixels) of output (y, x). */
CX.window = function (L, y, x) {
  const info = L.conv || L.pool;
  const [kh, kw] = L.conv ? [L.conv.kernel.shape[2], L.conv.kernel.shape[3]] : info.size;
  const [dh, dw] = info.dilation || [1, 1];
  const [top, , left] = info.pad;
  return { y0: y * info.stride[0] - top, x0: x * info.stride[1] - left,
    h: (kh - 1) * dh + 1, w: (kw - 1) * dw + 1 };
};

/** Which input channels feed output channel k (all of them, or its group's). */
CX.inputChannels = function (L, k) {
  if (L.kind !== "conv") return [k];
  const cin = L.conv.kernel.shape[1], per = L.out.shape[0] / L.conv.groups, g = Math.floor(k / per);
  return Array.from({ length: cin }, (_, i) => g * cin + i);
};

CX.highlight = function (sel) {
  CX.clearMarks();
  const L = sel.li < CX.payload.layers.length ? CX.layer(sel.li) : null;
  if (sel.unit !== undefined) {
    const row = document.querySelector(`#layer-${sel.li} .bar-row[data-unit="${sel.unit}"]`);
    if (row) row.classList.add("selected");
    CX.markUnit(sel.li, sel.unit, "neuron");
    if (!L) return;  // the output step
    const P = sel.li > 0 ? CX.layer(sel.li - 1) : null;
    if (L.kind === "dense") {  // the inputs with the largest contributions
      const top = L.dense.top, k = top.shape[1];
      for (let t = 0; t < k; t++) CX.markInput(sel.li - 1, CX.floats[top.o + (sel.unit * k + t) * 4], "patch");
    } else if (P) {
      CX.markInput(sel.li - 1, sel.unit, "patch");
    }
    return;
  }
  const [, H, W] = L.out.shape;
  const here = CX.tileMap(sel.li, sel.ch);
  if (here) {
    here.parentElement.classList.add("selected");
    CX.box(here, H, W, sel.y, sel.x, 1, 1, "neuron");
  }
  const prev = sel.li - 1;
  if (prev < 0 || !CX.isImage(CX.layer(prev).out)) return;
  const [, Hi, Wi] = CX.layer(prev).out.shape;
  if (L.kind === "other") return;  // composite layers: no simple window
  let win = { y0: sel.y, x0: sel.x, h: 1, w: 1 };  // element-wise layers: the same place
  if (L.kind === "conv" || L.kind === "pool") win = CX.window(L, sel.y, sel.x);
  if (L.kind === "pad") {
    const pads = Array.isArray(L.args.padding) ? L.args.padding : [1, 1];  // [[top, bottom], [left, right]] too
    const [ph, pw] = pads.map((p) => (Array.isArray(p) ? p[0] : p));
    win = { y0: sel.y - ph, x0: sel.x - pw, h: 1, w: 1 };
  }
  const channels = L.kind === "conv" ? CX.inputChannels(L, sel.ch) : [sel.ch];
  for (const c of channels) {
    const m = CX.tileMap(prev, c);
    if (m) CX.box(m, Hi, Wi, win.y0, win.x0, win.h, win.w, "patch");
  }
};
