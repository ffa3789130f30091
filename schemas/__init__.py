"""Data contracts of stethoscope: table schemas, the device catalog, typed errors, run layout.

Everything another stage (or another team) may rely on lives here, as code.
"""
