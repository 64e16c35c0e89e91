/* cnnlab explain: shared helpers (no framework, no network).
 *
 * Everything lives on one global object, CX, filled by the files in this order:
 * util.js (decoding, numbers, colours, DOM), overview.js (the layer list and heat maps),
 * details.js (the arithmetic of one neuron), playground.js (output-size calculator),
 * kernellab.js (a kernel on a photo, also a page of its own), app.js (start-up, uploads, examples).
 */
"use strict";

const CX = {
  payload: null,   // the JSON from Python (see cnnlab/explain/payload.py)
  floats: null,    // Float32Array: every tensor of the payload, back to back
  config: null,    // {mode: "file" | "serve", examples: [...], maxUploadMB}
  sel: null,       // the selected neuron: {li, ch, y, x} or {li, unit}
};

/* ---- data ------------------------------------------------------------------------ */

/** base64 (+ gzip) text -> Float32Array, using the browser's own DecompressionStream. */
CX.decodeBlob = async function (blob) {
  const text = atob(blob.data);
  let bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  if (blob.encoding.startsWith("gzip")) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    bytes = new Uint8Array(await new Response(stream).arrayBuffer());
  }
  if (bytes.length !== blob.bytes) throw new Error(`data is ${bytes.length} bytes, expected ${blob.bytes}`);
  return new Float32Array(bytes.buffer, bytes.byteOffset, blob.floats);
};

/** The floats of one tensor reference {o, n, shape}. */
CX.arr = function (ref) {
  return CX.floats.subarray(ref.o, ref.o + ref.n);
};

/** Value of an image-shaped tensor (C, H, W) at channel c, row y, column x. */
CX.at = function (ref, c, y, x) {
  const [, H, W] = ref.shape;
  return CX.floats[ref.o + (c * H + y) * W + x];
};

CX.layer = (li) => CX.payload.layers[li];
CX.isImage = (ref) => ref.shape.length === 3;

/* ---- numbers --------------------------------------------------------------------- */

/** A number as a learner reads it: fixed decimals, no "-0.0000". */
CX.fmt = function (v, digits = 4) {
  if (!isFinite(v)) return v > 0 ? "∞" : v < 0 ? "−∞" : "NaN";
  if (Math.abs(v) >= 1e5 || (v !== 0 && Math.abs(v) < 0.5 * Math.pow(10, -digits))) {
    const [mant, exp] = v.toExponential(2).split("e");
    return `${mant.replace("-", "−")}e${exp.replace("+", "").replace("-", "−")}`;
  }
  let s = v.toFixed(digits);
  if (/^-0\.0*$/.test(s)) s = s.slice(1);
  return s.replace("-", "−");
};

/** Full float32 precision, for tooltips and data attributes. */
CX.exact = (v) => String(Number(v.toPrecision(9)));

CX.close = function (a, b, tol = 1e-4) {
  return Math.abs(a - b) <= tol * Math.max(1, Math.abs(a), Math.abs(b));
};

/** The error function (Abramowitz & Stegun 7.1.26 is too coarse; this series is exact to ~1e-12). */
CX.erf = function (x) {
  const sign = x < 0 ? -1 : 1;
  x = Math.abs(x);
  if (x > 6) return sign;
  if (x < 2.5) {  // Taylor series: 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
    let term = x, sum = x;
    for (let n = 1; n < 80; n++) {
      term *= -x * x / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17) break;
    }
    return sign * 2 / Math.sqrt(Math.PI) * sum;
  }
  // continued fraction for erfc at larger x
  let f = 0;
  for (let n = 60; n >= 1; n--) f = n / 2 / (x + f);
  return sign * (1 - Math.exp(-x * x) / Math.sqrt(Math.PI) / (x + f));
};

/** The activations of cnnlab.model.layers.ACTIVATIONS, element by element, as torch defines them. */
CX.ACTIVATIONS = {
  relu: (x) => Math.max(0, x),
  relu6: (x) => Math.min(6, Math.max(0, x)),
  leaky_relu: (x) => (x >= 0 ? x : 0.2 * x),
  elu: (x) => (x > 0 ? x : Math.expm1(x)),
  selu: (x) => 1.0507009873554805 * (x > 0 ? x : 1.6732632423543772 * Math.expm1(x)),
  gelu: (x) => 0.5 * x * (1 + CX.erf(x / Math.SQRT2)),
  swish: (x) => x / (1 + Math.exp(-x)),
  silu: (x) => x / (1 + Math.exp(-x)),
  sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  hard_sigmoid: (x) => Math.min(1, Math.max(0, x / 6 + 0.5)),
  tanh: (x) => Math.tanh(x),
  softplus: (x) => (x > 20 ? x : Math.log1p(Math.exp(x))),
};

/** How each activation is written for a learner. */
CX.ACT_FORMULA = {
  relu: "max(0, x)", relu6: "min(6, max(0, x))", leaky_relu: "x if x ≥ 0 else 0.2·x",
  elu: "x if x > 0 else eˣ − 1", selu: "1.0507·(x if x > 0 else 1.6733·(eˣ − 1))",
  gelu: "x·Φ(x)", swish: "x·σ(x)", silu: "x·σ(x)", sigmoid: "1 / (1 + e⁻ˣ)",
  hard_sigmoid: "clip(x/6 + 0.5, 0, 1)", tanh: "tanh(x)", softplus: "ln(1 + eˣ)",
  softmax: "eˣⁱ / Σ eˣʲ (over channels)",
};

/* ---- colours --------------------------------------------------------------------- */

// Diverging blue - white - red (as CNN Explainer): negative blue, zero white, positive red.
const NEG = [33, 102, 172], MID = [247, 247, 247], POS = [178, 24, 43];
CX.LUT = (() => {
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = i / 127.5 - 1;  // -1 .. 1
    const [a, b, u] = t < 0 ? [MID, NEG, -t] : [MID, POS, t];
    for (let k = 0; k < 3; k++) lut[i * 3 + k] = a[k] + (b[k] - a[k]) * Math.pow(u, 0.8);
  }
  return lut;
})();

/** CSS colour of value v on a symmetric scale [-m, m]. */
CX.colour = function (v, m) {
  const i = Math.max(0, Math.min(255, Math.round((m > 0 ? v / m : 0) * 127.5 + 127.5)));
  return `rgb(${CX.LUT[i * 3]},${CX.LUT[i * 3 + 1]},${CX.LUT[i * 3 + 2]})`;
};

/** Text colour that stays readable on CX.colour(v, m). */
CX.ink = (v, m) => (m > 0 && Math.abs(v / m) > 0.6 ? "#fff" : "#222");

const CHANNEL_TINT = { R: [200, 30, 30], G: [20, 140, 40], B: [30, 70, 200], gray: [30, 30, 30] };

/**
 * Paint channel c of an image tensor into a canvas of H x W pixels.
 * scale: the |value| that gets the full colour; tint: for the input's R, G, B channels
 * (white = lowest, full tint = highest), otherwise the diverging scale around zero.
 */
CX.paint = function (canvas, ref, c, scale, tint = null) {
  const [, H, W] = ref.shape;
  canvas.width = W;
  canvas.height = H;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(W, H);
  const src = CX.floats, base = ref.o + c * H * W, px = img.data, lut = CX.LUT;
  if (tint) {
    const [lo, hi] = scale, colour = CHANNEL_TINT[tint] || CHANNEL_TINT.gray, span = hi - lo || 1;
    for (let i = 0; i < H * W; i++) {
      const t = (src[base + i] - lo) / span;
      for (let k = 0; k < 3; k++) px[i * 4 + k] = 255 + (colour[k] - 255) * t;
      px[i * 4 + 3] = 255;
    }
  } else {
    const f = scale > 0 ? 127.5 / scale : 0;
    for (let i = 0; i < H * W; i++) {
      let j = Math.round(src[base + i] * f + 127.5);
      j = j < 0 ? 0 : j > 255 ? 255 : j;
      px[i * 4] = lut[j * 3];
      px[i * 4 + 1] = lut[j * 3 + 1];
      px[i * 4 + 2] = lut[j * 3 + 2];
      px[i * 4 + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
};

/** Largest |value| of a tensor, or of its channel c when c is given. */
CX.absMax = function (ref, c = null) {
  let lo = ref.o, hi = ref.o + ref.n;
  if (c !== null) {
    const size = ref.shape[1] * ref.shape[2];
    lo = ref.o + c * size;
    hi = lo + size;
  }
  let m = 0;
  for (let i = lo; i < hi; i++) {
    const a = Math.abs(CX.floats[i]);
    if (a > m) m = a;
  }
  return m;
};

CX.range = function (ref) {
  let lo = Infinity, hi = -Infinity;
  for (let i = ref.o; i < ref.o + ref.n; i++) {
    const v = CX.floats[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
};

/* ---- DOM --------------------------------------------------------------------------- */

/** el("div", {class: "x", onclick: f}, child, "text", ...) */
CX.el = function (tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style" && typeof v === "object") Object.assign(node.style, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
};

/** A number in a <span> that carries its exact value (tests and tooltips read it). */
CX.num = function (v, role = null, digits = 4) {
  return CX.el("span", { class: "num", title: CX.exact(v), "data-role": role, "data-value": CX.exact(v) },
    CX.fmt(v, digits));
};

CX.plural = (n, word, many = word + "s") => `${n.toLocaleString("en")} ${n === 1 ? word : many}`;

CX.shapeText = (shape) => "(" + shape.join(", ") + ")";
