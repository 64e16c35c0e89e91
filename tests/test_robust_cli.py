"""Every user mistake ends in one sentence naming the problem, exit code 2, no traceback.

One table of mistakes, one per row, across the commands: bad flags and values, missing,
empty and one-class data folders, an unknown preset, bad config files, resuming what
cannot be resumed, weights of another model, a busy port... Each runs through
``cnnlab.cli.main`` (the function the console script calls); a few run through the real
``cnnlab`` executable too, including argparse's own errors. A failed ``train`` must not
leave a half-made run folder behind.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import cnnlab
from cnnlab.cli import main
from imagegen import make_image_folder


@pytest.fixture(scope="module")
def ws(tmp_path_factory, trained_run):
    """Paths every case may use (read-only)."""
    root = tmp_path_factory.mktemp("mistakes")
    make_image_folder(root / "ok", n=4, size=(16, 16))
    make_image_folder(root / "one", ("square",), n=3, size=(16, 16))
    (root / "empty").mkdir()
    make_image_folder(root / "emptycls", n=4, size=(16, 16))
    (root / "emptycls" / "ship").mkdir()  # a class folder left empty
    make_image_folder(root / "allbad", n=4, size=(16, 16))
    (root / "allbad" / "ship").mkdir()
    for i in range(3):  # a class whose every file is text named .png
        (root / "allbad" / "ship" / f"ship_{i}.png").write_text("not a picture\n")
    (root / "flat").mkdir()  # images straight in the folder: no class sub-folders
    for f in (root / "ok" / "hbar").glob("*.png"):
        (root / "flat" / f"{f.stem[-3:]}.png").write_bytes(f.read_bytes())  # 000.png: no label in the name
    make_image_folder(root / "halfempty", ("square",), n=3, size=(16, 16))
    (root / "halfempty" / "circle").mkdir()  # two class folders, one of them empty
    make_image_folder(root / "csvset" / "imgs", ("square",), n=2, size=(16, 16))  # images + labels.csv beside them
    (root / "csvset" / "labels.csv").write_text("imgs/square/square_000.png,cat\nimgs/square/square_001.png,dog\n")
    (root / "notes.txt").write_text("not an image\n")
    (root / "not_a_run").mkdir()
    (root / "runs").mkdir()
    (root / "runs" / "taken").mkdir()
    (root / "bad_value.yaml").write_text("epochs: ten\n")
    (root / "model.yaml").write_text(yaml.safe_dump({"input": [16, 16, 3], "layers": [
        {"Conv2D": {"filters": 2, "kernel_size": 3}}, {"Dense": {"units": "classes"}}]}))
    other = cnnlab.build_model("tinyvgg", classes=3)
    cnnlab.save_weights(root / "other.safetensors", other, {"classes": ["cat", "dog", "fox"], "input": [64, 64, 3]})
    image = next((trained_run.parent.parent / "data" / "test" / "hbar").glob("*.png"))
    return {"root": root, "run": trained_run, "image": image}


def train(ws, *extra, data="ok"):
    r = ws["root"]
    return ["train", r / data, "--out", r / "runs", "--workers", "0", "--cache-dir", r / "cache", *extra]


# (id, argv from ws, a fragment the message must contain)
CASES = [
    # data
    ("check: missing folder", lambda w: ["data", "check", w["root"] / "missing"], "missing: no such file or folder"),
    ("check: empty folder", lambda w: ["data", "check", w["root"] / "empty"], "empty: no images found"),
    ("check: one class", lambda w: ["data", "check", w["root"] / "one"], "only one class ('square')"),
    ("check: two class folders, one empty", lambda w: ["data", "check", w["root"] / "halfempty"],
     "halfempty/circle is an empty class folder: add images of 'circle' (a classifier needs at least two classes)"),
    ("check: a folder holding labels.csv", lambda w: ["data", "check", w["root"] / "csvset"],
     "only one class ('imgs') found; a classifier needs at least two; to take the labels from"),
    ("check: --label-regex matching nothing", lambda w: ["data", "check", w["root"] / "flat", "--label-regex", "^x(cat)"],
     "--label-regex '^x(cat)' matched none of the 4 image names in"),
    ("check: a text file", lambda w: ["data", "check", w["root"] / "notes.txt"], "expected a folder of images"),
    ("check: --val-split 1.5", lambda w: ["data", "check", w["root"] / "ok", "--val-split", "1.5"],
     "--val-split must be at least 0 and below 1"),
    ("check: bad --label-regex", lambda w: ["data", "check", w["root"] / "ok", "--label-regex", "("],
     "'(' is not a valid regular expression"),
    ("preview: --size 0", lambda w: ["data", "preview", w["root"] / "ok", "--size", "0"], "--size must be"),
    ("preview: --copies -1", lambda w: ["data", "preview", w["root"] / "ok", "--copies", "-1"],
     "--copies at least 0"),
    ("preview: --out x.xyz", lambda w: ["data", "preview", w["root"] / "ok", "--out", w["root"] / "x.xyz"],
     "cannot save a figure as .xyz"),
    ("preview: no test split", lambda w: ["data", "preview", w["root"] / "ok", "--split", "test"],
     "there is no test split"),
    # train
    ("train: no data", lambda w: ["train"], "no data given"),
    ("train: missing folder", lambda w: train(w)[:1] + [w["root"] / "missing"] + train(w)[2:],
     "missing: no such file or folder"),
    ("train: empty folder", lambda w: ["train", w["root"] / "empty", "--out", w["root"] / "runs"], "no images found"),
    ("train: one class", lambda w: ["train", w["root"] / "one", "--out", w["root"] / "runs"], "only one class"),
    ("train: an empty class folder", lambda w: train(w, data="emptycls"),
     "emptycls/ship: a class folder with no images; add images of 'ship' or remove the folder"),
    ("train: a class of unreadable files", lambda w: train(w, data="allbad"),
     "class 'ship' has no readable training image: none of its 2 training files can be decoded"),
    ("train: no class folders", lambda w: train(w, data="flat"),
     "flat: 4 images but no class: they are not in class sub-folders"),
    ("train: --img-size 0", lambda w: train(w, "--img-size", "0"), "img_size"),
    ("train: --img-size abc", lambda w: train(w, "--img-size", "abc"), "must look like 64 or 64x48"),
    ("train: unknown preset", lambda w: train(w, "--model", "resnet9000"),
     "resnet9000: no such model file or preset (presets: airbench, airbench_medium, airbench_small, photonet"),
    ("train: impossible model", lambda w: train(w, "--model", w["root"] / "model.yaml"), "needs a flat input"),
    ("train: --epochs 0", lambda w: train(w, "--epochs", "0"), "epochs: input should be greater than or equal to 1"),
    ("train: --lr -1", lambda w: train(w, "--lr", "-1"), "lr: input should be greater than 0"),
    ("train: --batch-size 0", lambda w: train(w, "--batch-size", "0"), "batch_size"),
    ("train: --val-split 1", lambda w: train(w, "--val-split", "1"), "val_split"),
    ("train: --augment twirl", lambda w: train(w, "--augment", "twirl"), "unknown augmentation option 'twirl'"),
    ("train: --monitor banana", lambda w: train(w, "--monitor", "banana", "--epochs", "1"), "banana"),
    ("train: --device banana", lambda w: train(w, "--device", "banana"), "device"),
    ("train: fp16 on the CPU", lambda w: train(w, "--precision", "fp16", "--device", "cpu"), "fp16 needs a GPU"),
    ("train: --time-limit -1", lambda w: train(w, "--time-limit", "-1"), "time_limit"),
    ("train: missing --config", lambda w: train(w, "--config", w["root"] / "nope.yaml"), "no such config file"),
    ("train: bad config value", lambda w: train(w, "--config", w["root"] / "bad_value.yaml"),
     "bad_value.yaml: epochs: input should be a valid integer"),
    # (an unknown config key: tests/test_train_cli.py::test_bad_config_names_the_field)
    ("train: --name taken", lambda w: train(w, "--name", "taken"), "already exists; continue it with --resume"),
    ("train: --name ../x", lambda w: train(w, "--name", "../escaped"), "name: must be a folder name without '/'"),
    ("train: --name .", lambda w: train(w, "--name", "."), "name: must be a folder name"),
    ("lr-find: --steps 5", lambda w: ["lr-find", w["root"] / "ok", "--steps", "5", "--out", w["root"] / "runs"],
     "--steps must be at least 10, got 5"),
    ("evaluate: fp16 on the CPU", lambda w: ["evaluate", w["run"], "--precision", "fp16", "--device", "cpu",
                                            "--no-report"], "precision fp16 needs a GPU"),
    ("train: --out is a file", lambda w: ["train", w["root"] / "ok", "--out", w["root"] / "notes.txt", "--workers",
                                         "0", "--cache-dir", w["root"] / "cache"], "notes.txt"),
    ("resume: not a run", lambda w: ["train", "--resume", w["root"] / "not_a_run"], "not a cnnlab training run"),
    ("resume: missing run", lambda w: ["train", "--resume", w["root"] / "gone"], "gone: not a cnnlab training run"),
    ("resume: nothing to resume", lambda w: ["train", "--resume", "--out", w["root"] / "empty"],
     "no unfinished run to resume"),
    # evaluate
    ("evaluate: missing run", lambda w: ["evaluate", w["root"] / "gone"], "gone: no such run directory"),
    ("evaluate: not a run", lambda w: ["evaluate", w["root"] / "not_a_run"], "not a cnnlab run"),
    ("evaluate: --batch-size 0", lambda w: ["evaluate", w["run"], "--batch-size", "0"], "--batch-size must be"),
    ("evaluate: empty --data", lambda w: ["evaluate", w["run"], "--data", w["root"] / "empty"], "no images found"),
    ("evaluate: weights of another model", lambda w: ["evaluate", w["run"], "--weights", w["root"] / "other.safetensors"],
     "a model of classes cat, dog, fox, but run"),
    ("evaluate: weights not safetensors", lambda w: ["evaluate", w["run"], "--weights", w["root"] / "notes.txt"],
     "not a valid safetensors file"),
    ("evaluate: missing weights", lambda w: ["evaluate", w["run"], "--weights", w["root"] / "nope.safetensors"],
     "nope.safetensors: no such weights file"),
    ("evaluate: --device cuda:7 on a CPU", lambda w: ["evaluate", w["run"], "--device", "cuda:7"],
     "--device cuda:7: no CUDA GPU is visible to torch"),
    ("evaluate: --device cudax", lambda w: ["evaluate", w["run"], "--device", "cudax"],
     "--device must be one of auto, cpu, cuda, mps (or cuda:N), got 'cudax'"),
    ("evaluate: --device banana", lambda w: ["evaluate", w["run"], "--device", "banana"], "--device must be one of"),
    # predict
    ("predict: missing run", lambda w: ["predict", w["root"] / "gone", w["image"]], "no such run directory"),
    ("predict: --top-k 0", lambda w: ["predict", w["run"], w["image"], "--top-k", "0"], "--top-k must be at least 1"),
    ("predict: --out x.txt", lambda w: ["predict", w["run"], w["image"], "--out", "x.txt"], "must end in .csv or .json"),
    ("predict: no images", lambda w: ["predict", w["run"], w["root"] / "empty"], "no image files found"),
    ("predict: nothing readable", lambda w: ["predict", w["run"], w["root"] / "notes.txt"],
     "notes.txt could not be read: "),
    ("predict: weights of another model", lambda w: ["predict", w["run"], w["image"], "--weights",
                                                     w["root"] / "other.safetensors"], "a model of classes cat"),
    # explain
    ("explain: missing image", lambda w: ["explain", w["run"], "--image", w["root"] / "nope.png"], "no such image file"),
    ("explain: not an image", lambda w: ["explain", w["run"], "--image", w["root"] / "notes.txt", "--out",
                                         w["root"] / "x.html"], "not an image"),
    ("explain: --max-upload-mb 0", lambda w: ["explain", w["run"], "--serve", "--max-upload-mb", "0"],
     "--max-upload-mb must be"),
    ("explain: --port without --serve", lambda w: ["explain", w["run"], "--port", "8080"],
     "--port only applies to the local server: add --serve, or leave it out to write an HTML file"),
    ("explain: --host and --port without --serve", lambda w: ["explain", w["run"], "--host", "0.0.0.0", "--port", "1"],
     "--host and --port only apply to the local server: add --serve, or leave them out"),
    ("explain: --out page.txt", lambda w: ["explain", w["run"], "--out", w["root"] / "page.txt"],
     "the explainer is an HTML page: give a file name ending in .html"),
    ("explain: --serve and --out", lambda w: ["explain", w["run"], "--serve", "--out", "x.html"], "choose one"),
    ("explain: --port 99999", lambda w: ["explain", w["run"], "--serve", "--port", "99999"],
     "--port must be between 0 and 65535"),
    ("explain: unknown host", lambda w: ["explain", w["run"], "--serve", "--host", "no-such-host.invalid"],
     "cannot serve on no-such-host.invalid"),
    # summary, layers (viz mistakes: tests/test_viz_cli.py, which also checks nothing is written)
    ("summary: --classes 0", lambda w: ["summary", "seed", "--classes", "0"], "classes must be a positive integer"),
    ("layers: unknown type", lambda w: ["layers", "Conv3D"], "unknown layer type 'Conv3D' (did you mean 'Conv2D'?); known:"),
    ("summary: a run folder", lambda w: ["summary", w["run"]], "is a folder, not a model YAML file; for a run's model "
                                                                 "give "),
    ("data cache: --older-than alone", lambda w: ["data", "cache", "--older-than", "5", "--dir", w["root"] / "cache"],
     "--older-than only chooses what --clear deletes"),
    # argparse's own mistakes
    ("argparse: unknown command", lambda w: ["trian"], "invalid choice: 'trian'"),
    ("argparse: not a number", lambda w: ["train", w["root"] / "ok", "--epochs", "ten"],
     "argument --epochs: invalid int value: 'ten' (see `cnnlab train --help`)"),
    ("argparse: bad choice", lambda w: ["evaluate", w["run"], "--split", "banana"], "invalid choice: 'banana'"),
    ("argparse: missing argument", lambda w: ["predict", w["run"]], "the following arguments are required: PATH"),
    ("argparse: unknown flag", lambda w: ["data", "check", w["root"] / "ok", "--verbose"],
     "unrecognized arguments: --verbose (see `cnnlab data check --help`)"),  # it said `cnnlab --help`
    ("argparse: a mistyped flag", lambda w: ["train", w["root"] / "ok", "--epochz", "3"],
     "unrecognized arguments: --epochz 3; did you mean --epochs? (see `cnnlab train --help`)"),
]


def call(argv) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse exits itself
        code = e.code
    return code, ""


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_mistake_is_one_sentence_and_exit_2(ws, capsys, argv, fragment):
    runs_before = sorted(p.name for p in (ws["root"] / "runs").iterdir())
    code, _ = call(argv(ws))
    out = capsys.readouterr()
    err = out.err
    assert code == 2, err
    assert err.startswith("cnnlab: error: ") and err.count("\n") == 1, err
    assert fragment in err, err
    assert "Traceback" not in err + out.out
    # A failed run leaves no half-made run folder behind.
    assert sorted(p.name for p in (ws["root"] / "runs").iterdir()) == runs_before


def test_choices_are_not_made_from_files_that_cannot_be_read(ws, capsys):
    """A class of text files named .png: refused before the automatic choices, which counted
    them as images ("balanced True: class 'ship' has 3 images") and printed them first."""
    assert call(train(ws, data="allbad"))[0] == 2
    out = capsys.readouterr()
    assert "class 'ship' has no readable training image" in out.err and "auto" not in out.out, out.out


def test_a_busy_port(ws, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, _ = call(["explain", ws["run"], "--serve", "--port", str(busy.getsockname()[1])])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Address already in use; pick another --port" in err


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--epochs", "ten"], "invalid int value: 'ten'"),
    (["evaluate", "{root}/gone"], "no such run directory"),
])
def test_the_console_command(ws, argv, fragment):
    exe = Path(sys.executable).with_name("cnnlab")
    argv = [a.format(root=ws["root"]) for a in argv]
    r = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and fragment in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and r.stdout == ""


def test_a_closed_output_pipe_stops_with_a_word_and_code_141(ws, tmp_path):
    """`cnnlab train DATA | head -1`: the run stopped early and the command said 0, silently."""
    exe = Path(sys.executable).with_name("cnnlab")
    argv = [str(a) for a in train(ws, "--epochs", "30", "--model", "tinyvgg", "--img-size", "16")]
    argv[argv.index("--out") + 1] = str(tmp_path / "runs")
    p = subprocess.Popen([str(exe), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().startswith("auto")
    p.stdout.close()  # what `head -1` does after its line
    err = p.stderr.read()
    assert p.wait(timeout=300) == 141, err
    assert "cnnlab: stopped: the output pipe was closed" in err and "Traceback" not in err
    # `2>&1 | head -1`: stderr closes with stdout; nothing can be said, the code still says it (it was 1)
    p = subprocess.Popen([str(exe), *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert p.stdout.readline().startswith("auto")
    p.stdout.close()
    assert p.wait(timeout=300) == 141


EXIT_PROBE = """
import atexit, gc, sys
from cnnlab.cli import main
if sys.argv[1] == "program":
    sys.argv = ["cnnlab", "models"]  # as the console script sees it
    code = main()
else:
    code = main(["models"])
atexit._run_exitfuncs()  # what the interpreter runs first at exit
print(code, gc.get_freeze_count())
"""


@pytest.mark.parametrize("how", ["program", "python call"])
def test_the_program_leaves_its_objects_to_the_os_at_exit(how):
    """The `cnnlab` program freezes the garbage collector at exit (Python's last collections
    over torch's objects took a second of every command); main(argv) called from Python code,
    a notebook or a test, leaves the interpreter's exit as it is."""
    r = subprocess.run([sys.executable, "-c", EXIT_PROBE, how], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    code, frozen = r.stdout.split()[-2:]
    assert code == "0"
    assert (int(frozen) > 10_000) if how == "program" else (frozen == "0")
