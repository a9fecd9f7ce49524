"""Places artkeep pushes works to and audits: one Remote interface (base.py), one module per kind."""
