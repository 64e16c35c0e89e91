"""Image data: decoding, dataset layouts, augmentation, normalisation, loaders."""
