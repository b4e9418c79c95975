"""Label-noise detection (TCL's GMM over representations)."""
