"""mcustt: a self-hostable, multi-tenant live captioning server."""

__version__ = "0.1.0"
