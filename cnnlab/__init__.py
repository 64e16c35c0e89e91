"""cnnlab: from a folder of labelled images to a trained, evaluated and understood CNN.

The Python API mirrors the command line::

    import cnnlab
    model = cnnlab.create_model("tinyvgg", classes=3)      # a preset, a YAML, a model file, a run
    print(cnnlab.summary("seed"))
"""

__version__ = "0.1.0"

import importlib  # noqa: E402

from cnnlab.errors import CnnlabError, DataError, SpecError, WeightsError  # noqa: E402


def __getattr__(name: str):
    # Lazy imports keep `cnnlab --help` fast (torch takes a second to import).
    lazy = {
        "create_model": ("cnnlab.run", "create_model"),
        "open_any": ("cnnlab.run", "open_any"),
        "build_model": ("cnnlab.formats.open", "build_model"),
        "CNN": ("cnnlab.model.build", "CNN"),
        "load_spec": ("cnnlab.formats.open", "open_spec"),
        "ModelSpec": ("cnnlab.model.spec", "ModelSpec"),
        "summary": ("cnnlab.formats.open", "summary"),
        "layers": ("cnnlab.model.layers", None),
        "save_weights": ("cnnlab.io.weights", "save_weights"),
        "load_weights": ("cnnlab.formats.weights", "load_weights"),
        "pick_device": ("cnnlab.device", "pick_device"),
        "doctor": ("cnnlab.diagnostics", "doctor"),
        "train": ("cnnlab.train", None),  # callable: cnnlab.train("DATA", epochs=20)
        "Trainer": ("cnnlab.train.loop", "Trainer"),
        "viz": ("cnnlab.viz", None),
        "evaluate": ("cnnlab.eval.evaluate", "evaluate_run"),
        "predict": ("cnnlab.eval.predict", "predict"),
        "write_report": ("cnnlab.eval.report", "write_report"),
    }
    if name in lazy:
        module, attr = lazy[name]
        mod = importlib.import_module(module)
        return mod if attr is None else getattr(mod, attr)
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")


__all__ = ["__version__", "CnnlabError", "DataError", "SpecError", "WeightsError", "create_model", "open_any",
           "build_model",
           "CNN", "load_spec", "ModelSpec", "summary", "layers", "save_weights", "load_weights",
           "pick_device", "doctor", "evaluate", "predict", "write_report", "viz", "train", "Trainer"]
