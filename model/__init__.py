"""Keras networks and callbacks; every layer an audit inspects is named."""
