"""placeholder"""
def register(subparsers):
    """Add the serve command (written next)."""
