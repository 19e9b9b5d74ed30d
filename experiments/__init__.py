"""Thin entry points: train, analyse, export, import, MTEB scoring; the library is chelation/."""
