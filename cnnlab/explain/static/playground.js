/* cnnlab explain: the convolution playground, output size from input, kernel, stride, padding.
 *
 * The arithmetic is Keras' (and PyTorch's, for explicit padding):
 *   valid / explicit p:  out = floor((n + 2p − k_eff) / s) + 1,   k_eff = (k − 1)·d + 1
 *   same:                out = ceil(n / s), padding split before/after (the odd pixel after)
 */
"use strict";

CX.PG = { n: 7, k: 3, s: 1, d: 1, padding: "valid", p: 1, pos: 0, timer: null };

/** Everything the playground shows for one setting, or {error} for an impossible one. */
CX.convArithmetic = function ({ n, k, s, d, padding, p }) {
  const bad = (msg) => ({ error: msg });
  for (const [name, v, lo] of [["input size", n, 1], ["kernel size", k, 1], ["stride", s, 1], ["dilation", d, 1]]) {
    if (!Number.isInteger(v) || v < lo) return bad(`${name} must be a whole number ≥ ${lo}`);
  }
  if (padding === "explicit" && (!Number.isInteger(p) || p < 0)) return bad("padding must be a whole number ≥ 0");
  const kEff = (k - 1) * d + 1;
  let before = 0, after = 0, out;
  if (padding === "same") {
    out = Math.ceil(n / s);
    const total = Math.max((out - 1) * s + kEff - n, 0);
    before = Math.floor(total / 2);
    after = total - before;
  } else {
    if (padding === "explicit") before = after = p;
    const span = n + before + after;
    if (kEff > span) {
      return bad(`the ${d > 1 ? "dilated " : ""}kernel (${kEff} wide) is larger than the ${padding === "valid" ? "" : "padded "}` +
        `input (${span}): no output. Use a smaller kernel, padding "same", or a bigger input.`);
    }
    out = Math.floor((span - kEff) / s) + 1;
  }
  const warnings = [];
  const span = n + before + after, covered = (out - 1) * s + kEff;
  if (covered < span) {
    warnings.push(`the last ${span - covered} row(s)/column(s) of the ${before + after ? "padded " : ""}input are ` +
      "never used: (n + 2p − k) is not a multiple of the stride.");
  }
  if (Math.max(before, after) >= kEff) warnings.push("padding ≥ kernel size: some outputs see nothing but zeros.");
  if (s > kEff) warnings.push("stride > kernel: some input pixels are skipped entirely.");
  return { n, k, s, d, kEff, before, after, out, warnings };
};

CX.pgFormula = function (r, padding) {
  if (padding === "same") return `same: out = ⌈n / s⌉ = ⌈${r.n} / ${r.s}⌉ = ${r.out}; padding ${r.before} before, ${r.after} after`;
  const p = r.before, k = r.d > 1 ? `k_eff` : "k", kv = r.d > 1 ? `${r.kEff}` : `${r.k}`;
  return `out = ⌊(n + 2p − ${k}) / s⌋ + 1 = ⌊(${r.n} + 2·${p} − ${kv}) / ${r.s}⌋ + 1 = ${r.out}`;
};

/** Draw the padded input, the kernel window at output position pos, and the output grid. */
CX.pgDraw = function (r) {
  const canvas = document.getElementById("pg-canvas");
  const span = r.n + r.before + r.after;
  const cell = Math.max(6, Math.min(28, Math.floor(420 / Math.max(span, 1))));
  const gap = 60, outCell = cell;
  canvas.width = span * cell + gap + r.out * outCell + 2;
  canvas.height = Math.max(span * cell, r.out * outCell) + 2;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const oy = Math.floor(CX.PG.pos / r.out), ox = CX.PG.pos % r.out;
  for (let i = 0; i < span; i++) {
    for (let j = 0; j < span; j++) {
      const padCell = i < r.before || j < r.before || i >= r.before + r.n || j >= r.before + r.n;
      ctx.fillStyle = padCell ? "#e6e6e6" : "#cfe0f3";
      ctx.fillRect(j * cell + 1, i * cell + 1, cell - 1, cell - 1);
    }
  }
  ctx.fillStyle = "rgba(178,24,43,0.55)";
  for (let a = 0; a < r.k; a++) {
    for (let b = 0; b < r.k; b++) {
      const i = oy * r.s + a * r.d, j = ox * r.s + b * r.d;
      if (i < span && j < span) ctx.fillRect(j * cell + 1, i * cell + 1, cell - 1, cell - 1);
    }
  }
  ctx.strokeStyle = "#b2182b";
  ctx.lineWidth = 2;
  ctx.strokeRect(ox * r.s * cell + 1, oy * r.s * cell + 1, r.kEff * cell - 1, r.kEff * cell - 1);
  const x0 = span * cell + gap;
  ctx.fillStyle = "#555";
  ctx.font = "20px sans-serif";
  ctx.fillText("→", span * cell + gap / 2 - 10, Math.min(canvas.height / 2, 40));
  for (let i = 0; i < r.out; i++) {
    for (let j = 0; j < r.out; j++) {
      ctx.fillStyle = i === oy && j === ox ? "#b2182b" : "#f4c7a8";
      ctx.fillRect(x0 + j * outCell + 1, i * outCell + 1, outCell - 1, outCell - 1);
    }
  }
};

CX.pgUpdate = function () {
  const get = (id) => document.getElementById(id);
  const st = CX.PG;
  for (const key of ["n", "k", "s", "d", "p"]) st[key] = Number(get(`pg-${key}`).value);
  st.padding = get("pg-padding").value;
  get("pg-p").disabled = st.padding !== "explicit";
  const r = CX.convArithmetic(st);
  const result = get("pg-result"), notes = get("pg-notes");
  notes.replaceChildren();
  if (r.error) {
    result.className = "pg-result invalid";
    result.dataset.valid = "0";
    result.replaceChildren(CX.el("b", {}, "Invalid: "), r.error);
    get("pg-canvas").width = 0;
    return;
  }
  if (st.pos >= r.out * r.out) st.pos = 0;
  result.className = "pg-result";
  result.dataset.valid = "1";
  result.dataset.out = r.out;
  result.replaceChildren(CX.el("div", { class: "pg-out" }, `output: ${r.out} × ${r.out}`),
    CX.el("div", { class: "formula" }, CX.pgFormula(r, st.padding)),
    CX.el("div", { class: "formula" }, (st.padding === "explicit" ? `Keras: ZeroPadding2D(${r.before}), then ` : "Keras: ") +
      `Conv2D(filters, kernel_size=${r.k}, strides=${r.s}` + (r.d > 1 ? `, dilation_rate=${r.d}` : "") +
      `, padding="${st.padding === "same" ? "same" : "valid"}")`),
    CX.el("div", { class: "formula" }, `PyTorch: nn.Conv2d(c_in, c_out, ${r.k}, stride=${r.s}` + (r.d > 1 ? `, dilation=${r.d}` : "") +
      (st.padding === "same" ? (r.before === r.after ? `, padding=${r.before})` : `) after F.pad by (${r.before}, ${r.after}) (TensorFlow's uneven "same")`) :
        `, padding=${r.before})`)));
  for (const w of r.warnings) notes.append(CX.el("li", { class: "warn" }, w));
  CX.pgDraw(r);
};

CX.pgStep = function () {
  const r = CX.convArithmetic(CX.PG);
  if (r.error) return;
  CX.PG.pos = (CX.PG.pos + 1) % (r.out * r.out);
  CX.pgDraw(r);
};

/** Fill the playground with one of the model's conv or pooling layers. */
CX.pgFromLayer = function (li) {
  const L = CX.layer(li), a = L.args || {}, first = (v, dflt) => (Array.isArray(v) ? v[0] : v ?? dflt);
  const set = (id, v) => { document.getElementById(id).value = v; };
  set("pg-n", L.input_shape[0]);
  set("pg-k", first(a.kernel_size ?? a.pool_size, 2));
  set("pg-s", first(a.strides ?? a.pool_size, 1));
  set("pg-d", first(a.dilation_rate, 1));
  set("pg-padding", a.padding || "valid");
  CX.pgUpdate();
};

CX.renderPlayground = function () {
  const root = document.getElementById("playground");
  const field = (id, label, value, min, max) => CX.el("label", { class: "pg-field" }, label,
    CX.el("input", { id, type: "number", value, min, max, step: 1, oninput: CX.pgUpdate }));
  const layers = CX.payload.layers.map((L, li) => [L, li]).filter(([L]) => L.kind === "conv" || L.kind === "pool");
  root.replaceChildren(
    CX.el("h2", {}, "Convolution playground"),
    CX.para("Change the input size, kernel, stride and padding and see the output size. The red square is the " +
      "kernel's window for the highlighted output; press play to slide it."),
    CX.el("div", { class: "pg-controls" },
      field("pg-n", "input size n", CX.PG.n, 1, 512), field("pg-k", "kernel k", CX.PG.k, 1, 15),
      field("pg-s", "stride s", CX.PG.s, 1, 8), field("pg-d", "dilation d", CX.PG.d, 1, 6),
      CX.el("label", { class: "pg-field" }, "padding",
        CX.el("select", { id: "pg-padding", onchange: CX.pgUpdate },
          CX.el("option", { value: "valid" }, "valid (none)"), CX.el("option", { value: "same" }, "same"),
          CX.el("option", { value: "explicit" }, "explicit p"))),
      field("pg-p", "p", CX.PG.p, 0, 10),
      CX.el("button", { id: "pg-play", onclick: (ev) => {
        if (CX.PG.timer) { clearInterval(CX.PG.timer); CX.PG.timer = null; ev.target.textContent = "play"; }
        else { CX.PG.timer = setInterval(CX.pgStep, 450); ev.target.textContent = "pause"; }
      } }, "play"),
      layers.length ? CX.el("label", { class: "pg-field" }, "from the model",
        CX.el("select", { id: "pg-layer", onchange: (ev) => ev.target.value !== "" && CX.pgFromLayer(+ev.target.value) },
          CX.el("option", { value: "" }, "…"),
          layers.map(([L, li]) => CX.el("option", { value: li }, `${L.name} (${L.type})`)))) : null),
    CX.el("div", { id: "pg-result", class: "pg-result" }),
    CX.el("ul", { id: "pg-notes", class: "pg-notes" }),
    CX.el("div", { class: "pg-legend" },
      CX.el("span", { class: "swatch", style: { background: "#cfe0f3" } }), " input ",
      CX.el("span", { class: "swatch", style: { background: "#e6e6e6" } }), " padding (zeros) ",
      CX.el("span", { class: "swatch", style: { background: "rgba(178,24,43,0.55)" } }), " kernel taps ",
      CX.el("span", { class: "swatch", style: { background: "#f4c7a8" } }), " output ",
      CX.el("span", { class: "swatch", style: { background: "#b2182b" } }), " the output being computed"),
    CX.el("canvas", { id: "pg-canvas", width: 10, height: 10 }));
  CX.pgUpdate();
};
