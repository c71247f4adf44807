"""One package per paper: each turns manifests and cached images into that paper's tables and
figures. Its modules follow the paper's flow (datasets -> train -> evaluate -> tables, figures;
names vary where another cut reads better) and its ``__init__`` docstring maps every artifact id
to the function that writes it. Modules of one package import only those before them in the flow.

May use: ``data``, ``methods`` and ``report``; nothing imports ``papers``.
"""
