"""Outputs shared by every paper: tables, figures, the scorecard, run info, rule graphs, the data
report and per-job logs.

May use: ``data`` (error locations of the archive readers) and third-party packages (never
``methods`` or ``papers``).
"""
