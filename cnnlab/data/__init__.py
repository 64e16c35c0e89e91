"""Image data: decoding, dataset layouts, augmentation, normalisation, loaders.

The path of an image into the network::

    discover(DATA)            -> DataIndex: classes and (path, label) per split   datasets.py
    make_loader(items, ...)   -> uint8 batches, decoded once into a cache file     loader.py, cache.py, rows.py
    Augmenter(config)(x, g)   -> randomly moved/flipped/brightened float batch     augment.py
    Normalization.apply(x)    -> what the model sees                               normalize.py
"""
