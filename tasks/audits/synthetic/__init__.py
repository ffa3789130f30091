"""Synthetic audit: can the architecture learn each synthetic target?"""
