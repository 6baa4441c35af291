"""dsd: design space design (RegNet / NDS methodology) as a library and a CLI."""

__version__ = "0.1.0"
