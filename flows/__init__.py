"""Wiring: one flow per file, parameters composed from stage configs, and the command line."""
