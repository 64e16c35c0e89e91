"""Train a CNN on a folder of images with cnnlab's pieces and a plain PyTorch loop.

    python examples/train_minimal.py DATA --epochs 5      # DATA/<class>/*.jpg

Read this first: it is what `cnnlab train` does, without the conveniences. cnnlab gives
the data (find the images, decode them once, serve uint8 batches) and the model (a Keras-
style spec -> torch module); the loop is ordinary PyTorch. `cnnlab train` adds, around this
same loop (cnnlab/train/loop.py): normalisation, augmentation, a learning-rate schedule,
early stopping, checkpoints, resume, mixed precision, several GPUs and a report.
"""

import argparse

import torch
from torch import nn

from cnnlab.data.datasets import discover
from cnnlab.data.loader import make_loader
from cnnlab.io.weights import save_weights
from cnnlab.model.build import build_model


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--model", default="tinyvgg", help="a preset (cnnlab models) or a model YAML file")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--size", type=int, default=32, help="images are resized to size x size")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", default="minimal.safetensors")
    args = p.parse_args(argv)
    torch.manual_seed(0)

    # 1. Data: [(path, label)] per split (a val split is held out if there is no val/ folder),
    #    then loaders that yield x uint8 (N, 3, H, W) and y int64 (N,).
    index = discover(args.data, val_split=0.25, seed=0)
    size = (args.size, args.size)
    train = make_loader(index.splits["train"], size=size, batch_size=32, shuffle=True, cache_dir=False)
    val = make_loader(index.splits["val"], size=size, batch_size=64, cache_dir=False)

    # 2. Model: a preset spec with its last Dense layer sized to our classes; it returns logits.
    model = build_model(args.model, input=(*size, 3), classes=len(index.classes), seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()

    # 3. The loop: forward, loss, backward, step; then accuracy on the validation images.
    accuracy = 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        for x, y in train:  # a new shuffle every epoch
            loss = loss_fn(model(x.float() / 255), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val:
                correct += (model(x.float() / 255).argmax(1) == y).sum().item()
        accuracy = correct / val.num_samples
        print(f"epoch {epoch}/{args.epochs}  loss {loss.item():.4f}  val_accuracy {accuracy:.4f}")

    # 4. Save the weights with what is needed to use them: cnnlab predict minimal.safetensors photo.jpg
    save_weights(args.out, model, {"classes": list(index.classes), "input": [*size, 3]})
    return accuracy


if __name__ == "__main__":
    main()
