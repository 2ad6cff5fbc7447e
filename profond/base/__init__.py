"""The bottom layer: pieces every other layer may import, importing nothing of profond
but :mod:`profond.errors`.

* :mod:`.io` -- atomic file writes (nothing profond writes is ever left half-written);
* :mod:`.device` -- device resolution and the data-parallel position from the environment;
* :mod:`.checkpoint` -- the checkpoint format (safetensors + JSON, never pickle);
* :mod:`.coerce` -- checking a value against a type hint, and the "one of ..." choice check.
"""
