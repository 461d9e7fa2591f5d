"""Pure computation: arrays in, dataclasses out. No file I/O, no printing."""
