"""melrepro: methods that regenerate the tables and figures of five melanoma studies."""

__version__ = "0.1.0"
__all__ = ["__version__"]
