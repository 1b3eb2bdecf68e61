"""The ``keras-vit`` command line: ``keras_vit_cli.main`` and one module per command.

A package of its own, beside ``keras_vit``: importing ``keras_vit`` registers
its layers with Keras and so imports TensorFlow, which ``keras-vit --help``
and argument errors never need.
"""
