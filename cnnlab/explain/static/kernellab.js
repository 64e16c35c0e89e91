/* cnnlab kernel lab: one kernel slid over a photo, computed in the page, explained pixel by pixel.
 *
 * The arithmetic is torch.nn.functional.conv2d's (cross-correlation, as PyTorch and Keras
 * compute a Conv2D) on a grey image or on each of R, G, B separately:
 *
 *   out[c, i, j] = Σ_m Σ_n  padded[c, i·s + m, j·s + n] · w[m, n]
 *
 * with zero padding "valid" (none) or Keras' "same" (ceil(n / s) outputs, the odd pixel
 * after). Grey is ITU-R 601 luma in [0, 1] (0.299 R + 0.587 G + 0.114 B) / 255, as
 * cnnlab.viz.kernels.to_gray; per channel, each of R, G, B / 255. The Python side of the
 * same computation is cnnlab/viz/kernellab_math.py (lab_compute); tests check both against torch.
 *
 * Used twice: as the "Kernel lab" tab of the explainer page and as the page that
 * `cnnlab viz kernels --interactive` writes. Needs util.js (CX.el, CX.LUT, CX.fmt).
 */
"use strict";

CX.KL = {
  cfg: null,        // {presets: [{name, size, numbers, scale, about}], sample: {w, h, data}, maxSide}
  photos: {},       // {sample|upload|explainer: {w, h, rgb: Uint8ClampedArray, name}}
  source: "sample",
  size: 3,
  stride: 1,
  padding: "valid",
  mode: "grey",     // grey | rgb (per channel)
  view: "signed",   // signed (blue − / white 0 / red +) | image (clipped to [0, 1])
  input: null,      // {C, H, W, data: Float32Array}
  res: null,        // the last valid result of CX.klConv
  sel: { y: 0, x: 0 },
  pinned: false,
  ready: false,
};

/* ---- the arithmetic (no DOM) ------------------------------------------------------ */

/** A kernel cell as a person types it: "2", "-0.5", "1e-2", "1/16"; null when it is not a number. */
CX.klParse = function (text) {
  const s = String(text ?? "").trim().replace(/\u2212/g, "-");
  if (!s) return null;
  const num = "[-+]?(?:\\d+\\.?\\d*|\\.\\d+)(?:e[-+]?\\d+)?";
  const frac = new RegExp(`^(${num})\\s*/\\s*(${num})$`, "i").exec(s);
  if (frac) {
    const d = Number(frac[2]);
    return d === 0 ? null : Number(frac[1]) / d;
  }
  if (!new RegExp(`^${num}$`, "i").test(s)) return null;
  const v = Number(s);
  return Number.isFinite(v) ? v : null;
};

/** The network's input for a photo: {C, H, W, data} float32, grey (C = 1) or R, G, B (C = 3). */
CX.klInput = function (photo, mode) {
  const { w: W, h: H, rgb } = photo, n = W * H;
  if (mode === "grey") {
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = (0.299 * rgb[i * 3] + 0.587 * rgb[i * 3 + 1] + 0.114 * rgb[i * 3 + 2]) / 255;
    return { C: 1, H, W, data };
  }
  const data = new Float32Array(3 * n);
  for (let c = 0; c < 3; c++) for (let i = 0; i < n; i++) data[c * n + i] = rgb[i * 3 + c] / 255;
  return { C: 3, H, W, data };
};

/** [before, after, out] along one axis of n pixels (TensorFlow's "same": the odd pixel after). */
CX.klPads = function (n, k, s, padding) {
  if (padding === "same") {
    const out = Math.ceil(n / s), total = Math.max((out - 1) * s + k - n, 0);
    return [Math.floor(total / 2), total - Math.floor(total / 2), out];
  }
  return [0, 0, n >= k ? Math.floor((n - k) / s) + 1 : 0];
};

/** The feature map(s): {C, H, W, data: Float64Array, top, left, k, s, w} or {error}. */
CX.klConv = function (input, w, k, s, padding) {
  const [top, , H] = CX.klPads(input.H, k, s, padding), [left, , W] = CX.klPads(input.W, k, s, padding);
  if (H < 1 || W < 1) {
    return { error: `the ${k}×${k} kernel does not fit in the ${input.H}×${input.W} image without padding; choose padding "same"` };
  }
  const data = new Float64Array(input.C * H * W), src = input.data, IH = input.H, IW = input.W;
  for (let c = 0; c < input.C; c++) {
    const base = c * IH * IW, obase = c * H * W;
    for (let i = 0; i < H; i++) {
      for (let j = 0; j < W; j++) {
        let sum = 0;
        for (let m = 0; m < k; m++) {
          const y = i * s + m - top;
          if (y < 0 || y >= IH) continue;
          for (let n = 0; n < k; n++) {
            const x = j * s + n - left;
            if (x >= 0 && x < IW) sum += src[base + y * IW + x] * w[m * k + n];
          }
        }
        data[obase + i * W + j] = sum;
      }
    }
  }
  return { C: input.C, H, W, data, top, left, k, s, w };
};

/** The k×k patch under output (c, y, x): its values (0 in the padding), products and sum. */
CX.klPatch = function (input, res, c, y, x) {
  const { k, s, w, top, left } = res, cells = [];
  let sum = 0;
  for (let m = 0; m < k; m++) {
    for (let n = 0; n < k; n++) {
      const iy = y * s + m - top, ix = x * s + n - left;
      const inside = iy >= 0 && iy < input.H && ix >= 0 && ix < input.W;
      const v = inside ? input.data[c * input.H * input.W + iy * input.W + ix] : 0;
      cells.push({ m, n, iy, ix, pad: !inside, v, w: w[m * k + n], p: v * w[m * k + n] });
      sum += v * w[m * k + n];
    }
  }
  return { cells, sum, value: res.data[(c * res.H + y) * res.W + x] };
};

/* ---- photos ---------------------------------------------------------------------- */

/** base64 of gzip'd RGB bytes -> Uint8ClampedArray (the page's own sample photo). */
CX.klDecode = async function (b64) {
  const text = atob(b64), bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8ClampedArray(await new Response(stream).arrayBuffer());
};

/** An <img> source (a data: URL) -> {w, h, rgb}, its longest side at most maxSide pixels. */
CX.klFromURL = function (url, name) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const f = Math.min(1, CX.KL.cfg.maxSide / Math.max(img.naturalWidth, img.naturalHeight));
      const w = Math.max(1, Math.round(img.naturalWidth * f)), h = Math.max(1, Math.round(img.naturalHeight * f));
      const canvas = document.createElement("canvas");
      canvas.width = w;
      canvas.height = h;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(img, 0, 0, w, h);
      const rgba = ctx.getImageData(0, 0, w, h).data, rgb = new Uint8ClampedArray(w * h * 3);
      for (let i = 0; i < w * h; i++) for (let c = 0; c < 3; c++) rgb[i * 3 + c] = rgba[i * 4 + c];
      resolve({ w, h, rgb, name });
    };
    img.onerror = () => reject(new Error(`${name} is not an image the browser can read`));
    img.src = url;
  });
};

CX.klUpload = function (file) {
  if (!file) return;
  const reader = new FileReader();
  reader.onload = async () => {
    try {
      CX.KL.photos.upload = await CX.klFromURL(reader.result, file.name);
      CX.klSetSource("upload");
    } catch (err) {
      CX.klStatus(err.message, "error");
    }
  };
  reader.readAsDataURL(file);
};

/** The explainer's current image became `url` (the explain page calls this after each load). */
CX.klExplainerImage = async function (url, name) {
  if (!CX.KL.ready) return;
  CX.KL.photos.explainer = await CX.klFromURL(url, name);
  const opt = document.querySelector("#kl-source option[value='explainer']");
  if (opt) opt.disabled = false;
  if (CX.KL.source === "explainer") CX.klSetSource("explainer");
};

CX.klSetSource = function (source) {
  if (!CX.KL.photos[source]) return;
  CX.KL.source = source;
  const sel = document.getElementById("kl-source");
  if (sel.value !== source) sel.value = source;
  CX.klCompute();
};

/* ---- the kernel grid ------------------------------------------------------------- */

CX.klCells = () => [...document.querySelectorAll("#kl-grid input.kl-cell")];

/** Read the grid: {w: Float64Array} or {bad: [{r, c, text}]}; flags each invalid cell. */
CX.klReadKernel = function () {
  const k = CX.KL.size, w = new Float64Array(k * k), bad = [];
  const scaleBox = document.getElementById("kl-scale"), scale = CX.klParse(scaleBox.value);
  scaleBox.classList.toggle("invalid", scale === null);
  scaleBox.setAttribute("aria-invalid", scale === null ? "true" : "false");
  if (scale === null) bad.push({ what: "the scale", text: scaleBox.value });
  for (const cell of CX.klCells()) {
    const v = CX.klParse(cell.value), r = +cell.dataset.r, c = +cell.dataset.c;
    cell.classList.toggle("invalid", v === null);
    cell.setAttribute("aria-invalid", v === null ? "true" : "false");
    if (v === null) bad.push({ what: `row ${r + 1}, column ${c + 1}`, text: cell.value });
    else w[r * k + c] = v * (scale ?? 1);
  }
  return bad.length ? { bad } : { w };
};

CX.klRenderGrid = function (numbers) {
  const k = CX.KL.size, rows = [];
  for (let r = 0; r < k; r++) {
    const tds = [];
    for (let c = 0; c < k; c++) {
      const v = numbers ? numbers[r][c] : (r === (k >> 1) && c === (k >> 1) ? 1 : 0);
      tds.push(CX.el("td", {}, CX.el("input", {
        class: "kl-cell", type: "text", inputmode: "decimal", value: String(v), size: 4,
        "aria-label": `kernel row ${r + 1}, column ${c + 1}`, dataset: { r, c },
        oninput: CX.klCompute, onkeydown: CX.klGridKey,
      })));
    }
    rows.push(CX.el("tr", {}, tds));
  }
  document.getElementById("kl-grid").replaceChildren(CX.el("tbody", {}, rows));
};

/** Arrow keys move between cells (Tab works too); Enter recomputes. */
CX.klGridKey = function (ev) {
  const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0] };
  const cell = ev.target, k = CX.KL.size;
  let [dr, dc] = moves[ev.key] || [0, 0];
  if (ev.key === "ArrowLeft" && cell.selectionStart === 0 && cell.selectionEnd === 0) dc = -1;
  if (ev.key === "ArrowRight" && cell.selectionStart === cell.value.length) dc = 1;
  if (!dr && !dc) return;
  const r = Math.min(k - 1, Math.max(0, +cell.dataset.r + dr)), c = Math.min(k - 1, Math.max(0, +cell.dataset.c + dc));
  const next = document.querySelector(`#kl-grid input[data-r='${r}'][data-c='${c}']`);
  if (next && next !== cell) {
    ev.preventDefault();
    next.focus();
    next.select();
  }
};

/** A preset at the current size: its own k×k numbers, or its 3×3 ones in the middle of 5×5 zeros. */
CX.klPresetNumbers = function (name, k) {
  const ps = CX.KL.cfg.presets.filter((p) => p.name === name);
  const exact = ps.find((p) => p.size === k);
  if (exact) return [exact.numbers, exact.scale];
  const p = ps[0], off = (k - p.size) >> 1;
  if (off < 0) return null;
  const numbers = Array.from({ length: k }, () => Array(k).fill(0));
  for (let r = 0; r < p.size; r++) for (let c = 0; c < p.size; c++) numbers[r + off][c + off] = p.numbers[r][c];
  return [numbers, p.scale];
};

CX.klPreset = function (name) {
  const got = CX.klPresetNumbers(name, CX.KL.size);
  if (!got) return;
  CX.klRenderGrid(got[0]);
  document.getElementById("kl-scale").value = got[1];
  document.querySelectorAll(".kl-preset").forEach((b) => b.setAttribute("aria-pressed", b.dataset.name === name ? "true" : "false"));
  const p = CX.KL.cfg.presets.find((q) => q.name === name);
  document.getElementById("kl-about").textContent = p ? `${p.name}: ${p.about}` : "";
  CX.klCompute();
};

CX.klSetSize = function (k) {
  const old = CX.klCells().map((c) => c.value), oldK = CX.KL.size;
  CX.KL.size = k;
  const pressed = document.querySelector(".kl-preset[aria-pressed='true']");
  if (pressed) return CX.klPreset(pressed.dataset.name);
  // Keep the typed numbers: the middle of a 5×5, or a 3×3 put in the middle of zeros.
  const numbers = Array.from({ length: k }, () => Array(k).fill("0"));
  const off = (k - oldK) >> 1;
  for (let r = 0; r < oldK; r++) {
    for (let c = 0; c < oldK; c++) {
      const R = r + off, C = c + off;
      if (R >= 0 && R < k && C >= 0 && C < k) numbers[R][C] = old[r * oldK + c];
    }
  }
  CX.klRenderGrid(numbers);
  CX.klCompute();
};

/* ---- drawing --------------------------------------------------------------------- */

CX.klStatus = function (text, kind = "info") {
  const box = document.getElementById("kl-status");
  box.textContent = text;
  box.className = `kl-status ${kind}`;
  box.dataset.kind = kind;
};

CX.klDrawPhoto = function () {
  const p = CX.KL.photos[CX.KL.source], canvas = document.getElementById("kl-photo");
  canvas.width = p.w;
  canvas.height = p.h;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(p.w, p.h);
  for (let i = 0; i < p.w * p.h; i++) {
    if (CX.KL.mode === "grey") {
      const g = CX.KL.input.data[i] * 255;
      img.data[i * 4] = img.data[i * 4 + 1] = img.data[i * 4 + 2] = g;
    } else {
      for (let c = 0; c < 3; c++) img.data[i * 4 + c] = p.rgb[i * 3 + c];
    }
    img.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  document.getElementById("kl-photo-caption").textContent =
    `${p.name}: ${p.w}×${p.h}, ${CX.KL.mode === "grey" ? "grey (luma) in [0, 1]" : "R, G, B in [0, 1]"}`;
};

/** Paint the maps: one diverging map per channel, or the clipped image (RGB when per channel). */
CX.klDrawMaps = function () {
  const r = CX.KL.res, box = document.getElementById("kl-maps"), n = r.H * r.W;
  let lo = Infinity, hi = -Infinity;  // (no Math.min(...data): too many arguments for a big map)
  for (const v of r.data) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const m = Math.max(Math.abs(lo), Math.abs(hi));
  const paint = (canvas, fill) => {
    canvas.width = r.W;
    canvas.height = r.H;
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(r.W, r.H);
    for (let i = 0; i < n; i++) { fill(img.data, i); img.data[i * 4 + 3] = 255; }
    ctx.putImageData(img, 0, 0);
  };
  const canvases = [];
  const names = r.C === 1 ? ["grey"] : ["R", "G", "B"];
  if (CX.KL.view === "image") {
    const canvas = CX.el("canvas", { class: "kl-map", "data-ch": "all" });
    paint(canvas, (px, i) => {
      for (let c = 0; c < 3; c++) px[i * 4 + c] = 255 * Math.min(1, Math.max(0, r.data[(r.C === 1 ? 0 : c) * n + i]));
    });
    canvases.push(CX.el("figure", { class: "kl-fig" }, canvas, CX.el("figcaption", {}, "clipped to [0, 1]")));
  } else {
    const f = m > 0 ? 127.5 / m : 0, lut = CX.LUT;
    for (let c = 0; c < r.C; c++) {
      const canvas = CX.el("canvas", { class: "kl-map", "data-ch": c });
      paint(canvas, (px, i) => {
        const j = Math.max(0, Math.min(255, Math.round(r.data[c * n + i] * f + 127.5)));
        px[i * 4] = lut[j * 3]; px[i * 4 + 1] = lut[j * 3 + 1]; px[i * 4 + 2] = lut[j * 3 + 2];
      });
      canvases.push(CX.el("figure", { class: "kl-fig" }, canvas, CX.el("figcaption", {}, names[c])));
    }
  }
  for (const fig of canvases) {
    const canvas = fig.querySelector("canvas");
    canvas.tabIndex = 0;
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", "feature map: hover or use the arrow keys to see how a pixel is computed");
    canvas.addEventListener("mousemove", (ev) => !CX.KL.pinned && CX.klHover(ev, canvas));
    canvas.addEventListener("click", (ev) => { CX.KL.pinned = false; CX.klHover(ev, canvas); CX.KL.pinned = true; });
    canvas.addEventListener("keydown", CX.klMapKey);
  }
  box.replaceChildren(...canvases);
  document.getElementById("kl-range").replaceChildren(
    `feature map ${r.W}×${r.H}${r.C > 1 ? " ×3" : ""} · min `, CX.num(lo, "kl-min"), " · max ", CX.num(hi, "kl-max"),
    CX.KL.view === "signed" ? ` · colours: blue −${CX.fmt(m, 3)} … white 0 … red +${CX.fmt(m, 3)}` : "");
};

CX.klHover = function (ev, canvas) {
  const r = CX.KL.res, rect = canvas.getBoundingClientRect();
  const x = Math.floor((ev.clientX - rect.left) / rect.width * r.W), y = Math.floor((ev.clientY - rect.top) / rect.height * r.H);
  const ch = canvas.dataset.ch === "all" ? CX.KL.sel.c ?? 0 : +canvas.dataset.ch;
  CX.klSelect({ c: ch, y: Math.min(r.H - 1, Math.max(0, y)), x: Math.min(r.W - 1, Math.max(0, x)) });
};

CX.klMapKey = function (ev) {
  const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
  if (!(ev.key in moves)) return;
  ev.preventDefault();
  const r = CX.KL.res, s = CX.KL.sel, [dy, dx] = moves[ev.key];
  const ch = ev.target.dataset.ch === "all" ? s.c ?? 0 : +ev.target.dataset.ch;
  CX.KL.pinned = true;
  CX.klSelect({ c: ch, y: Math.min(r.H - 1, Math.max(0, s.y + dy)), x: Math.min(r.W - 1, Math.max(0, s.x + dx)) });
};

/** Show how output (c, y, x) is computed: the patch, the kernel, the products, the sum. */
CX.klSelect = function (sel) {
  const r = CX.KL.res;
  if (!r) return;
  sel = { c: Math.min(sel.c ?? 0, r.C - 1), y: Math.min(sel.y, r.H - 1), x: Math.min(sel.x, r.W - 1) };
  CX.KL.sel = sel;
  const P = CX.klPatch(CX.KL.input, r, sel.c, sel.y, sel.x), k = r.k;
  const grid = (cls, f) => CX.el("table", { class: `grid kl-${cls}` }, CX.el("tbody", {},
    Array.from({ length: k }, (_, m) => CX.el("tr", {}, Array.from({ length: k }, (_, n) => f(P.cells[m * k + n]))))));
  const mx = Math.max(1e-12, ...P.cells.map((q) => Math.abs(q.p)));
  const chName = r.C === 1 ? "" : `, channel ${"RGB"[sel.c]}`;
  const box = document.getElementById("kl-readout");
  box.dataset.c = sel.c;
  box.dataset.y = sel.y;
  box.dataset.x = sel.x;
  box.replaceChildren(
    CX.el("h3", {}, `output row ${sel.y}, column ${sel.x}${chName} = `, CX.num(P.value, "kl-value", 5)),
    CX.el("div", { class: "kl-arith" },
      CX.el("div", { class: "op-block" }, grid("patch", (q) => CX.el("td", { class: q.pad ? "pad" : null, title: q.pad ? "padding (zero)" : `input row ${q.iy}, column ${q.ix}` }, CX.num(q.v, "kl-patch", 3))),
        CX.el("div", { class: "caption" }, `input patch at row ${sel.y * r.s - r.top}, column ${sel.x * r.s - r.left}`)),
      CX.el("span", { class: "op" }, "×"),
      CX.el("div", { class: "op-block" }, grid("kernel", (q) => CX.el("td", {}, CX.num(q.w, "kl-weight", 3))), CX.el("div", { class: "caption" }, "kernel")),
      CX.el("span", { class: "op" }, "→"),
      CX.el("div", { class: "op-block" }, grid("products", (q) => CX.el("td", { style: { background: CX.colour(q.p, mx), color: CX.ink(q.p, mx) } }, CX.num(q.p, "kl-product", 3))),
        CX.el("div", { class: "caption" }, "products"))),
    CX.el("div", { class: "equation" }, P.cells.filter((q) => q.w !== 0).map((q) => `${CX.fmt(q.v, 3)}·${q.w < 0 ? `(${CX.fmt(q.w, 3)})` : CX.fmt(q.w, 3)}`).join(" + ") || "0",
      " = ", CX.el("b", {}, CX.num(P.sum, "kl-sum", 5))),
    CX.el("p", { class: "hint" }, `Stride ${r.s}: output row ${sel.y} starts at input row ${sel.y}·${r.s}` +
      (r.top ? ` − ${r.top} (padding)` : "") + ` = ${sel.y * r.s - r.top}, column ${sel.x} at input column ${sel.x}·${r.s}` +
      (r.left ? ` − ${r.left}` : "") + ` = ${sel.x * r.s - r.left}; padding cells (grey) are zeros. ` +
      (CX.KL.pinned ? "Pinned: arrow keys move, hover after a click to follow the mouse again." : "Click to pin; arrow keys move.")));
  CX.klMark();
};

/** The kernel's window on the photo, for the selected output pixel. */
CX.klMark = function () {
  const r = CX.KL.res, s = CX.KL.sel, mark = document.getElementById("kl-window"), canvas = document.getElementById("kl-photo");
  const fx = canvas.clientWidth / canvas.width, fy = canvas.clientHeight / canvas.height;
  Object.assign(mark.style, {
    left: `${canvas.offsetLeft + (s.x * r.s - r.left) * fx}px`, top: `${canvas.offsetTop + (s.y * r.s - r.top) * fy}px`,
    width: `${r.k * fx}px`, height: `${r.k * fy}px`,
  });
  mark.hidden = false;
};

/** Read every control, recompute and redraw; an invalid entry is flagged and the last map stays. */
CX.klCompute = function () {
  const st = CX.KL, get = (id) => document.getElementById(id);
  const strideBox = get("kl-stride"), stride = Number(strideBox.value);
  const strideOk = Number.isInteger(stride) && stride >= 1 && stride <= 16;
  strideBox.classList.toggle("invalid", !strideOk);
  strideBox.setAttribute("aria-invalid", strideOk ? "false" : "true");
  st.padding = get("kl-padding").value;
  st.mode = get("kl-mode").value;
  st.view = get("kl-view").value;
  const kernel = CX.klReadKernel();
  st.input = CX.klInput(st.photos[st.source], st.mode);
  CX.klDrawPhoto();
  const problems = [];
  if (!strideOk) problems.push(`stride must be a whole number from 1 to 16 (got "${strideBox.value}")`);
  if (kernel.bad) problems.push(...kernel.bad.map((b) => `${b.what}: "${b.text}" is not a number`));
  if (problems.length) {
    CX.klStatus(`Fix the flagged ${problems.length === 1 ? "entry" : "entries"} (${problems.join("; ")}). ` +
      "The map shows the last valid kernel.", "error");
    document.body.dataset.klValid = "0";
    return;
  }
  st.stride = stride;
  const res = CX.klConv(st.input, kernel.w, st.size, stride, st.padding);
  if (res.error) {
    CX.klStatus(res.error, "error");
    document.body.dataset.klValid = "0";
    return;
  }
  st.res = res;
  const [top, bottom] = CX.klPads(st.input.H, st.size, stride, st.padding), [left, right] = CX.klPads(st.input.W, st.size, stride, st.padding);
  CX.klStatus(`out = ${st.padding === "same" ? `⌈n / s⌉` : "⌊(n − k) / s⌋ + 1"}: ${st.input.W}×${st.input.H} → ${res.W}×${res.H} (width × height)` +
    (st.padding === "same" ? ` (zeros: ${top} top, ${bottom} bottom, ${left} left, ${right} right)` : "") +
    `. PyTorch: F.conv2d(x, w, stride=${stride})` + (st.padding === "same" ? ` after F.pad(x, (${left}, ${right}, ${top}, ${bottom}))` : "") +
    `; Keras: Conv2D(1, ${st.size}, strides=${stride}, padding="${st.padding}")` +
    (st.mode === "rgb" ? ", applied to each channel alone (a depthwise convolution)" : "") + ".", "info");
  CX.klDrawMaps();
  CX.klSelect(st.sel);
  document.body.dataset.klValid = "1";
  document.body.dataset.klRuns = String(Number(document.body.dataset.klRuns || 0) + 1);
};

/* ---- the page ----------------------------------------------------------------------- */

/** Build the lab inside `root`. cfg: {presets, sample, maxSide}; explainer: offer its image. */
CX.renderKernelLab = async function (root, cfg, explainer = false) {
  CX.KL.cfg = cfg;
  CX.KL.photos.sample = { w: cfg.sample.w, h: cfg.sample.h, rgb: await CX.klDecode(cfg.sample.data), name: cfg.sample.name };
  const names = [...new Set(cfg.presets.map((p) => p.name))];
  const select = (id, label, options, onchange) => CX.el("label", { class: "pg-field" }, label,
    CX.el("select", { id, onchange }, options.map(([v, t, disabled]) => CX.el("option", { value: v, disabled }, t))));
  root.replaceChildren(
    CX.el("h2", {}, "Kernel lab"),
    CX.el("p", { class: "explain" }, "Type numbers into the kernel (or pick a preset) and watch the feature map change. Hover a pixel of the " +
      "map, or focus it and use the arrow keys, to see its arithmetic: the patch of the photo under the kernel, times the " +
      "kernel, summed. The numbers are those of PyTorch's conv2d (a Conv2D layer with one filter, no bias)."),
    CX.el("div", { class: "pg-controls kl-controls" },
      select("kl-source", "photo", [["sample", "sample photo"], ["upload", "uploaded photo", true],
        ...(explainer ? [["explainer", "the explainer's image", true]] : [])], (ev) => CX.klSetSource(ev.target.value)),
      CX.el("label", { class: "button kl-upload" }, "Upload a photo",
        CX.el("input", { type: "file", id: "kl-file", accept: "image/*", onchange: (ev) => {
          document.querySelector("#kl-source option[value='upload']").disabled = false;
          CX.klUpload(ev.target.files[0]);
        } })),
      select("kl-size", "kernel size", [["3", "3 × 3"], ["5", "5 × 5"]], (ev) => CX.klSetSize(Number(ev.target.value))),
      CX.el("label", { class: "pg-field" }, "stride", CX.el("input", { id: "kl-stride", type: "number", min: 1, max: 16, value: 1, oninput: CX.klCompute })),
      select("kl-padding", "padding", [["valid", "valid (none)"], ["same", "same (zeros)"]], CX.klCompute),
      select("kl-mode", "channels", [["grey", "grey"], ["rgb", "per channel (R, G, B)"]], CX.klCompute),
      select("kl-view", "show", [["signed", "signed (− blue, + red)"], ["image", "as an image (clip 0…1)"]], CX.klCompute)),
    CX.el("div", { class: "kl-presets", role: "group", "aria-label": "preset kernels" },
      CX.el("span", { class: "hint" }, "presets:"),
      names.map((n) => CX.el("button", { class: "kl-preset", dataset: { name: n }, "aria-pressed": "false", onclick: () => CX.klPreset(n) }, n))),
    CX.el("div", { class: "kl-body" },
      CX.el("div", { class: "kl-kernel" },
        CX.el("table", { id: "kl-grid", class: "kl-grid", "aria-label": "the kernel: editable numbers" }),
        CX.el("label", { class: "pg-field kl-scale-field" }, "× scale",
          CX.el("input", { id: "kl-scale", type: "text", inputmode: "decimal", value: "1", size: 6, oninput: CX.klCompute,
            "aria-label": "scale: every kernel number is multiplied by it (e.g. 1/16)" })),
        CX.el("p", { id: "kl-about", class: "hint" })),
      CX.el("figure", { class: "kl-fig kl-photo-fig" },
        CX.el("div", { class: "kl-photo-wrap" }, CX.el("canvas", { id: "kl-photo" }), CX.el("div", { id: "kl-window", class: "kl-window", hidden: true })),
        CX.el("figcaption", { id: "kl-photo-caption" })),
      CX.el("span", { class: "op kl-arrow" }, "→"),
      CX.el("div", { class: "kl-out" }, CX.el("div", { id: "kl-maps", class: "kl-maps" }), CX.el("div", { id: "kl-range", class: "hint" }))),
    CX.el("div", { id: "kl-status", class: "kl-status", role: "status", "aria-live": "polite" }),
    CX.el("section", { id: "kl-readout", class: "kl-readout", "aria-live": "polite" }));
  CX.KL.ready = true;
  CX.klPreset("edge");
  const r = CX.KL.res;
  CX.klSelect({ c: 0, y: r.H >> 1, x: r.W >> 1 });
  document.body.dataset.klReady = "1";
};

/** The standalone page of `cnnlab viz kernels --interactive`. */
CX.startKernelLab = async function () {
  const cfg = JSON.parse(document.getElementById("cnnlab-kernel-lab").textContent);
  const root = document.getElementById("kernel-lab");
  try {
    await CX.renderKernelLab(root, cfg);
  } catch (err) {
    root.replaceChildren(CX.el("p", { class: "message error" }, `The kernel lab could not start (${err.message}). ` +
      "It needs a recent browser (Chrome/Edge 80+, Firefox 113+, Safari 16.4+)."));
    throw err;
  }
  document.addEventListener("dragover", (ev) => ev.preventDefault());
  document.addEventListener("drop", (ev) => {
    ev.preventDefault();
    document.querySelector("#kl-source option[value='upload']").disabled = false;
    CX.klUpload(ev.dataTransfer.files[0]);
  });
};
