"""`cnnlab export`: a trained model as an ONNX or Keras file, checked against cnnlab's output."""

from cnnlab.cli._common import add_subcommand

EPILOG = """\
examples:
  cnnlab export runs/cats --format onnx                  runs/cats/export/cats.onnx
  cnnlab export runs/cats --format keras --out cats.keras
  cnnlab export runs/cats/weights/last.safetensors --format onnx
  cnnlab predict runs/cats/export/cats.onnx photo.jpg    run the ONNX file with onnxruntime

Both files take raw pixel values 0-255, shape (batch, height, width, channels), channels
last (3 channels, RGB, or 1 for a model trained with --channels 1), any batch size, and give class probabilities (batch, classes): the preprocessing of
training and the final softmax are inside. The ONNX file (opset 18) keeps the class names
(JSON), the input size and the layout in its metadata (metadata_props); the .keras file
loads with keras.saving.load_model and needs no cnnlab.

After writing, the command runs the file on sample images (the run's own, else random
pixels) with onnxruntime or Keras and prints the largest difference from cnnlab's own
probabilities. The Keras check runs when Keras is installed (pip install keras; cnnlab
sets KERAS_BACKEND=torch unless you chose a backend)."""


def register(sub) -> None:
    p = add_subcommand(sub, "export", "write a trained model as ONNX or Keras (.keras), with a parity check",
                       "Export a run's model (or a model file) as ONNX or as a Keras 3 .keras file, "
                       "with its preprocessing inside, and check the file against cnnlab's own output.",
                       EPILOG)
    p.add_argument("run", metavar="RUN", help="a run directory (runs/NAME) or a model file "
                                              "(.safetensors, or Keras .keras/.h5)")
    p.add_argument("--format", required=True, choices=["onnx", "keras"], help="the file format to write")
    p.add_argument("--out", metavar="FILE", help="where to write (default: RUN/export/NAME.onnx or .keras)")
    p.add_argument("--weights", default="best", metavar="best|last|FILE", help="which weights of the run")
    p.set_defaults(func=run)


def run(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.export import export, pixels_layout

    r = export(args.run, args.format, args.out, args.weights)
    size = r.path.stat().st_size / 1e6
    print(f"wrote {r.path} ({size:.2f} MB, {r.format}): input {pixels_layout(r.input)}, "
          "output class probabilities")
    if r.max_difference is None:
        print(f"parity check skipped: {r.checked_with} is not installed (pip install keras)")
    else:
        print(f"parity check on {r.images} images with {r.checked_with}: largest difference from cnnlab's "
              f"probabilities {r.max_difference:.2e}")
    return 0
