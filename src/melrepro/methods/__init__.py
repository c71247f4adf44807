"""The methods, one module per idea: superpixels and graphs, classical classifiers, MIL, the CNN
training core (the package ``training``: options, data, models, optim, loop, checkpoint),
transforms, saliency and metrics.

May use: other ``methods`` modules and third-party packages (never ``data``, ``papers`` or
``report``): a method takes arrays and tensors, not archives.
"""
