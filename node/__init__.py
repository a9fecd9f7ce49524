"""artkeep: a preservation node for AI-generated art, built on IPFS content addressing."""

__version__ = "0.1.0"
