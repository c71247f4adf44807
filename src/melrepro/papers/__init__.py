"""One pipeline per paper: each module turns manifests and cached images into that paper's tables
and figures (its docstring maps every artifact id to the function that writes it).

May use: ``data``, ``methods`` and ``report``; nothing imports ``papers``.
"""
